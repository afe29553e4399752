"""One run of a sweep: what defines it (`RunSpec`, hashed into its id), and how a worker trains it (`execute_run`).

`seqmem.compare` plans a sweep as a list of `RunJob`s, each a `RunSpec` plus what a worker needs to
rebuild the run (the width that meets the budget, the task's options, the model's spec); an
executor (`seqmem.executors`) calls `execute_run` on each, in this process, a process pool or Ray.
`execute_run` touches no file: the sweep's process records what it returns.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from . import __version__
from .network import SequenceNetwork
from .registry import ModelSpec
from .results import RECORD_VERSION
from .tasks import get_task
from .train import StepCallback, derive_seed, train

__all__ = ["RunJob", "RunSpec", "execute_run", "run_id"]


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run, and nothing else: its content hash is the run's id.

    Attributes:
        task: the task's name.
        task_config: the task's options as it reports them (`Task.config()`, e.g. a corpus' SHA-256).
        model: the model's name (a registered name, or an import path `module:attr`).
        seq_len: the sequence length.
        seed: the seed of initialisation (`derive_seed(seed, "init")`) and training data.
        steps: training steps.
        params_budget: the parameter budget the width was chosen for.
        batch_size: sequences per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        clip: gradient-norm clipping threshold, or `None`.
        eval_batches: held-out batches of 256 sequences.
        backend: the backend the model runs on.
        tbptt: truncated BPTT chunk length, or `None` (full BPTT; then not part of the id, so the
            ids of sweeps recorded before the option existed stay valid).
        version: the record format (`RECORD_VERSION`).
        model_kwargs: the fixed constructor arguments of a model that is not the registered one of
            its name (an ad-hoc `ModelSpec("lstm-fb3", LSTM, kwargs={"forget_bias": 3.0})`), so two
            variants never share an id; `None` for a registered model (not part of the id then).
    """

    task: str
    task_config: dict[str, Any]
    model: str
    seq_len: int
    seed: int
    steps: int
    params_budget: int
    batch_size: int
    lr: float
    weight_decay: float
    clip: float | None
    eval_batches: int
    backend: str
    tbptt: int | None = None
    version: int = RECORD_VERSION
    model_kwargs: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict, without `tbptt` and `model_kwargs` when they are `None`: what the id hashes
        and records start with."""
        out = {
            "version": self.version,
            "task": self.task,
            "task_config": dict(self.task_config),
            "model": self.model,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "steps": self.steps,
            "params_budget": self.params_budget,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "clip": self.clip,
            "eval_batches": self.eval_batches,
            "backend": self.backend,
        }
        if self.tbptt is not None:
            out["tbptt"] = self.tbptt
        if self.model_kwargs is not None:
            out["model_kwargs"] = dict(self.model_kwargs)
        return out

    @property
    def id(self) -> str:
        """The run id: `run_id(self.to_dict())`."""
        return run_id(self.to_dict())

    def describe(self) -> str:
        """One line for messages: `lstm seq_len=20 lr=0.01 seed=0`."""
        return f"{self.model} seq_len={self.seq_len} lr={self.lr:g} seed={self.seed}"


def run_id(spec: dict[str, Any] | RunSpec) -> str:
    """The content hash of a run: 16 hex digits of the SHA-256 of its canonical JSON.

    Args:
        spec: a `RunSpec`, or its `to_dict()` (task, task config, model, seq_len, seed, steps,
            budget, optimiser settings, record version).

    Returns:
        The id.
    """
    if isinstance(spec, RunSpec):
        spec = spec.to_dict()
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class RunJob:
    """A run as an executor receives it (picklable; sent to pool or Ray workers).

    Attributes:
        spec: what defines the run.
        width: the network width that meets the budget.
        model: the model's spec (its factory is pickled by reference: importable in the worker).
        task_kwargs: the task's options, to rebuild it in the worker.
        save_weights: whether to return the trained network's weights.
    """

    spec: RunSpec
    width: int
    model: ModelSpec
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    save_weights: bool = False

    @property
    def id(self) -> str:
        """The run id (`spec.id`)."""
        return self.spec.id


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def execute_run(job: RunJob, callback: StepCallback | None = None) -> dict[str, Any]:
    """Train and evaluate one run; the function every executor runs (in the worker).

    Rebuilds the task from the spec (and checks its config is the one hashed), seeds the
    initialisation with `derive_seed(seed, "init")`, trains, evaluates and measures the state size.
    Touches no file.

    Args:
        job: the run.
        callback: per-step progress, `callback(step, steps, loss)`.

    Returns:
        `{"record": record, "weights": (safetensors bytes, config) or None}`; the record's fields
        are listed in `seqmem.compare.compare`.

    Raises:
        ValueError: if the task rebuilt here has another config than the spec (e.g. a corpus file
            that differs on a remote worker).
    """
    spec = job.spec
    task = get_task(spec.task, seq_len=spec.seq_len, **job.task_kwargs)
    if task.config() != spec.task_config:
        raise ValueError(
            f"compare: the task rebuilt in the worker has config {task.config()}, not the sweep's "
            f"{spec.task_config} (is the same data available there?)"
        )
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG as it was
        torch.manual_seed(derive_seed(spec.seed, "init"))
        kwargs = {"backend": spec.backend} if spec.backend != "torch" else {}
        net = SequenceNetwork.for_task(job.model, task, job.width, **kwargs)
        result = train(
            net, task, spec.steps, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
            clip=spec.clip, seed=spec.seed, eval_batches=spec.eval_batches, tbptt=spec.tbptt, callback=callback,
        )
        x = task.sample(1, torch.Generator().manual_seed(0), split="eval").x
        state_bytes = net.state_bytes(x)
    metric = task.metric_name
    record = {
        "id": job.id,
        **spec.to_dict(),
        "tbptt": spec.tbptt,
        "status": "ok" if result.diverged_at is None else "diverged",
        "steps_done": result.steps,
        "params": net.num_parameters(),
        "width": job.width,
        "n_layers": net.n_layers,
        "n_heads": net.n_heads,
        "metric": metric,
        metric: _finite(result.metric),
        "higher_is_better": task.higher_is_better,
        "chance": task.chance,
        "loss": _finite(result.eval_loss),
        "train_loss": _finite(result.train_loss),
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "state_bytes": state_bytes,
        "diverged_at": result.diverged_at,
        "diverged": result.diverged,
        "max_grad_norm": _finite(result.max_grad_norm),
        "clipped_steps": result.clipped_steps,
        "threads": torch.get_num_threads(),
        "seqmem": __version__,
        "torch": torch.__version__,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    weights = None
    if job.save_weights:
        from .io import weights_bytes

        weights = weights_bytes(net)
    return {"record": record, "weights": weights}
