"""Your own data as a task: `from_arrays(x, y, ...)` in Python, `get_task("data", path=...)` for a file.

Both take the same arrays (in memory, or as the keys of an `.npz` archive written by `np.savez`):

| key | shape and dtype | meaning |
| --- | --- | --- |
| `x` | `(N, T, F)` float (or int, bool) | `F` real features per step |
| | `(N, T)` integer | token ids in `[0, vocab_size)` |
| `y` | `(N,)` integer | one class per sequence: **sequence classification** |
| | `(N, T)` integer | one class per step: **per-step labelling** |
| | `(N,)` or `(N, K)` float | `K` real targets per sequence: **sequence regression** |
| | `(N, T, K)` float | `K` real targets per step: **per-step regression** |
| `lengths` | `(N,)` integer in `[1, T]` | optional: valid steps of each right-padded sequence |
| `x_val`, `y_val`, `lengths_val` | as `x`, `y`, `lengths` | optional: the validation set |
| `vocab_size` | integer scalar | optional: token vocabulary (default: the largest id + 1) |
| `n_classes` | integer scalar | optional: number of classes (default: the largest label + 1) |
| `kind` | string scalar | optional: one of `seqmem.tasks.arrays.KINDS`, to override the kind read from `y` |

The kind is read from `y`'s dtype and shape: integer labels are classes, floats are regression
targets (a float `(N, K)` is `K` targets per sequence even when `K == T`: give per-step targets
as `(N, T, K)`). The metric is accuracy (classes) or the mean squared error (regression).

Padding. With `lengths`, sequence `i` is `x[i, :lengths[i]]`; the steps after it are padding,
whatever they hold (NaN included): they are set to zero when the data are read, never scored,
and a sequence's label is read at its last valid step `lengths[i] - 1`. seqmem's models are
causal, so padding after a sequence cannot change its outputs at the valid steps.

The split. Without `x_val`, a share `val_fraction` of the sequences is held out for validation,
chosen by `seed` with a fixed hash (splitmix64, Steele et al. 2014) that depends on nothing else
(not on NumPy's or torch's version), stratified by class for sequence classification: each
class keeps its share (largest remainders) in both splits.

Checks. Every array is checked before any work, and a bad one raises a `ValueError` that names
the key and its shape: a missing `x` or `y`, an unknown key (refused, not ignored: a misspelt
`length` would silently leave the padding in the loss), a rank or dtype that fits no kind,
different `N` in `x`, `y` and `lengths`, NaN or inf at a valid step, labels that are not
integers or not in `[0, n_classes)`, fewer than two classes, negative token ids, lengths out
of `[1, T]`, an empty split, and an object array (`np.load` runs with `allow_pickle=False`:
loading pickles can run code).

References:
    Steele, G. L., Lea, D. & Flood, C. H. (2014). Fast splittable pseudorandom number generators.
    OOPSLA 2014 (SplitMix; here its 64-bit form with the Mix13 finaliser, as in Vigna's reference
    `splitmix64.c`, orders the rows for the split).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._module import check_choice
from .base import Batch, Task

__all__ = ["KINDS", "ArrayTask", "from_arrays"]

KINDS = ("sequence classification", "per-step labelling", "sequence regression", "per-step regression")
"""The four kinds of task a data set can be, as `ArrayTask.kind` names them."""
REQUIRED = ("x", "y")
ARRAYS = ("x", "y", "lengths", "x_val", "y_val", "lengths_val")
KEYS = (*ARRAYS, "vocab_size", "n_classes", "kind")
"""The keys an `.npz` file may hold."""
_CLASSES = KINDS[:2]
_PER_STEP = (KINDS[1], KINDS[3])
_FEW_VALUES = 20  # a float y holding at most this many distinct integers looks like labels: warn
_GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment, 2**64 / golden ratio


# ---------------------------------------------------------------------------------------- checks
class _Part(NamedTuple):
    """One set of sequences, canonical: padding zeroed, dtypes fixed."""

    x: np.ndarray  # (n, T) int64 tokens or (n, T, F) float32
    y: np.ndarray  # (n,) int64 | (n, T) int64 | (n, K) float32 | (n, T, K) float32
    lengths: np.ndarray | None  # (n,) int64 in [1, T], or None when every sequence fills T

    def valid(self) -> np.ndarray:
        """`(n, T)` bool: the valid steps."""
        n, T = self.x.shape[:2]
        if self.lengths is None:
            return np.ones((n, T), dtype=bool)
        return np.arange(T) < self.lengths[:, None]

    def take(self, rows: np.ndarray) -> _Part:
        return _Part(self.x[rows], self.y[rows], None if self.lengths is None else self.lengths[rows])


class _Data(NamedTuple):
    """A data set that passed every check, before the train/validation split."""

    kind: str
    vocab_size: int | None  # token inputs, else None
    input_size: int | None  # real features, else None
    output_size: int  # classes, or regression targets K
    train: _Part
    val: _Part | None  # the given validation set, or None: split `train`
    sha256: str


def _shape(a: np.ndarray) -> str:
    return str(tuple(int(d) for d in a.shape))


def _at(bad: np.ndarray) -> tuple[int, ...]:
    """The index of the first true entry of `bad`."""
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _index(key: str, idx: tuple[int, ...]) -> str:
    return f"{key}[{', '.join(map(str, idx))}]"


def _array(where: str, key: str, value: Any) -> np.ndarray:
    """`value` as a NumPy array of bools, integers or floats, else a `ValueError` naming `key`."""
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise ValueError(
            f"{where}: {key} is not a rectangular array ({e}); pad the sequences to one length T and pass lengths"
        ) from None
    if a.dtype.kind == "O":
        raise ValueError(
            f"{where}: {key} is an object array of shape {_shape(a)} (ragged sequences or Python objects); "
            f"pad the sequences to one length T, store {key} as a numeric array and pass lengths"
        )
    if a.dtype.kind not in "biuf":
        hint = " (map string labels to ids first: np.unique(y, return_inverse=True))" if a.dtype.kind in "US" else ""
        raise ValueError(f"{where}: {key} must hold numbers, got dtype {a.dtype} of shape {_shape(a)}{hint}")
    return a


def _scalar_int(where: str, key: str, value: Any, least: int) -> int | None:
    """An optional integer option (`vocab_size`, `n_classes`), at least `least`."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        a = _array(where, key, value)
        if a.size != 1 or a.dtype.kind not in "iu":
            raise ValueError(f"{where}: {key} must be one integer, got dtype {a.dtype} of shape {_shape(a)}")
        n = int(a.reshape(()))
    if n < least:
        raise ValueError(f"{where}: {key} must be an integer >= {least}, got {n}")
    return n


def _check_x(where: str, key: str, x: np.ndarray) -> None:
    """`x` must be `(N, T)` integer tokens or `(N, T, F)` features, none of them 0."""
    if x.ndim == 2 and x.dtype.kind not in "iu":
        hint = (f"{key}[..., None] of shape {(*x.shape, 1)} for one real feature per step" if x.dtype.kind == "f"
                else f"{key}.astype(np.int64) for token ids")
        raise ValueError(
            f"{where}: a 2-d {key} must hold integer token ids (N, T), got dtype {x.dtype} of shape {_shape(x)}; "
            f"pass {hint}"
        )
    if x.ndim not in (2, 3):
        raise ValueError(
            f"{where}: {key} must be (N, T, F) real features or (N, T) integer tokens, got shape {_shape(x)}"
        )
    if 0 in x.shape:
        raise ValueError(f"{where}: {key} of shape {_shape(x)} is empty: every split needs at least one sequence")


def _kind_of(where: str, key: str, y: np.ndarray, x: np.ndarray, kind: str | None) -> str:
    """The kind `y`'s dtype and shape describe, or, given `kind`, check `y`'s shape against it."""
    N, T = x.shape[:2]
    if y.ndim == 0 or y.shape[0] != N:
        rows = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows"
        x_key = "x_val" if key.endswith("_val") else "x"
        raise ValueError(
            f"{where}: {key} has {rows} but {x_key} has {N} sequences ({x_key}: {_shape(x)}, {key}: {_shape(y)})"
        )
    labels = y.dtype.kind in "biu"
    if kind is None:
        if y.ndim == 1:
            return KINDS[0] if labels else KINDS[2]
        if y.ndim == 2:
            if not labels:
                return KINDS[2]
            if y.shape[1] == T:
                return KINDS[1]
        if y.ndim == 3 and not labels and y.shape[1] == T:
            return KINDS[3]
        raise ValueError(
            f"{where}: {key} of dtype {y.dtype} and shape {_shape(y)} fits no kind with x {_shape(x)}: expected "
            f"integer labels (N,) or (N, T) = {(N, T)}, or float targets (N,), (N, K) or (N, T, K) with T = {T}"
        )
    want = {  # kind -> (ranks, whether axis 1 is time, the shapes in words)
        KINDS[0]: ((1,), False, "(N,)"),
        KINDS[1]: ((2,), True, f"(N, T) = {(N, T)}"),
        KINDS[2]: ((1, 2), False, "(N,) or (N, K)"),
        KINDS[3]: ((2, 3), True, f"(N, T) or (N, T, K) with T = {T}"),
    }
    ranks, per_step, words = want[kind]
    if y.ndim not in ranks or (per_step and y.shape[1] != T):
        raise ValueError(f"{where}: a {kind} needs {key} of shape {words}, got {_shape(y)}")
    return kind


def _lengths(where: str, key: str, lengths: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """Checked `(N,)` int64 lengths in `[1, T]`; `None` when every sequence fills `T`."""
    N, T = x.shape[:2]
    if lengths.dtype.kind not in "iu":
        raise ValueError(f"{where}: {key} must hold integers, got dtype {lengths.dtype} of shape {_shape(lengths)}")
    if lengths.shape != (N,):
        x_key = "x_val" if key.endswith("_val") else "x"
        raise ValueError(f"{where}: {key} must have shape (N,) = ({N},) as {x_key} {_shape(x)}, got {_shape(lengths)}")
    bad = (lengths < 1) | (lengths > T)
    if bad.any():
        i = _at(bad)
        raise ValueError(
            f"{where}: {key} must be in [1, T] = [1, {T}] (the valid steps of right-padded sequences), "
            f"got {_index(key, i)} = {int(lengths[i])} (shape {_shape(lengths)})"
        )
    return None if (lengths == T).all() else lengths.astype(np.int64)


def _finite(where: str, key: str, a: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`a` as float32 with its padding zeroed; NaN, inf or float32 overflow at a valid step raises."""
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow becomes inf, reported below
        out = a.astype(np.float32)
    steps = np.broadcast_to(valid.reshape(valid.shape + (1,) * (out.ndim - valid.ndim)), out.shape)
    bad = ~np.isfinite(out) & steps
    if bad.any():
        i = _at(bad)
        raise ValueError(
            f"{where}: {key} must be finite at every valid step, got {_index(key, i)} = {a[i].item()!r} "
            f"(NaN, inf, or beyond float32's range; shape {_shape(a)})"
        )
    out[~steps] = 0.0
    return out


def _ids(where: str, key: str, a: np.ndarray, valid: np.ndarray, what: str) -> np.ndarray:
    """Integer `a` (or floats holding integers) as int64 with its padding zeroed; negatives raise."""
    if a.dtype.kind == "f":
        whole = np.isfinite(a) & (a == np.round(np.where(np.isfinite(a), a, 0.0)))
        if (~whole & valid).any():
            i = _at(~whole & valid)
            raise ValueError(
                f"{where}: {key} holds {what}, which must be integers, got {_index(key, i)} = {a[i].item()!r} "
                f"(dtype {a.dtype}, shape {_shape(a)})"
            )
    out = np.where(valid, a, 0).astype(np.int64)
    if (out < 0).any():
        i = _at(out < 0)
        raise ValueError(f"{where}: {key} holds {what}, which must be >= 0, got {_index(key, i)} = {int(out[i])} "
                         f"(shape {_shape(a)})")
    return out


def _part(where: str, suffix: str, arrays: dict[str, np.ndarray], kind: str) -> _Part:
    """Check the values of one set (`x{suffix}`, `y{suffix}`, `lengths{suffix}`); return it canonical."""
    kx, ky, kl = (f"{k}{suffix}" for k in ("x", "y", "lengths"))
    x, y = arrays[kx], arrays[ky]
    lengths = None if kl not in arrays else _lengths(where, kl, arrays[kl], x)
    steps = _Part(x, y, lengths).valid()  # (N, T)
    x = _ids(where, kx, x, steps, "token ids") if x.ndim == 2 else _finite(where, kx, x, steps)
    valid = steps if kind in _PER_STEP else np.ones(len(y), dtype=bool)
    if kind in _CLASSES:
        y = _ids(where, ky, y, valid, "class labels")
    else:
        y = _finite(where, ky, y, valid)
        if y.ndim == (1 if kind == KINDS[2] else 2):
            y = y[..., None]  # one target: (N, 1) or (N, T, 1)
    return _Part(np.ascontiguousarray(x), np.ascontiguousarray(y), lengths)


def _val_part(where: str, arrays: dict[str, np.ndarray], kind: str, train: _Part) -> _Part:
    """The given validation set, checked against the training set's shapes."""
    x, xv, yv = arrays["x"], arrays["x_val"], arrays["y_val"]
    _check_x(where, "x_val", xv)
    if xv.ndim != x.ndim or xv.shape[1:] != x.shape[1:]:
        what = "(N_val, T) tokens with T" if x.ndim == 2 else "(N_val, T, F) features with (T, F)"
        raise ValueError(f"{where}: x_val must match x {_shape(x)}: {what} = {x.shape[1:]}, got {_shape(xv)}")
    _kind_of(where, "y_val", yv, xv, kind)
    val = _part(where, "_val", arrays, kind)
    if val.y.shape[1:] != train.y.shape[1:]:
        raise ValueError(f"{where}: y_val {_shape(yv)} must have the per-sequence shape of y {_shape(arrays['y'])}")
    return val


def _pairs(where: str, a: dict[str, np.ndarray]) -> None:
    """The optional validation keys come together."""
    for have, need in (("x_val", "y_val"), ("y_val", "x_val"), ("lengths_val", "x_val")):
        if have in a and need not in a:
            raise ValueError(
                f"{where}: {have} {_shape(a[have])} is given without {need}: pass x_val and y_val together"
            )
    if "lengths" in a and "x_val" in a and "lengths_val" not in a:
        raise ValueError(
            f"{where}: lengths {_shape(a['lengths'])} is given for x but lengths_val is missing for x_val "
            f"{_shape(a['x_val'])}: pass lengths_val too (T for a sequence without padding)"
        )


def _warn_float_labels(where: str, y: np.ndarray) -> None:
    """Warn when float targets look like class labels saved as floats."""
    if y.ndim > 2 or not np.isfinite(y).all():
        return
    values = np.unique(y)
    if 2 <= len(values) <= _FEW_VALUES and (values == np.round(values)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        warnings.warn(
            f"{where}: y of dtype {y.dtype} and shape {_shape(y)} holds only the integers {{{shown}}} and is read as "
            "regression targets; for classes save integer labels (y.astype(np.int64)) or pass "
            "kind='sequence classification' (kind='sequence regression' silences this warning)",
            UserWarning,
            stacklevel=4,
        )


def _digest(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical arrays (names, dtypes, shapes, bytes) and the resolved options."""
    h = hashlib.sha256()
    for name in sorted(content):
        value = content[name]
        if isinstance(value, np.ndarray):
            h.update(f"{name}:{value.dtype.str}:{value.shape}:".encode())
            h.update(np.ascontiguousarray(value).tobytes())
        else:
            h.update(f"{name}={value!r};".encode())
    return h.hexdigest()


def _prepare(where: str, given: Mapping[str, Any], kind: str | None) -> _Data:
    """Check every array and option; return the canonical data, before the split."""
    missing = [k for k in REQUIRED if given.get(k) is None]
    if missing:
        have = sorted(k for k, v in given.items() if v is not None)
        raise ValueError(f"{where}: {' and '.join(missing)} missing (x: the inputs, y: the targets); got {have}")
    a = {k: _array(where, k, v) for k, v in given.items() if k in ARRAYS and v is not None}
    _pairs(where, a)
    x, y = a["x"], a["y"]
    _check_x(where, "x", x)
    inferred = kind is None
    kind = _kind_of(where, "y", y, x, kind)
    parts = {"": _part(where, "", a, kind)}
    if "x_val" in a:
        parts["_val"] = _val_part(where, a, kind, parts[""])
    tokens = x.ndim == 2
    vocab_size = _scalar_int(where, "vocab_size", given.get("vocab_size"), 1)
    n_classes = _scalar_int(where, "n_classes", given.get("n_classes"), 2)
    if vocab_size is not None and not tokens:
        raise ValueError(f"{where}: vocab_size is for token inputs (N, T); x {_shape(x)} holds real features")
    if n_classes is not None and kind not in _CLASSES:
        raise ValueError(f"{where}: n_classes is for class labels; y {_shape(y)} of dtype {y.dtype} is a {kind}")
    if tokens:
        vocab_size = _bound(where, "x", "token ids", "vocab_size", vocab_size, parts, per_step=True)
    if kind in _CLASSES:
        output_size = _bound(where, "y", "labels", "n_classes", n_classes, parts, per_step=kind == KINDS[1])
    else:
        if inferred:
            _warn_float_labels(where, y)
        output_size = int(parts[""].y.shape[-1])
    content: dict[str, Any] = {"kind": kind, "vocab_size": vocab_size, "output_size": output_size}
    for suffix, p in parts.items():
        content.update({f"x{suffix}": p.x, f"y{suffix}": p.y})
        if p.lengths is not None:
            content[f"lengths{suffix}"] = p.lengths
    return _Data(kind, vocab_size, None if tokens else int(x.shape[2]), output_size, parts[""], parts.get("_val"),
                 _digest(content))


def _bound(where: str, key: str, what: str, option: str, given: int | None, parts: dict[str, _Part],
           per_step: bool) -> int:
    """The bound of token ids or labels: `given` (every valid value checked below it) or the largest + 1.

    Labels must also take at least two values (a classifier of one class learns nothing).
    """
    seen = []
    for suffix, p in parts.items():
        v = p.x if key == "x" else p.y
        m = p.valid() if per_step else np.ones(len(v), dtype=bool)
        if given is not None and ((v >= given) & m).any():
            i = _at((v >= given) & m)
            raise ValueError(
                f"{where}: {what} must be in [0, {option}) = [0, {given}), got {_index(key + suffix, i)} = {int(v[i])} "
                f"(shape {_shape(v)})"
            )
        seen.append(np.unique(v[m]))
    values = np.unique(np.concatenate(seen))
    if key == "y" and len(values) < 2:
        names = " and ".join(f"y{suffix} {_shape(p.y)}" for suffix, p in parts.items())
        verb = "holds" if len(parts) == 1 else "hold"
        raise ValueError(
            f"{where}: classification needs at least two classes, but {names} {verb} only class {int(values[0])}"
        )
    return int(values.max()) + 1 if given is None else given


# ---------------------------------------------------------------------------------------- file
def _npz_shape(npz: Any, key: str) -> str:
    """The shape in an `.npy` member's header (readable without unpickling), or `"unknown"`."""
    try:
        with npz.zip.open(key + ".npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return str(read(f)[0])
    except Exception:  # a damaged header: the message says what it can
        return "unknown"


def _read_npz(path: str) -> dict[str, Any]:
    """The arrays of an `.npz` file, checked for keys and objects (`allow_pickle=False`)."""
    where = f"data {path!r}"
    if not os.path.exists(path):
        raise FileNotFoundError(f"data: file {path!r} does not exist")
    if not os.path.isfile(path):
        raise ValueError(f"data: {path!r} is not a regular file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{where}: not an .npz archive written by np.savez ({type(e).__name__}: {e}); "
            "save your arrays with np.savez(path, x=x, y=y, ...)"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{where}: holds a single array of shape {_shape(np.asarray(loaded))} (an .npy file), not an .npz "
            "archive of named arrays; save it with np.savez(path, x=x, y=y, ...)"
        )
    with loaded:
        keys = list(loaded.files)
        unknown = [k for k in keys if k not in KEYS]
        if unknown:
            near = {k: difflib.get_close_matches(k, KEYS, n=1) for k in unknown}
            hints = "".join(f" ({k!r}: did you mean {m[0]!r}?)" for k, m in near.items() if m)
            raise ValueError(
                f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hints}; "
                f"the keys are {', '.join(KEYS)} (unknown keys are refused, not ignored)"
            )
        missing = [k for k in REQUIRED if k not in keys]
        if missing:
            raise ValueError(
                f"{where}: no {' and no '.join(map(repr, missing))} key (x: the inputs, y: the targets); "
                f"it holds {', '.join(map(repr, keys)) or 'nothing'}"
            )
        out: dict[str, Any] = {}
        for key in keys:
            try:
                out[key] = loaded[key]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise ValueError(f"{where}: cannot read {key!r}: {e}") from None
                raise ValueError(
                    f"{where}: {key} is an object array of shape {_npz_shape(loaded, key)}, which is not loaded "
                    "(allow_pickle stays off: unpickling can run code); pad the sequences to one length T, "
                    f"store {key} as a numeric array and pass lengths"
                ) from None
    kind = out.pop("kind", None)
    if kind is not None:
        if kind.dtype.kind != "U" or kind.size != 1:
            raise ValueError(f"{where}: kind must be one string, one of {list(KINDS)}; got dtype {kind.dtype} of "
                             f"shape {_shape(kind)}")
        out["kind"] = str(kind.reshape(()))
    return out


@functools.lru_cache(maxsize=2)  # a data set may be large: keep the last two read
def _load(key: tuple[Any, ...], kind: str | None) -> _Data:
    path = key[0]
    where = f"data {path!r}"
    arrays = _read_npz(path)
    in_file = arrays.pop("kind", None)
    if in_file is not None:
        check_choice("kind", in_file, list(KINDS), where)
        if kind is not None and kind != in_file:
            raise ValueError(f"{where}: kind={kind!r} was asked for, but the file's kind key says {in_file!r}")
    return _prepare(where, arrays, kind or in_file)


# ---------------------------------------------------------------------------------------- split
def _splitmix64(n: int, seed: int) -> np.ndarray:
    """`(n,)` uint64: the first `n` outputs of SplitMix64 seeded with `seed`.

    The generator of Steele et al. (2014) with the Mix13 finaliser of Java's `SplittableRandom`, as in
    Vigna's reference `splitmix64.c`: `z = seed + (i + 1) * 0x9E3779B97F4A7C15`, then two xor-shift-multiply
    rounds and a final xor-shift.
    """
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _split(where: str, data: _Data, val_fraction: float, seed: int) -> tuple[_Part, _Part]:
    """Hold out `round(N * val_fraction)` rows, chosen by hash, stratified by class for sequence labels."""
    part = data.train
    n = len(part.y)
    n_val = math.floor(n * val_fraction + 0.5)
    if not 1 <= n_val <= n - 1:
        side = "validation" if n_val < 1 else "training"
        raise ValueError(
            f"{where}: empty split: val_fraction={val_fraction} of {n} sequences (x: {_shape(part.x)}) leaves no "
            f"{side} sequence; give more sequences, another val_fraction, or x_val and y_val"
        )
    groups = part.y if data.kind == KINDS[0] else np.zeros(n, dtype=np.int64)
    classes, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    quota, remainder = np.divmod(counts * n_val, n)  # each class's share of n_val, exactly in integers
    order = np.lexsort((np.arange(len(classes)), -remainder))  # largest remainder first, then by class
    quota[order[: n_val - int(quota.sum())]] += 1
    keys = _splitmix64(n, seed)
    held_out = np.zeros(n, dtype=bool)
    for c in range(len(classes)):
        rows = np.flatnonzero(inverse == c)
        held_out[rows[np.argsort(keys[rows], kind="stable")[: quota[c]]]] = True
    return part.take(~held_out), part.take(held_out)


# ---------------------------------------------------------------------------------------- the task
class _Tensors(NamedTuple):
    x: Tensor  # (n, T) int64 or (n, T, F) float32
    y: Tensor  # (n,) int64 | (n, T) int64 | (n, K) float32 | (n, T, K) float32
    lengths: Tensor | None  # (n,) int64


def _tensors(part: _Part) -> _Tensors:
    lengths = None if part.lengths is None else torch.from_numpy(part.lengths)
    return _Tensors(torch.from_numpy(part.x), torch.from_numpy(part.y), lengths)


def _check_options(where: str, val_fraction: Any, seed: Any, kind: Any) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"{where}: val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"{where}: seed must be an int in [0, 2**64), got {seed!r}")
    if kind is not None:
        check_choice("kind", kind, list(KINDS), where)


class ArrayTask(Task):
    r"""A task on your own arrays: sequence or per-step classification or regression, with a validation split.

    Build one with `from_arrays(x, y, ...)` from arrays in memory, or by name from an `.npz` file
    (`get_task("data", seq_len=T, path="data.npz")`, `seqmem compare --data data.npz`), which is
    how other processes rebuild it: `config()` carries the SHA-256 of the data, so a run's id
    changes when the data do, and a worker whose file differs is caught. The arrays, the kinds and
    the checks are described in the module docstring (`seqmem.tasks.arrays`).

    The kind sets the rest:

    | kind | `y` | `target` | loss | metric | chance |
    | --- | --- | --- | --- | --- | --- |
    | sequence classification | `(N,)` int | `"last"` | cross-entropy | accuracy | the largest class share |
    | per-step labelling | `(N, T)` int | `"all"` | cross-entropy | accuracy per step | the largest label share |
    | sequence regression | `(N,)`, `(N, K)` float | `"last"` | mse | mse | the targets' variance |
    | per-step regression | `(N, T, K)` float | `"all"` | mse | mse per step | the targets' variance |

    Chance is the metric of the best constant guess on the validation set: the share of its most
    frequent class (at valid steps for per-step labels), or the variance of its targets averaged
    over the `K` targets (an MSE). A sequence's label is read at its last valid step,
    `lengths - 1` (or `T - 1` without lengths).

    A training batch draws sequences of the training split uniformly with replacement, from the
    generator; `split="eval"` draws from the validation split the same way, and `eval_set`
    lists the whole validation split once, which `seqmem.train.evaluate` scores (an exact metric).

    Shapes: `x` is `(batch, seq_len)` int64 tokens in `[0, vocab_size)` or `(batch, seq_len,
    input_size)` float32; `y` as in the table (int64 labels, or float32 targets with a last axis
    `K`: `(batch, K)` or `(batch, seq_len, K)`); `mask` `(batch, seq_len)` bool, the valid steps,
    for per-step kinds, else `None`; `lengths` `(batch,)` int64 when the data have padding, else
    `None`.

    Args:
        seq_len: the data's `T` (`x.shape[1]`), or `None` to take it from the file.
        path: an `.npz` file (`np.savez(path, x=x, y=y, ...)`; keys in the module docstring).
        val_fraction: share of the sequences held out for validation when the file has no
            `x_val`, in `(0, 1)`.
        seed: chooses the held-out sequences, an int in `[0, 2**64)`.
        kind: one of `seqmem.tasks.arrays.KINDS` to override the kind read from `y` (e.g. `"sequence
            classification"` for labels saved as floats), or `None`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        TypeError: if `path` is not a path.
        ValueError: if `path` is missing or not an `.npz` archive, an array fails a check (the
            message names the key and its shape), `seq_len` is not the data's `T`, or an option is
            out of range.

    Example:
        >>> import numpy as np, os, tempfile, torch
        >>> from seqmem.tasks import get_task
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(50, 12, 2)).astype(np.float32)
        >>> path = os.path.join(tempfile.mkdtemp(), "data.npz")
        >>> np.savez(path, x=x, y=(x[:, 0, 0] > 0).astype(np.int64))
        >>> task = get_task("data", seq_len=12, path=path)
        >>> task.kind, task.n_train, task.n_eval, task.config()["val_fraction"]
        ('sequence classification', 40, 10, 0.2)
        >>> task.sample(4, torch.Generator().manual_seed(0)).x.shape
        torch.Size([4, 12, 2])
    """

    name = "data"
    description = "your own data: --data FILE.npz with x, y (and lengths); classification or regression"

    def __init__(
        self,
        seq_len: int | None = None,
        path: str | os.PathLike[str] | None = None,
        *,
        val_fraction: float = 0.2,
        seed: int = 0,
        kind: str | None = None,
    ) -> None:
        if path is None:
            raise ValueError("data: pass path='data.npz', the .npz file of your arrays (seqmem compare --data FILE)")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"data: path must be a path (str or PathLike), got {type(path).__name__}")
        if seq_len is not None:
            super().__init__(seq_len)  # checks it is a positive int
        _check_options("data", val_fraction, seed, kind)
        full = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(full)
            key: tuple[Any, ...] = (full, st.st_mtime_ns, st.st_size)
        except OSError:
            key = (full,)  # _read_npz raises the readable error
        data = _load(key, kind)
        T = data.train.x.shape[1]
        if seq_len is not None and seq_len != T:
            raise ValueError(
                f"data {full!r}: seq_len must be the data's T = {T} (x: {_shape(data.train.x)}), got {seq_len}; "
                "seqmem does not crop or pad your sequences"
            )
        self.path: str | None = full
        self._setup(data, float(val_fraction), seed, f"data {full!r}")

    def _setup(self, data: _Data, val_fraction: float, seed: int, where: str) -> None:
        Task.__init__(self, int(data.train.x.shape[1]))
        train, val = _split(where, data, val_fraction, seed) if data.val is None else (data.train, data.val)
        if data.kind in _CLASSES:
            labels = train.y if data.kind == KINDS[0] else train.y[train.valid()]
            if len(np.unique(labels)) < 2:
                raise ValueError(
                    f"{where}: the training split ({len(train.y)} sequences) holds only class {int(labels[0])}: "
                    "classification needs two; give more sequences of each class or another split"
                )
        self.kind = data.kind
        self.data_sha256 = data.sha256
        self.val_fraction = val_fraction
        self.seed = seed
        self.input_kind = "tokens" if data.vocab_size is not None else "real"
        self.vocab_size = data.vocab_size
        self.input_size = data.input_size
        self.output_size = data.output_size
        self.target = "all" if data.kind in _PER_STEP else "last"
        self.loss_kind = "cross_entropy" if data.kind in _CLASSES else "mse"
        self.metric_name = "accuracy" if data.kind in _CLASSES else "mse"
        self._train, self._val = _tensors(train), _tensors(val)
        self._chance = _chance(data.kind, val, data.output_size)

    # ------------------------------------------------------------------ description
    @property
    def chance(self) -> float:
        """The metric of the best constant guess on the validation split (see the class docstring)."""
        return self._chance

    @property
    def n_train(self) -> int:
        """Number of sequences in the training split."""
        return len(self._train.y)

    @property
    def n_eval(self) -> int:
        """Number of sequences in the validation split."""
        return len(self._val.y)

    def config(self) -> dict[str, Any]:
        """`kind`, `data_sha256` (of the data as read, padding zeroed), `val_fraction` and `seed`.

        The path is not part of it: the same data in another place is the same task.
        """
        return {"kind": self.kind, "data_sha256": self.data_sha256, "val_fraction": self.val_fraction,
                "seed": self.seed}

    def __repr__(self) -> str:
        head = super().__repr__()
        if getattr(self, "path", None) is None:
            return head
        cut = head.index(",", head.index("seq_len="))
        return f"{head[:cut]}, path={self.path!r}{head[cut:]}"

    def describe(self) -> str:
        """One line: the kind, its classes or targets, the split, the shapes, the metric and chance.

        Returns:
            E.g. `"sequence classification, 3 classes, 400 train / 100 validation, seq_len 50,
            2 features, lengths 12-50; accuracy, chance 0.34 (majority class)"`.
        """
        classes = self.kind in _CLASSES
        k = self.output_size
        size = f"{k} classes" if classes else f"{k} target{'s' if k > 1 else ''}"
        inputs = f"vocab {self.vocab_size}" if self.input_kind == "tokens" else \
            f"{self.input_size} feature{'s' if self.input_size != 1 else ''}"
        parts = [self.kind, size, f"{self.n_train} train / {self.n_eval} validation", f"seq_len {self.seq_len}", inputs]
        lengths = [t.lengths for t in (self._train, self._val) if t.lengths is not None]
        if lengths:
            low = min(int(t.min()) for t in lengths)
            parts.append(f"lengths {low}-{self.seq_len}")
        base = "majority class" if classes else "variance of the validation targets"
        return f"{', '.join(parts)}; {self.metric_name}, chance {self.chance:.3g} ({base})"

    def split(self, split: str = "train") -> tuple[Tensor, Tensor, Tensor | None]:
        """All sequences of one split, in a fixed order (that of the data).

        Args:
            split: `"train"` or `"eval"` (the validation split).

        Returns:
            `(x, y, lengths)`: `x` `(n, seq_len)` int64 or `(n, seq_len, input_size)` float32, `y`
            as a batch's (`(n,)`, `(n, seq_len)`, `(n, K)` or `(n, seq_len, K)`), `lengths` `(n,)`
            int64 or `None`; padding is zero.

        Raises:
            ValueError: for an unknown split.
        """
        if split not in ("train", "eval"):
            raise ValueError(f"{self.name}: split must be 'train' or 'eval', got {split!r}")
        return tuple(self._train if split == "train" else self._val)  # type: ignore[return-value]

    # ------------------------------------------------------------------ data
    def _batch(self, data: _Tensors, rows: Tensor) -> Batch:
        lengths = None if data.lengths is None else data.lengths[rows]  # (B,)
        mask = None
        if self.target == "all":
            B, T = len(rows), self.seq_len
            mask = torch.ones(B, T, dtype=torch.bool) if lengths is None else torch.arange(T) < lengths[:, None]
        return Batch(data.x[rows], data.y[rows], mask, lengths)

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences uniformly, with replacement, from one split.

        Args:
            batch_size: number of sequences.
            generator: source of randomness: the same seed gives the same batch.
            split: `"train"` or `"eval"` (the validation split).

        Returns:
            `Batch(x, y, mask, lengths)` with the shapes of the class docstring.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        data = self._train if split == "train" else self._val
        rows = torch.randint(0, len(data.y), (batch_size,), generator=generator)  # (B,)
        return self._batch(data, rows)

    def eval_set(self, batch_size: int) -> Iterator[Batch]:
        """The whole validation split once, in order, in batches of `batch_size` (the last may be smaller).

        Args:
            batch_size: sequences per batch.

        Returns:
            An iterator of `Batch`es; together they hold every validation sequence exactly once.

        Raises:
            ValueError: for a non-positive `batch_size`.
        """
        self._check_sample_args(batch_size, "eval")
        n = self.n_eval
        return (self._batch(self._val, torch.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size))


def _chance(kind: str, val: _Part, output_size: int) -> float:
    """The metric of the best constant guess on the validation split."""
    per_step = kind in _PER_STEP
    valid = val.valid() if per_step else np.ones(len(val.y), dtype=bool)
    targets = val.y[valid]  # (n,) labels or (n, K) targets at the scored steps
    if kind in _CLASSES:
        return float(np.bincount(targets, minlength=output_size).max() / len(targets))
    return float(targets.astype(np.float64).var(axis=0).mean())


# ---------------------------------------------------------------------------------------- from arrays
def from_arrays(
    x: Any,
    y: Any,
    *,
    lengths: Any = None,
    x_val: Any = None,
    y_val: Any = None,
    lengths_val: Any = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    kind: str | None = None,
    vocab_size: int | None = None,
    n_classes: int | None = None,
    name: str = "data",
) -> ArrayTask:
    r"""A task on your own arrays (NumPy arrays, torch tensors or nested lists).

    The kind comes from `y`: integer labels `(N,)` (sequence classification) or `(N, T)`
    (per-step labelling), float targets `(N,)` or `(N, K)` (sequence regression) or `(N, T, K)`
    (per-step regression). Everything is checked first; see the module docstring for the rules
    and `ArrayTask` for the batches, the metric and chance.

    Args:
        x: `(N, T, F)` real features (float, or int or bool cast to float32) or `(N, T)`
            integer token ids.
        y: the targets, as above.
        lengths: `(N,)` integers in `[1, T]`: sequence `i` is `x[i, :lengths[i]]`, the rest is
            padding (ignored, whatever it holds); `None` when every sequence is `T` long.
        x_val: the validation inputs, shaped as `x` but for `N_val` sequences; `None` to hold
            out a share of `x` instead.
        y_val: the validation targets, shaped as `y`; given with `x_val`.
        lengths_val: `(N_val,)` lengths of `x_val` (required when `lengths` and `x_val` are given).
        val_fraction: without `x_val`, the share of the sequences held out, in `(0, 1)`.
        seed: chooses the held-out sequences (a fixed hash: the split never changes for a given
            seed), an int in `[0, 2**64)`.
        kind: one of `seqmem.tasks.arrays.KINDS` to override the kind read from `y`, or `None`.
        vocab_size: the number of token ids (token inputs only); default: the largest id + 1.
        n_classes: the number of classes (labels only); default: the largest label + 1.
        name: the task's name in messages and records.

    Returns:
        An `ArrayTask`.

    Raises:
        ValueError: if an array fails a check (the message names the key and its shape) or an
            option is out of range.
        TypeError: if `kind` or `name` is not a string.

    Example:
        >>> import numpy as np, torch
        >>> from seqmem.tasks import from_arrays
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(100, 20, 3)).astype(np.float32)
        >>> lengths = rng.integers(5, 21, size=100)
        >>> y = (x[np.arange(100), lengths - 1, 0] > 0).astype(np.int64)  # the sign at the last valid step
        >>> task = from_arrays(x, y, lengths=lengths)
        >>> task.kind, task.n_train, task.n_eval, task.metric_name
        ('sequence classification', 80, 20, 'accuracy')
        >>> batch = task.sample(8, torch.Generator().manual_seed(0))
        >>> batch.x.shape, batch.y.shape, batch.lengths.shape
        (torch.Size([8, 20, 3]), torch.Size([8]), torch.Size([8]))
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"from_arrays: name must be a non-empty string, got {name!r}")
    where = "from_arrays" if name == "data" else f"from_arrays ({name})"
    _check_options(where, val_fraction, seed, kind)
    given = {"x": x, "y": y, "lengths": lengths, "x_val": x_val, "y_val": y_val, "lengths_val": lengths_val,
             "vocab_size": vocab_size, "n_classes": n_classes}
    data = _prepare(where, given, kind)
    task = ArrayTask.__new__(ArrayTask)
    task.path = None
    task.name = name
    task._setup(data, float(val_fraction), seed, where)
    return task
