"""Sample text from a character-level language model, token by token through a stream.

`seqmem compare --task text --save-weights` saves each trained network as `<id>.safetensors` plus
`<id>.json`; the JSON's metadata is the run record, with the task and its config (the corpus, its
SHA-256, the held-out fraction), which rebuild the vocabulary exactly. `load_char_lm` reads both;
`generate` feeds a prompt through `SequenceNetwork.stream` and then samples one character at a time,
each fed back as the next input: O(1) work per token for the recurrences and the SSMs (the
transformer's KV cache grows by one position per token).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from .io import load, network_files
from .network import SequenceNetwork
from .tasks.text import DEFAULT_CORPUS, CharText

__all__ = ["Generation", "generate", "load_char_lm", "sample_token"]


def load_char_lm(path: str | os.PathLike[str], *, fused: bool = True) -> tuple[SequenceNetwork, CharText]:
    """Load a character-level language model saved by `seqmem compare --task text --save-weights`.

    Args:
        path: either file of the saved pair (`<id>.safetensors` or `<id>.json`), or their stem.
        fused: move the layers that have a `"numba"` backend to it, so that the stream runs one
            compiled call per token (the weights are the same; the transformer stays on torch).

    Returns:
        `(network, task)`: the network in eval mode and the `CharText` task whose vocabulary it
        was trained on (`task.encode`, `task.decode`).

    Raises:
        FileNotFoundError: if a file of the pair, or the corpus the vocabulary came from, is missing.
        ValueError: if the file is not a text model saved by `compare` (no run record, another task,
            a corpus whose SHA-256 differs from the recorded one, or a vocabulary of another size).
    """
    net = load(path)
    _, json_path = network_files(path)
    metadata = json.loads(json_path.read_text(encoding="utf-8")).get("metadata") or {}
    if metadata.get("task") != "text" or not isinstance(metadata.get("task_config"), dict):
        raise ValueError(
            f"seqmem generate: {json_path} is not a character-level language model saved by "
            f"`seqmem compare --task text --save-weights` (its run record names task "
            f"{metadata.get('task')!r}); there is no vocabulary to decode its outputs with"
        )
    config = metadata["task_config"]
    corpus = config.get("corpus")
    task = CharText(
        seq_len=1,
        corpus=None if corpus in (None, DEFAULT_CORPUS) else corpus,
        valid_fraction=config.get("valid_fraction", 0.1),
    )
    want = config.get("corpus_sha256")
    if want is not None and task.config()["corpus_sha256"] != want:
        raise ValueError(
            f"seqmem generate: the corpus {corpus!r} has changed since {json_path.name} was trained "
            f"(SHA-256 {task.config()['corpus_sha256'][:12]}..., recorded {str(want)[:12]}...): its "
            "vocabulary may differ, so the model's outputs cannot be decoded"
        )
    if net.vocab_size != task.vocab_size or net.output_size != task.vocab_size:
        raise ValueError(
            f"seqmem generate: the network reads {net.vocab_size} tokens and predicts {net.output_size}, "
            f"but the corpus has a vocabulary of {task.vocab_size}"
        )
    if fused:
        for module in net.modules():
            if "numba" in getattr(module, "backends", ()):
                module.backend = "numba"
    return net, task


def sample_token(
    logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> int:
    """Draw one token id from next-token logits.

    Args:
        logits: `(vocab_size,)` unnormalised log-probabilities.
        temperature: divides the logits; `0` takes the most likely token (greedy).
        top_k: sample among the `top_k` most likely tokens only (`None`: all).
        generator: the source of randomness.

    Returns:
        The token id.

    Raises:
        ValueError: for a negative or non-finite temperature, or `top_k < 1`.
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    logits = logits.detach().to(torch.float64)
    if temperature == 0:
        return int(logits.argmax())
    if top_k is not None and top_k < logits.shape[0]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits / temperature, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class Generation(NamedTuple):
    """What `generate` produced.

    Attributes:
        text: the generated characters (without the prompt).
        tokens: how many were generated.
        seconds: wall time of the generation (the prompt excluded).
        fused: whether the stream ran one compiled call per token.
    """

    text: str
    tokens: int
    seconds: float
    fused: bool

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of wall time."""
        return self.tokens / self.seconds if self.seconds > 0 else math.inf


def generate(
    net: SequenceNetwork,
    task: CharText,
    prompt: str,
    tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    on_text: Callable[[str], None] | None = None,
) -> Generation:
    """Continue `prompt` by `tokens` characters sampled from the network, one token per stream push.

    Args:
        net: a token-input `SequenceNetwork` whose outputs are next-character logits.
        task: the `CharText` task of its vocabulary.
        prompt: the text to continue, at least one character (characters outside the vocabulary
            read as the unknown token).
        tokens: characters to generate, `>= 0`.
        temperature: sampling temperature; `0` is greedy.
        top_k: sample among the `top_k` most likely characters only.
        seed: seed of the sampling.
        on_text: called with each generated character as soon as it is drawn.

    Returns:
        The `Generation`.

    Raises:
        ValueError: for an empty prompt, a negative `tokens`, or bad sampling arguments.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("seqmem generate: the prompt must hold at least one character")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"seqmem generate: tokens must be an int >= 0, got {tokens!r}")
    sample_token(torch.zeros(2), temperature=temperature, top_k=top_k)  # checks the arguments first
    generator = torch.Generator().manual_seed(seed)
    stream = net.stream(1)
    with torch.no_grad():
        logits = stream.push_many(task.encode(prompt)[None])[0, -1]  # (vocab,)
        out = []
        start = time.perf_counter()
        for _ in range(tokens):
            token = sample_token(logits, temperature=temperature, top_k=top_k, generator=generator)
            char = task.decode([token])
            out.append(char)
            if on_text is not None:
                on_text(char)
            logits = stream.push(torch.tensor([token]))[0]
        seconds = time.perf_counter() - start
    return Generation("".join(out), tokens, seconds, stream.fused)
