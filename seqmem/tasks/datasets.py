"""Sequence classification on real data sets that ship inside Python packages (nothing is downloaded).

Both need the optional extra `seqmem[data]` (scikit-learn for `digits`, sktime for `vowels`); the
tasks stay registered without it, and building one raises an `ImportError` that names the extra.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._module import check_choice
from .base import Batch, Task

__all__ = ["Digits", "JapaneseVowels"]

EXTRA = 'pip install "seqmem[data]"'
DIGITS_LAYOUTS = {"pixels": (64, 1), "rows": (8, 8)}  # layout -> (seq_len, input_size)
EVAL_EVERY = 5  # digits: within each class, every 5th image (in the data set's order) is held out


class _Split(NamedTuple):
    x: Tensor  # (n, seq_len, input_size) float32
    y: Tensor  # (n,) int64


def _stratified_eval(labels: np.ndarray, every: int) -> np.ndarray:
    """Bool `(n,)`: within each class, in the given order, every `every`-th item is true."""
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    return rank % every == every - 1


def _sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


class _DataTask(Task):
    """Classification of a whole sequence, read at the last step, with a fixed train/eval split."""

    input_kind = "real"
    target = "last"
    loss_kind = "cross_entropy"
    metric_name = "accuracy"

    _train: _Split
    _eval: _Split

    @property
    def n_train(self) -> int:
        """Number of sequences in the training split."""
        return len(self._train.y)

    @property
    def n_eval(self) -> int:
        """Number of sequences in the held-out split."""
        return len(self._eval.y)

    @property
    def chance(self) -> float:
        """The share of the most frequent class in the held-out split: a constant guess's accuracy."""
        counts = torch.bincount(self._eval.y, minlength=self.output_size)
        return float(counts.max()) / len(self._eval.y)

    def split(self, split: str = "train") -> tuple[Tensor, Tensor]:
        """All sequences of one split, in a fixed order.

        Args:
            split: `"train"` or `"eval"`.

        Returns:
            `(x, y)`: `(n, seq_len, input_size)` float32 and `(n,)` int64 class ids.

        Raises:
            ValueError: for an unknown split.
        """
        if split not in ("train", "eval"):
            raise ValueError(f"{self.name}: split must be 'train' or 'eval', got {split!r}")
        data = self._train if split == "train" else self._eval
        return data.x, data.y

    def sample(self, batch_size: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Draw `batch_size` sequences uniformly, with replacement, from one split.

        Args:
            batch_size: number of sequences.
            generator: source of randomness.
            split: `"train"` or `"eval"` (the held-out sequences).

        Returns:
            `Batch(x, y, None)`: `x` `(batch_size, seq_len, input_size)` float32, `y`
            `(batch_size,)` int64 class ids.

        Raises:
            ValueError: for a non-positive `batch_size` or an unknown split.
        """
        self._check_sample_args(batch_size, split)
        data = self._train if split == "train" else self._eval
        idx = torch.randint(0, len(data.y), (batch_size,), generator=generator)  # (B,)
        return Batch(data.x[idx], data.y[idx], None)


# ---------------------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError(
            f"digits: the 8x8 digits come with scikit-learn, which is not installed; {EXTRA}"
        ) from e
    bunch = load_digits()
    images = np.asarray(bunch.data, dtype=np.float64)  # (1797, 64), integers 0 .. 16
    labels = np.asarray(bunch.target, dtype=np.int64)  # (1797,)
    return images, labels, _sha256(images, labels)


class Digits(_DataTask):
    r"""Handwritten digits read as a sequence: scikit-learn's 8x8 images, pixel by pixel or row by row.

    The 1,797 images of `sklearn.datasets.load_digits()` (the test part of the UCI optical
    recognition of handwritten digits data, 8x8 pixels of 17 grey levels, 10 classes, about 180
    each) are read in row-major order, scaled from `0 .. 16` to `[0, 1]`:

    - `layout="pixels"`: one pixel per step, `seq_len = 64`, `input_size = 1` (the 8x8 analogue
      of pixel-by-pixel MNIST: the label depends on pixels up to 64 steps back);
    - `layout="rows"`: one row of 8 pixels per step, `seq_len = 8`, `input_size = 8`.

    The label is predicted at the last step. The split is fixed and needs no randomness: within
    each class, in the data set's order, every fifth image is held out (`"eval"`: 355 images,
    34 to 36 per class), the other 1,442 train. A batch draws images uniformly with replacement from
    its split.

    Shapes: `x` is `(batch, seq_len, input_size)` float32 in `[0, 1]`; `y` is `(batch,)` int64 in
    `[0, 10)`; `mask` is `None`. Metric: accuracy; chance is the largest class share of the
    held-out split, 36/355 (about 0.101).

    `seq_len` is fixed by the data: 64 or 8. `layout=None` picks the layout from `seq_len`.

    Args:
        seq_len: 64 (pixels) or 8 (rows).
        layout: `"pixels"`, `"rows"`, or `None` to infer it from `seq_len`.

    Raises:
        ImportError: if scikit-learn is not installed (`pip install "seqmem[data]"`).
        ValueError: if `seq_len` is neither 64 nor 8, or does not match `layout`.
        TypeError: if `layout` is neither a string nor `None`.

    References:
        Alpaydin, E. & Kaynak, C. (1998). Optical recognition of handwritten digits. UCI Machine
        Learning Repository (the data; scikit-learn ships its 1,797 test images).
        Le, Q. V., Jaitly, N. & Hinton, G. E. (2015). A simple way to initialize recurrent networks
        of rectified linear units. arXiv:1504.00941, section 4.2 (pixel-by-pixel MNIST).

    Example:
        >>> import torch
        >>> from seqmem.tasks import Digits
        >>> task = Digits(seq_len=8)  # row by row
        >>> x, y, _ = task.sample(4, torch.Generator().manual_seed(0))
        >>> x.shape, task.layout, task.n_train, task.n_eval
        (torch.Size([4, 8, 8]), 'rows', 1442, 355)
    """

    name = "digits"
    description = "8x8 digits, pixel by pixel (seq_len 64) or row by row (8) (accuracy; seqmem[data])"

    def __init__(self, seq_len: int, layout: str | None = None) -> None:
        super().__init__(seq_len)
        if layout is None:
            by_len = {T: name for name, (T, _) in DIGITS_LAYOUTS.items()}
            if seq_len not in by_len:
                raise ValueError(
                    f"digits: seq_len must be 64 (pixel by pixel) or 8 (row by row), got {seq_len}; "
                    "an 8x8 image has no other reading order"
                )
            layout = by_len[seq_len]
        check_choice("layout", layout, list(DIGITS_LAYOUTS), "digits")
        T, features = DIGITS_LAYOUTS[layout]
        if seq_len != T:
            raise ValueError(f"digits: layout {layout!r} has seq_len {T}, got seq_len={seq_len}")
        images, labels, sha = _load_digits()
        x = torch.from_numpy(images / 16.0).float().reshape(-1, T, features)  # (1797, T, F)
        y = torch.from_numpy(labels)
        held_out = torch.from_numpy(_stratified_eval(labels, EVAL_EVERY))
        self._train = _Split(x[~held_out], y[~held_out])
        self._eval = _Split(x[held_out], y[held_out])
        self.layout = layout
        self.data_sha256 = sha
        self.input_size = features
        self.output_size = 10

    def config(self) -> dict[str, Any]:
        """`{"layout": ..., "data_sha256": ...}` (the hash of the images and labels as loaded)."""
        return {"layout": self.layout, "data_sha256": self.data_sha256}


# ---------------------------------------------------------------------------------------- vowels
VOWELS_DIR = ("datasets", "data", "JapaneseVowels")  # inside the sktime package
VOWELS_CHANNELS = 12
VOWELS_CLASSES = 9


def _vowels_dir() -> Path:
    spec = importlib.util.find_spec("sktime")  # locate the package without importing it (pandas, ...)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"vowels: the Japanese vowels data come with sktime, which is not installed; {EXTRA}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*VOWELS_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"vowels: the installed sktime has no bundled Japanese vowels data (looked in {folder}); "
            f"reinstall it with {EXTRA}"
        )
    return folder


def _parse_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read a multivariate `.ts` file (sktime's text format): `(T_i, channels)` series and labels."""
    series, labels = [], []
    in_data = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            in_data = line.lower().startswith("@data")
            continue
        *dims, label = line.split(":")
        series.append(np.array([[float(v) for v in d.split(",")] for d in dims], dtype=np.float64).T)
        labels.append(int(label))
    return series, np.asarray(labels, dtype=np.int64)


@functools.lru_cache(maxsize=1)
def _load_vowels() -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray, str]:
    folder = _vowels_dir()
    train_s, train_y = _parse_ts(folder / "JapaneseVowels_TRAIN.ts")
    eval_s, eval_y = _parse_ts(folder / "JapaneseVowels_TEST.ts")
    sha = _sha256(*train_s, train_y, *eval_s, eval_y)
    return train_s, train_y - 1, eval_s, eval_y - 1, sha  # labels 1..9 -> 0..8


class JapaneseVowels(_DataTask):
    r"""Japanese vowels: tell which of 9 speakers uttered a vowel, from 12 cepstrum coefficients per frame.

    Nine male speakers uttered the Japanese vowels /ae/; each utterance is a sequence of 7 to 29
    frames of 12 LPC cepstrum coefficients. The split is the data set's own: 270 training
    utterances (30 per speaker, 7 to 26 frames) and 370 held out (24 to 88 per speaker, 7 to 29
    frames). The data are read from
    the copy sktime ships (`sktime/datasets/data/JapaneseVowels/*.ts`, parsed directly: nothing
    is downloaded, and sktime itself is not imported).

    Each channel is standardised with the mean and standard deviation of the training frames.
    Every utterance is then fitted to `seq_len` frames: a shorter one is padded with zero frames
    at the start (so the last step is its last frame, where the label is read), a longer one
    keeps its first `seq_len` frames. `seq_len=29` keeps every frame of every utterance; a
    longer one adds leading zeros only.

    Shapes: `x` is `(batch, seq_len, 12)` float32; `y` is `(batch,)` int64 in `[0, 9)` (speaker
    1 to 9 of the data set); `mask` is `None`. Metric: accuracy; chance is the largest speaker
    share of the held-out split, 88/370 (about 0.24). A batch draws utterances uniformly with
    replacement from its split.

    Args:
        seq_len: frames per sequence (29 keeps every frame).

    Raises:
        ImportError: if sktime is not installed (`pip install "seqmem[data]"`).
        FileNotFoundError: if the installed sktime lacks the bundled data files.

    References:
        Kudo, M., Toyama, J. & Shimbo, M. (1999). Multidimensional curve classification using
        passing-through regions. Pattern Recognition Letters 20(11-13), 1103-1111 (the data).
        Bagnall, A. et al. (2018). The UEA multivariate time series classification archive.
        arXiv:1811.00075 (the train/test split used here).

    Example:
        >>> import torch
        >>> from seqmem.tasks import JapaneseVowels
        >>> task = JapaneseVowels(seq_len=29)
        >>> x, y, _ = task.sample(2, torch.Generator().manual_seed(0))
        >>> x.shape, task.n_train, task.n_eval
        (torch.Size([2, 29, 12]), 270, 370)
    """

    name = "vowels"
    description = "Japanese vowels: which of 9 speakers, 12 channels, <= 29 frames (accuracy; seqmem[data])"

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        train_s, train_y, eval_s, eval_y, sha = _load_vowels()
        frames = np.concatenate(train_s, axis=0)  # (sum of lengths, 12)
        mean, std = frames.mean(axis=0), frames.std(axis=0)
        self._train = _Split(self._fit(train_s, mean, std), torch.from_numpy(train_y))
        self._eval = _Split(self._fit(eval_s, mean, std), torch.from_numpy(eval_y))
        self.data_sha256 = sha
        self.input_size = VOWELS_CHANNELS
        self.output_size = VOWELS_CLASSES

    def _fit(self, series: list[np.ndarray], mean: np.ndarray, std: np.ndarray) -> Tensor:
        """Standardise, keep at most `seq_len` frames, left-pad with zeros: `(n, seq_len, 12)`."""
        T = self.seq_len
        out = np.zeros((len(series), T, VOWELS_CHANNELS), dtype=np.float32)
        for i, s in enumerate(series):
            s = ((s - mean) / std)[:T]
            out[i, T - len(s):] = s
        return torch.from_numpy(out)

    def config(self) -> dict[str, Any]:
        """`{"data_sha256": ...}`: the hash of the parsed data (the task has no options)."""
        return {"data_sha256": self.data_sha256}
