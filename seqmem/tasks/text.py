"""Character-level language modelling on real English text that ships with Python (or your own file)."""

from __future__ import annotations

import functools
import hashlib
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .base import Batch, Task

__all__ = ["CharText", "default_corpus"]

DEFAULT_CORPUS = "pydoc_data.topics"
UNK = "\ufffd"  # how the unknown-character id decodes


def default_corpus() -> str:
    """The built-in corpus: Python's own help texts, `pydoc_data.topics.topics`, joined.

    About 465,000 characters of technical English (the language reference topics that `help()`
    shows), in every CPython installation, so nothing is downloaded. The topics are joined in
    sorted key order, separated by a blank line, so the text is the same on every run of a given
    Python version.

    Returns:
        The corpus as one string.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k].strip("\n") for k in sorted(topics))


class _Corpus(NamedTuple):
    sha256: str
    n_chars: int
    chars: str  # the training vocabulary, sorted; id len(chars) is UNK
    train: Tensor  # (n_train,) int64
    valid: Tensor  # (n_valid,) int64


def _read_corpus(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"text: corpus file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"text: corpus {str(p)!r} is not a regular file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"text: corpus {str(p)!r} is not valid UTF-8 (byte {e.start}: {data[e.start:e.start + 1]!r}); "
            "convert it, e.g. with `iconv -t UTF-8`"
        ) from None
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is not text
        text = text[1:]
    if not text:
        raise ValueError(f"text: corpus {str(p)!r} is empty")
    return text


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@functools.lru_cache(maxsize=4)
def _load(key: tuple[Any, ...], valid_fraction: float) -> _Corpus:
    path = key[0]
    text = default_corpus() if path is None else _read_corpus(path)
    n_train = math.floor(len(text) * (1.0 - valid_fraction))
    train_text, valid_text = text[:n_train], text[n_train:]
    vocab = np.unique(_codepoints(train_text))  # sorted code points of the training text
    chars = "".join(map(chr, vocab.tolist()))

    def encode(s: str) -> Tensor:
        cp = _codepoints(s)
        pos = np.searchsorted(vocab, cp).clip(max=max(len(vocab) - 1, 0))
        known = vocab[pos] == cp if len(vocab) else np.zeros(len(cp), dtype=bool)
        return torch.from_numpy(np.where(known, pos, len(vocab)).astype(np.int64))

    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return _Corpus(sha, len(text), chars, encode(train_text), encode(valid_text))


class CharText(Task):
    r"""Character-level language modelling: predict the next character at every position.

    The corpus is Python's own help text (`pydoc_data.topics`, about 465k characters of English,
    shipped with every CPython, see `default_corpus`) or any UTF-8 file you pass as `corpus`.
    It is split deterministically: the first `1 - valid_fraction` of the characters train, the
    last `valid_fraction` are held out for evaluation. The vocabulary is the set of characters of
    the training part, sorted by code point; one extra id, `unk_id = vocab_size - 1`, stands for
    any character seen only in the held-out part.

    A batch holds windows of `seq_len + 1` consecutive characters at uniformly random offsets:
    `x` is the first `seq_len`, `y` the same window shifted by one, and every position is scored.
    Position `t` sees `t + 1` characters of context, so the metric averages over contexts of
    1 to `seq_len` characters: a longer `seq_len` helps a model that can use the longer contexts.

    Shapes: `x` is `(batch, seq_len)` int64 in `[0, vocab_size)`; `y` is `(batch, seq_len)` int64;
    `mask` is `(batch, seq_len)` all true. Metric: bits per character on held-out windows,
    cross-entropy in nats divided by $\ln 2$ (lower is better; a uniform guess scores
    $\log_2(\text{vocab\_size})$).

    Args:
        seq_len: characters per window (the context the model sees).
        corpus: path to a UTF-8 text file, or `None` for the built-in corpus.
        valid_fraction: share of the text held out at its end, in `(0, 1)`.

    Raises:
        FileNotFoundError: if `corpus` does not exist.
        ValueError: if `corpus` is not a regular file, is not UTF-8, is empty, or is too short for
            windows of `seq_len + 1` characters in both splits; or `valid_fraction` is not in `(0, 1)`.

    References:
        Shannon, C. E. (1951). Prediction and entropy of printed English. Bell System Technical
        Journal 30(1): bits per character as the measure.
        Graves, A. (2013). Generating sequences with recurrent neural networks. arXiv:1308.0850,
        section 3 (character-level language modelling, bits per character).

    Example:
        >>> import torch
        >>> from seqmem.tasks import CharText
        >>> task = CharText(seq_len=32)
        >>> batch = task.sample(2, torch.Generator().manual_seed(0))
        >>> batch.x.shape, bool((batch.x[:, 1:] == batch.y[:, :-1]).all())
        (torch.Size([2, 32]), True)
    """

    name = "text"
    description = "next-character prediction on English text (Python's help, or --corpus FILE; bits/char)"
    input_kind = "tokens"
    target = "all"
    loss_kind = "cross_entropy"
    metric_name = "bits_per_char"

    def __init__(
        self, seq_len: int, corpus: str | os.PathLike[str] | None = None, valid_fraction: float = 0.1
    ) -> None:
        super().__init__(seq_len)
        if not isinstance(valid_fraction, (int, float)) or not 0.0 < float(valid_fraction) < 1.0:
            raise ValueError(f"text: valid_fraction must be in (0, 1), got {valid_fraction!r}")
        self.valid_fraction = float(valid_fraction)
        if corpus is None:
            self.corpus: str | None = None
            key: tuple[Any, ...] = (None,)
        else:
            if not isinstance(corpus, (str, os.PathLike)):
                raise TypeError(f"text: corpus must be a path (str or PathLike), got {type(corpus).__name__}")
            path = os.path.abspath(os.fspath(corpus))
            self.corpus = path
            try:
                st = os.stat(path)
                key = (path, st.st_mtime_ns, st.st_size)
            except OSError:
                key = (path,)  # _read_corpus raises the readable error
        data = _load(key, self.valid_fraction)
        self._data = data
        need = seq_len + 1
        if len(data.train) < need or len(data.valid) < need:
            least = math.ceil(need / self.valid_fraction) + need
            raise ValueError(
                f"text: corpus too short for seq_len={seq_len}: {data.n_chars} characters give "
                f"{len(data.train)} for training and {len(data.valid)} held out (the last "
                f"{self.valid_fraction:.0%}), and each split needs windows of seq_len + 1 = {need}; "
                f"use a shorter seq_len or a corpus of at least about {least} characters"
            )
        self.chars = data.chars
        self.unk_id = len(data.chars)
        self.vocab_size = len(data.chars) + 1
        self.output_size = self.vocab_size

    @property
    def chance(self) -> float:
        """`log2(vocab_size)`: the bits per character of a uniform guess."""
        return math.log2(self.vocab_size)

    @property
    def n_train(self) -> int:
        """Number of characters in the training split."""
        return len(self._data.train)

    @property
    def n_valid(self) -> int:
        """Number of characters in the held-out split."""
        return len(self._data.valid)

    def config(self) -> dict[str, Any]:
        """The corpus (path, or `"pydoc_data.topics"`), its SHA-256 and `valid_fraction`."""
        return {
            "corpus": self.corpus or DEFAULT_CORPUS,
            "corpus_sha256": self._data.sha256,
            "valid_fraction": self.valid_fraction,
        }

    def encode(self, text: str) -> Tensor:
        """Map characters to ids; characters outside the training vocabulary map to `unk_id`.

        Args:
            text: any string.

        Returns:
            `(len(text),)` int64 ids.
        """
        vocab = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        cp = _codepoints(text)
        pos = np.searchsorted(vocab, cp).clip(max=len(vocab) - 1)
        return torch.from_numpy(np.where(vocab[pos] == cp, pos, self.unk_id).astype(np.int64))

    def decode(self, ids: Tensor | list[int]) -> str:
        """Map ids back to characters (`unk_id` becomes U+FFFD).

        Args:
            ids: a 1-d tensor or list of ids in `[0, vocab_size)`.

        Returns:
            The string.
        """
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.chars[i] if i < self.unk_id else UNK for i in values)

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` windows at uniformly random offsets of the chosen split.

        Args:
            batch_size: number of windows.
            generator: source of randomness.
            split: `"train"` (the first part of the text) or `"eval"` (the held-out end).

        Returns:
            `Batch(x, y, mask)`: `x`, `y` `(batch_size, seq_len)` int64, `y[:, t] = x[:, t + 1]`
            inside the window; `mask` all true.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        data = self._data.train if split == "train" else self._data.valid
        T = self.seq_len
        starts = torch.randint(0, len(data) - T, (batch_size,), generator=generator)  # (B,)
        idx = starts[:, None] + torch.arange(T)  # (B, T)
        x, y = data[idx], data[idx + 1]
        return Batch(x, y, torch.ones(batch_size, T, dtype=torch.bool))
