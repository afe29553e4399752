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
together, or a weights file changed after it was written. `load` checks every part and names the
file and what was expected when one is wrong: the config's values, then the weights file's header
(tensor names, dtypes and shapes, read without the data) against the config, before it builds the
network or reads the weights; then the SHA-256; it warns about NaN or infinite weights.

Two helpers serve a sweep that saves weights: `check_writable_folder` (before the first run trains)
and `remove_temp_files` (the temporary files of writes killed half-way, on resume).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from . import __version__
from ._files import atomic_write_bytes
from .network import SequenceNetwork

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "check_writable_folder",
    "load",
    "network_files",
    "remove_temp_files",
    "save",
    "weights_bytes",
    "write_network",
]

FORMAT = "seqmem.SequenceNetwork"
"""The `format` field of the JSON config."""

FORMAT_VERSION = 1
"""The version of the two-file format; `load` refuses a newer one."""

_TEMP_NAME = re.compile(r"\..+\.(safetensors|json)\.[a-z0-9_]+\.tmp")
"""The name of `seqmem._files.atomic_open`'s temporary file: `.<name>.<suffix>.<random>.tmp`."""


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


def _architecture_sha256(config: dict[str, Any]) -> str:
    """SHA-256 of a network's config without its backend (a run-time choice, which `load` may change)."""
    architecture = {k: v for k, v in config.items() if k != "backend"}
    return hashlib.sha256(json.dumps(architecture, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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

    Raises:
        ValueError: if `config` records a SHA-256 that is not that of `weights` (the SHA-256 is
            always written: computed here when `config` has none).

    The JSON also records `config_sha256`, the SHA-256 of the architecture (the `"config"` without
    its `backend`), so that `load` refuses a config edited after saving in a way the tensor shapes
    do not show (the number of heads, a nonlinearity).
    """
    st_path, json_path = network_files(path)
    doc = dict(config)
    sha = hashlib.sha256(weights).hexdigest()
    if doc.setdefault("safetensors_sha256", sha) != sha:
        raise ValueError(
            f"seqmem.write_network: the config records SHA-256 {str(doc['safetensors_sha256'])[:12]}... but the "
            f"weights given hash to {sha[:12]}...: they do not belong together"
        )
    doc["config_sha256"] = _architecture_sha256(doc["config"])
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


def _read_header(st_path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The name, dtype and shape of every tensor in a safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(st_path), framework="pt") as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (sl.get_dtype(), tuple(sl.get_shape())) for name, sl in slices.items()}
    except Exception as e:  # safetensors raises its own error type for a bad header or a short file
        raise _bad(st_path, _SAFETENSORS, str(e)) from None


_SAFETENSORS = "a safetensors file (8-byte header length, JSON header, tensor data)"
_FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}  # safetensors dtype -> bytes per element
_SIZES = ("width", "output_size", "n_layers", "n_heads", "vocab_size", "input_size")


def _check_config_values(config: dict[str, Any], json_path: Path) -> None:
    """The config's model name and sizes (types and ranges), before anything else is read."""
    from .registry import model_names

    accepts = 'a "config" that SequenceNetwork accepts'
    model = config.get("model")
    if model not in model_names():
        raise _bad(json_path, accepts, f"unknown model {model!r}; expected one of {model_names()}")
    for key in _SIZES:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise _bad(json_path, accepts, f"{key} must be a positive int, got {value!r}")


def _check_config_sizes(config: dict[str, Any], header: dict[str, Any], st_path: Path, json_path: Path) -> None:
    """Check the config's sizes against the embedding and head shapes of the weights file's header.

    Every `SequenceNetwork` has `embed.weight` (`(vocab_size, width)` or `(width, input_size)`) and
    `head.weight` (`(output_size, width)`), so these sizes are checked before anything is built.
    """
    width, vocab = config.get("width"), config.get("vocab_size")
    expected = {
        "embed.weight": (vocab, width) if vocab is not None else (width, config.get("input_size")),
        "head.weight": (config.get("output_size"), width),
    }
    for name, want in expected.items():
        if width is not None and name in header and header[name][1] != want:
            shown = ", ".join(f"{k}={config.get(k)}" for k in ("width", "vocab_size", "input_size", "output_size"))
            raise _bad(
                st_path, "tensors shaped as the config says",
                f"{name} is {header[name][1]} instead of {want} (config in {json_path.name}: {shown})",
            )
    n_layers = config.get("n_layers")
    if n_layers is not None and n_layers > len(header):
        raise _bad(st_path, f"at least one tensor per layer ({json_path.name} says n_layers={n_layers})",
                   f"it holds {len(header)} tensors")


class _AllocationLimit(TorchFunctionMode):
    """Refuse, before they are allocated, new tensors beyond a budget of bytes (`_TooLarge`).

    Counts the tensors made by the factories that build parameters (`torch.empty`, `zeros`, `ones`,
    `full`, `rand`, `randn`), so that a config asking for a network far larger than its weights file
    is refused before its parameters take the memory.
    """

    _FACTORIES = (torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn)

    def __init__(self, budget: int) -> None:
        super().__init__()
        self.left = budget

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self._FACTORIES:
            size = kwargs.get("size")
            if size is None:
                one = func is torch.full or (len(args) == 1 and not isinstance(args[0], int))
                size = args[0] if one else args
            with contextlib.suppress(TypeError, ValueError):  # an unusual call: let torch judge it
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                self.left -= math.prod(int(n) for n in size) * dtype.itemsize
            if self.left < 0:
                raise _TooLarge
        return func(*args, **kwargs)


class _TooLarge(Exception):
    pass


def _build(config: dict[str, Any], header: dict[str, Any], st_path: Path, json_path: Path) -> SequenceNetwork:
    """Build the network the config describes, refusing one much larger than the weights file."""
    stored = sum(math.prod(shape) * _FLOAT_DTYPES.get(dtype, 8) for dtype, shape in header.values())
    budget = 4 * stored + 64 * 2**20  # initialisation makes temporaries (float64 in places)
    try:
        with _AllocationLimit(budget):
            network = SequenceNetwork(**config)
    except _TooLarge:
        raise _bad(
            json_path, f"a config whose network fits the {stored:,} bytes of tensors in {st_path.name}",
            f"building it asks for more than {budget:,} bytes",
        ) from None
    except (TypeError, ValueError) as e:
        raise _bad(json_path, 'a "config" that SequenceNetwork accepts', str(e)) from None
    expected = {k: tuple(v.shape) for k, v in network.state_dict().items()}
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        raise _bad(
            st_path, f"the tensors of a {config.get('model')} SequenceNetwork",
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}",
        )
    wrong = [f"{k}: {shape} instead of {expected[k]}" for k, (_, shape) in header.items() if shape != expected[k]]
    if wrong:
        raise _bad(st_path, "tensors shaped as the config says", "; ".join(wrong[:5]))
    return network


def _check_sha256(data: bytes, doc: dict[str, Any], st_path: Path, json_path: Path) -> None:
    want = doc.get("safetensors_sha256")
    if want is None:
        warnings.warn(
            f"seqmem.load: {json_path} records no SHA-256 of {st_path.name} (an older seqmem wrote it?), so a "
            f"damaged or replaced weights file cannot be detected; save the network again to add one",
            UserWarning, stacklevel=3,
        )
        return
    if not (isinstance(want, str) and re.fullmatch(r"[0-9a-f]{64}", want)):
        raise _bad(json_path, "a SHA-256 of 64 hex digits under \"safetensors_sha256\"", f"got {want!r}")
    if hashlib.sha256(data).hexdigest() != want:
        raise _bad(
            st_path, f"the SHA-256 recorded in {json_path.name} ({want[:12]}...)",
            "the file differs (corrupt, or not the weights this config was written with)",
        )


def _warn_nonfinite(tensors: dict[str, torch.Tensor], st_path: Path) -> None:
    bad = []
    for name, t in sorted(tensors.items()):
        n = int(t.numel() - torch.isfinite(t).sum()) if t.is_floating_point() else 0
        if n:
            bad.append(f"{name} ({n} of {t.numel()})")
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(
            f"seqmem.load: {st_path} holds NaN or infinite weights: {', '.join(bad[:5])}{more}; "
            f"the network's outputs will not be finite",
            RuntimeWarning, stacklevel=3,
        )


def load(
    path: str | os.PathLike[str], *, backend: str | None = None, device: str | torch.device = "cpu"
) -> SequenceNetwork:
    """Rebuild a network saved by `save` (or by `seqmem compare --save-weights`).

    In order: reads the JSON config and checks its model name and sizes; reads the header of the
    weights file (names, dtypes and shapes, not the data) and checks it against the sizes the config
    gives, so a config that does not belong to the weights is refused before anything is built;
    builds the architecture (refusing one much larger than the weights file before its parameters
    are allocated) and checks every tensor name and shape, and the config against the SHA-256 of
    the architecture recorded when it was saved; then reads the weights, checks them
    against the SHA-256 the config records, warns about non-finite weights, and loads them. Only
    JSON and safetensors are parsed: nothing is unpickled, so a file from an untrusted source cannot
    run code.

    Args:
        path: either file of the pair (`<stem>.safetensors` or `<stem>.json`), or their stem.
        backend: run the model on this backend instead of the saved one (e.g. `"numba"`).
        device: where to put the parameters.

    Returns:
        The `SequenceNetwork`, in eval mode, with the saved dtype.

    Raises:
        FileNotFoundError: if either file of the pair is missing.
        ValueError: for a file that is not what it should be (not JSON, another format, a newer
            format version, a config SequenceNetwork refuses, whose sizes do not match the weights or
            that was changed after saving (`config_sha256`), a corrupt safetensors file, non-float
            tensors, a weights file that does not match the config's SHA-256, missing, unexpected or
            misshapen tensors); the message names the file and what was expected.

    Warns:
        UserWarning: if the config records no SHA-256 (files of older versions), naming the file.
        RuntimeWarning: if a weight is NaN or infinite, naming the tensors.
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
    _check_config_values(config, json_path)
    try:
        header = _read_header(st_path)
    except ValueError:
        _check_sha256(st_path.read_bytes(), doc, st_path, json_path)  # a damaged file: say so if the SHA shows it
        raise
    not_float = [f"{k}: {dtype}" for k, (dtype, _) in header.items() if dtype not in _FLOAT_DTYPES]
    if not_float:
        raise _bad(st_path, f"floating-point tensors ({', '.join(_FLOAT_DTYPES)})", "; ".join(not_float[:5]))
    _check_config_sizes(config, header, st_path, json_path)
    network = _build(config, header, st_path, json_path)
    recorded = doc.get("config_sha256")  # files of older versions have none
    if recorded is not None and recorded != _architecture_sha256(doc["config"]):
        raise _bad(
            json_path, "the config the weights were saved with (its SHA-256 is recorded as config_sha256)",
            "the config was changed after saving (e.g. n_heads or a nonlinearity: the tensor shapes do not "
            "show it, the network would compute something else); pass backend= to load to change the backend",
        )
    data = st_path.read_bytes()
    _check_sha256(data, doc, st_path, json_path)
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for a bad header or buffer
        raise _bad(st_path, _SAFETENSORS, str(e)) from None
    _warn_nonfinite(tensors, st_path)
    dtypes = {v.dtype for v in tensors.values()}
    if len(dtypes) == 1:
        network = network.to(dtypes.pop())
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as e:  # the file changed between its header and its data
        raise _bad(st_path, "tensors shaped as the config says", str(e)) from None
    return network.to(device).eval()


def remove_temp_files(folder: str | os.PathLike[str], *, older_than: float = 0.0) -> list[Path]:
    """Delete the temporary files that writes killed half-way left in a folder.

    `save` and `write_network` write each file as `.<name>.<random>.tmp` in the same folder and then
    rename it; a process killed before the rename (`kill -9`, a power cut) leaves that file behind.
    This removes the files of that pattern whose name ends in `.safetensors.<random>.tmp` or
    `.json.<random>.tmp`, in `folder` only (not its subfolders); nothing else is touched.

    Call it when no process is writing into `folder` (a sweep does, on resume, under its lock), or
    pass `older_than` to spare recent files.

    Args:
        folder: the folder, e.g. a sweep's `weights/`; a missing folder has nothing to remove.
        older_than: only remove files last modified more than this many seconds ago.

    Returns:
        The paths removed, sorted.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".run1.safetensors.k2x9ab_c.tmp").write_bytes(b"half a file")
        >>> for removed in remove_temp_files(folder):
        ...     print(removed.name)
        .run1.safetensors.k2x9ab_c.tmp
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    cutoff = time.time() - older_than
    removed = []
    for p in folder.iterdir():
        if _TEMP_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink() and p.stat().st_mtime <= cutoff:
            with contextlib.suppress(FileNotFoundError):  # another cleaner was first
                p.unlink()
                removed.append(p)
    return sorted(removed)


def check_writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Make sure files can be written into `folder`, creating it (and its parents) if needed.

    A sweep that saves weights calls this before the first run trains, so that a folder it cannot
    write into is refused at once, not after hours of training.

    Args:
        folder: the folder to write into.

    Returns:
        The folder, as a `Path`.

    Raises:
        OSError: (`PermissionError`, `NotADirectoryError`, ...) naming the folder and the reason, if it
            cannot be created or a file cannot be created in it (read-only folder or file system,
            a file in the way, no space).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".seqmem-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot write into {folder}: it exists and is not a folder"
        ) from None
    except OSError as e:
        raise OSError(e.errno, f"cannot write into {folder}: {e.strerror or e}") from None
    return folder
