"""Save and load trained networks as safetensors weights plus a JSON config: no pickle, ever.

A saved `SequenceNetwork` is two files with the same stem:

- `<stem>.safetensors`: every tensor of its `state_dict`, in the safetensors format (a JSON
  header and raw little-endian buffers; reading it executes nothing);
- `<stem>.json`: what rebuilds the architecture (`SequenceNetwork.config()`), the names, shapes
  and dtype of the tensors, the SHA-256 of the `.safetensors` file, the versions that wrote it,
  and free-form `metadata` (e.g. the run record of a comparison).

Both are written atomically (a temporary file in the same folder, flushed, fsynced, then
`os.replace`), weights first, so a reader never sees half a file, and a config always describes
weights that were completely written; the recorded SHA-256 catches a pair that does not belong
together. `load` checks every part and names the file and what was expected when one is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import __version__
from ._files import atomic_write_bytes
from .network import SequenceNetwork

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "network_files", "save", "weights_bytes", "write_network"]

FORMAT = "seqmem.SequenceNetwork"
"""The `format` field of the JSON config."""

FORMAT_VERSION = 1
"""The version of the two-file format; `load` refuses a newer one."""

def network_files(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The two files of a saved network: `(<stem>.safetensors, <stem>.json)`.

    Args:
        path: either file of the pair, or their common stem (without suffix).

    Returns:
        The weights path and the config path.
    """
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


_atomic_write = atomic_write_bytes  # the name callers used before `seqmem._files`


def weights_bytes(network: SequenceNetwork) -> tuple[bytes, dict[str, Any]]:
    """Serialise a network in memory: its safetensors bytes and its JSON config (without metadata).

    What `save` writes, split so that a worker process can send it to the process that writes
    files (`seqmem.compare` does so: only the parent process writes).

    Args:
        network: the network.

    Returns:
        `(weights, config)`: the `.safetensors` file's bytes and the `.json` file's dict.

    Raises:
        TypeError: if `network` is not a `SequenceNetwork`.
    """
    from safetensors.torch import save as st_save

    if not isinstance(network, SequenceNetwork):
        raise TypeError(f"seqmem.save: expects a seqmem.SequenceNetwork, got {type(network).__name__}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in network.state_dict().items()}
    data = st_save(tensors, metadata={"format": "pt", "seqmem_format": FORMAT})
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in tensors.values()})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": network.config(),
        "dtype": dtypes[0] if len(dtypes) == 1 else dtypes,
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "safetensors_sha256": hashlib.sha256(data).hexdigest(),
        "seqmem": __version__,
        "torch": torch.__version__,
    }
    return data, config


def write_network(
    path: str | os.PathLike[str],
    weights: bytes,
    config: dict[str, Any],
    metadata: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write the two files of a network serialised by `weights_bytes`, atomically, weights first.

    Args:
        path: either file of the pair, or their stem.
        weights: the safetensors bytes.
        config: the config dict from `weights_bytes`.
        metadata: JSON-serialisable extra information, stored under `"metadata"`.

    Returns:
        The paths written: `(<stem>.safetensors, <stem>.json)`.
    """
    st_path, json_path = network_files(path)
    doc = dict(config)
    if metadata is not None:
        doc["metadata"] = metadata
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    _atomic_write(st_path, weights)
    _atomic_write(json_path, text.encode("utf-8"))
    return st_path, json_path


def save(
    network: SequenceNetwork, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """Save a network as `<stem>.safetensors` (weights) and `<stem>.json` (config), atomically.

    Args:
        network: the `SequenceNetwork` to save.
        path: either file of the pair, or their stem; folders are created.
        metadata: JSON-serialisable extra information kept in the config (e.g. the training run).

    Returns:
        The paths written: `(<stem>.safetensors, <stem>.json)`.

    Raises:
        TypeError: if `network` is not a `SequenceNetwork`, or `metadata` is not JSON-serialisable.

    Example:
        >>> import tempfile, torch, seqmem
        >>> net = seqmem.SequenceNetwork("gru", 8, vocab_size=4, output_size=2)
        >>> folder = tempfile.mkdtemp()
        >>> _ = seqmem.save(net, f"{folder}/gru")
        >>> again = seqmem.load(f"{folder}/gru.safetensors")
        >>> x = torch.randint(0, 4, (2, 5))
        >>> torch.equal(net(x)[0], again(x)[0])
        True
    """
    weights, config = weights_bytes(network)
    return write_network(path, weights, config, metadata)


def _bad(path: Path, expected: str, got: str) -> ValueError:
    return ValueError(f"seqmem.load: {path} is not a valid seqmem network file: expected {expected}; {got}")


def _read_config(json_path: Path) -> dict[str, Any]:
    raw = json_path.read_bytes()
    what = f"a JSON object with \"format\": \"{FORMAT}\" (written by seqmem.save)"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(json_path, what, f"it is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _bad(json_path, what, f"got a JSON {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise _bad(json_path, what, f"got format {doc.get('format')!r}")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _bad(
            json_path, f"format_version <= {FORMAT_VERSION} (this is seqmem {__version__})",
            f"got {version!r}; a newer seqmem wrote it?",
        )
    for key, kind in (("config", dict), ("tensors", dict)):
        if not isinstance(doc.get(key), kind):
            raise _bad(json_path, f"a {kind.__name__} under {key!r}", f"got {type(doc.get(key)).__name__}")
    return doc


def load(
    path: str | os.PathLike[str], *, backend: str | None = None, device: str | torch.device = "cpu"
) -> SequenceNetwork:
    """Rebuild a network saved by `save` (or by `seqmem compare --save-weights`).

    Reads the JSON config, rebuilds the architecture, checks the weights file against the SHA-256
    and tensor shapes the config records, and loads the tensors. Only JSON and safetensors are
    parsed: nothing is unpickled, so a file from an untrusted source cannot run code.

    Args:
        path: either file of the pair (`<stem>.safetensors` or `<stem>.json`), or their stem.
        backend: run the model on this backend instead of the saved one (e.g. `"numba"`).
        device: where to put the parameters.

    Returns:
        The `SequenceNetwork`, in eval mode, with the saved dtype.

    Raises:
        FileNotFoundError: if either file of the pair is missing.
        ValueError: for a file that is not what it should be (not JSON, another format, a newer
            format version, a corrupt safetensors file, a weights file that does not match the
            config's SHA-256, missing, unexpected or misshapen tensors); the message names the file
            and what was expected.
    """
    from safetensors.torch import load as st_load

    st_path, json_path = network_files(path)
    for p in (json_path, st_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"seqmem.load: {p} does not exist; a saved network is a pair "
                f"{st_path.name} + {json_path.name}"
            )
    doc = _read_config(json_path)
    config = dict(doc["config"])
    if backend is not None:
        config["backend"] = backend
    try:
        network = SequenceNetwork(**config)
    except (TypeError, ValueError) as e:
        raise _bad(json_path, "a \"config\" that SequenceNetwork accepts", str(e)) from None
    data = st_path.read_bytes()
    want = doc.get("safetensors_sha256")
    if want is not None and hashlib.sha256(data).hexdigest() != want:
        raise _bad(
            st_path, f"the SHA-256 recorded in {json_path.name} ({str(want)[:12]}...)",
            "the file differs (corrupt, or not the weights this config was written with)",
        )
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for a bad header or buffer
        expected_format = "a safetensors file (8-byte header length, JSON header, tensor data)"
        raise _bad(st_path, expected_format, str(e)) from None
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise _bad(
            st_path, f"the tensors of a {config.get('model')} SequenceNetwork",
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
        )
    wrong = [f"{k}: {tuple(v.shape)} instead of {expected[k]}" for k, v in tensors.items()
             if tuple(v.shape) != expected[k]]
    if wrong:
        raise _bad(st_path, "tensors shaped as the config says", "; ".join(wrong[:5]))
    dtypes = {v.dtype for v in tensors.values()}
    if len(dtypes) == 1:
        network = network.to(dtypes.pop())
    network.load_state_dict(tensors, strict=True)
    return network.to(device).eval()
