"""The model and task registries: every model described once by a `ModelSpec`, every task by a `TaskSpec`.

Everything seqmem knows about a model family lives in its spec: how to build it for an input size
at a width, the step of the width grid `size_for_budget` searches, how `SequenceNetwork` stacks it,
its backends and state type, its `torch.nn` twins (bench baselines, interop), the configurations
`seqmem.testing.model_configs` draws, and its colour and marker in every plot. Code elsewhere asks
the spec; no code outside a family's folder and this module switches on a model's name.

Where specs come from, in order:

1. the built-in families, each declared in its folder (`seqmem/<family>/spec.py`);
2. packages that declare an entry point in the group `seqmem.models` (or `seqmem.tasks`) pointing at a
   `ModelSpec` (or `TaskSpec`), a list of them, or a function returning them: loaded on first use of
   the registry, never at `import seqmem`; one that fails to load is named in a warning and the other
   models stay usable;
3. `register_model(spec)` / `register_task(spec)` at run time.

Commands and `compare` also take a model as an import path `module:attr` (a class, a factory or a
`ModelSpec`): `resolve_model` turns any of these into a spec without registering it.

Example:
    >>> import seqmem
    >>> spec = seqmem.model_spec("lstm")
    >>> spec.width_arg, spec.backends
    ('hidden_size', ('torch', 'numba'))
    >>> spec.build(input_size=3, width=8).output_size
    8
"""

from __future__ import annotations

import importlib
import inspect
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._module import check_choice

__all__ = [
    "STACKINGS",
    "ModelSpec",
    "TaskSpec",
    "build",
    "list_models",
    "list_tasks",
    "model_names",
    "model_spec",
    "register_model",
    "register_task",
    "resolve_model",
    "resolve_models",
    "task_spec",
]

STACKINGS = ("layers", "block", "residual")
"""How `SequenceNetwork` stacks a model: `"layers"` (n separate layers, `width -> width`, as stacked
RNNs), `"block"` (one module that takes `n_layers` and ends with its own normalisation, as the
transformer), `"residual"` (n pre-norm residual blocks `x + model(LayerNorm(x))`, as Mamba)."""

_BUILTIN_MODELS = (
    "rnn", "lstm", "gru", "transformer", "ssm", "minrnn", "griffin", "linear_attention", "mlstm",
)
"""The built-in families' folders; each `seqmem/<folder>/spec.py` holds `SPECS`, a tuple of `ModelSpec`."""

_BUILTIN_TASKS = "seqmem.tasks"
"""The module whose `BUILTIN_TASKS` lists the built-in task classes."""

MODEL_ENTRY_POINTS = "seqmem.models"
TASK_ENTRY_POINTS = "seqmem.tasks"


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything seqmem needs to know about a model family, in one place.

    Args:
        name: the name commands and `seqmem.build` take (`"lstm"`), or an import path `module:attr`
            for a model that is not registered.
        factory: the class (or a function returning the module) built with keyword arguments.
        description: one line for `seqmem list`.
        width_arg: the constructor argument that sets the width `W` (`"hidden_size"`, `"d_model"`).
        input_arg: the constructor argument for the input size (`"input_size"`), or `None` when the
            model's inputs have its width (a `d_model` model).
        width_multiple: the widths the model allows are the multiples of this number; or a function
            of the constructor arguments returning it (the transformer: `2 * n_heads`).
        width_rule: why the widths are multiples of `width_multiple`, for error messages.
        configure: `configure(width, kwargs) -> kwargs`: fills constructor arguments that depend on
            the width (the transformer's number of heads), or `None`.
        stacking: how `SequenceNetwork` stacks it, one of `STACKINGS`.
        default_layers: depth of a `SequenceNetwork` body when none is asked for.
        backends: the backends it runs on; `None` reads the factory's `backends` attribute
            (`("torch",)` if it has none).
        state_type: the type of its state (`LSTMState`); `None` reads the factory's `state_type`
            attribute, if any.
        torch_equivalents: its `torch.nn` twins, `(sequence module, cell)` (bench baselines and
            `from_torch`/`to_torch` interop); `()` reads the factory's `torch_classes`, if any.
        configs: `configs(max_size) -> hypothesis strategy` of constructor keyword arguments (dicts)
            covering every variant flag, used by `seqmem.testing.model_configs`; it imports
            hypothesis itself, so the registry does not need it. `None`: sizes only.
        kwargs: fixed constructor arguments (the LTI ablation `s4d`: `selective=False`).
        kernel_variants: the constructor arguments that select different compiled kernels (the
            LSTM with and without peepholes and biases), to compile them ahead of time
            (`seqmem warmup`, the test suite's warm-up); `()` for a model without kernels.
        color: its colour in every plot (a matplotlib colour), or `None` for one from a palette.
        marker: its matplotlib marker, or `None`.
        references: the papers, for `seqmem list` and the docs.

    Raises:
        ValueError: for an empty name, an unknown stacking, a non-positive `default_layers` or
            `width_multiple`, or a `width_arg`/`input_arg` the factory does not take.
        TypeError: if `factory` is not callable.

    Example:
        >>> import torch
        >>> from seqmem import ModelSpec
        >>> spec = ModelSpec("tiny-rnn", torch.nn.RNN, description="torch's own Elman RNN")
        >>> spec.width_arg, spec.stacking
        ('hidden_size', 'layers')
    """

    name: str
    factory: Callable[..., nn.Module]
    description: str = ""
    width_arg: str = "hidden_size"
    input_arg: str | None = "input_size"
    width_multiple: int | Callable[[Mapping[str, Any]], int] = 1
    width_rule: str = ""
    configure: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
    stacking: str = "layers"
    default_layers: int = 1
    backends: tuple[str, ...] | None = None
    state_type: type | None = None
    torch_equivalents: tuple[type, ...] = ()
    configs: Callable[[int], Any] | None = field(default=None, repr=False)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kernel_variants: tuple[Mapping[str, Any], ...] = ()
    color: str | None = None
    marker: str | None = None
    references: str = ""

    def __post_init__(self) -> None:
        where = f"ModelSpec({self.name!r})"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec: name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory):
            raise TypeError(f"{where}: factory must be a class or function, got {type(self.factory).__name__}")
        check_choice("stacking", self.stacking, STACKINGS, where)
        if isinstance(self.default_layers, bool) or not isinstance(self.default_layers, int) or self.default_layers < 1:
            raise ValueError(f"{where}: default_layers must be a positive int, got {self.default_layers!r}")
        m = self.width_multiple
        if not callable(m) and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"{where}: width_multiple must be a positive int or a function, got {m!r}")
        params = _parameters(self.factory)
        if params is not None:
            for what, arg in (("width_arg", self.width_arg), ("input_arg", self.input_arg)):
                if arg is not None and arg not in params:
                    raise ValueError(
                        f"{where}: {what}={arg!r} is not an argument of {_qualname(self.factory)}; "
                        f"it takes {sorted(params)}"
                    )
        backends = self.backends
        if backends is None:
            backends = tuple(getattr(self.factory, "backends", ("torch",)))
        object.__setattr__(self, "backends", tuple(backends))
        if self.state_type is None:
            object.__setattr__(self, "state_type", getattr(self.factory, "state_type", None))
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))
        twins = self.torch_equivalents or getattr(self.factory, "torch_classes", ())
        object.__setattr__(self, "torch_equivalents", tuple(twins))

    # ------------------------------------------------------------------ building
    def step(self, kwargs: Mapping[str, Any] | None = None) -> int:
        """The step of the width grid for these constructor arguments (`width_multiple`).

        Args:
            kwargs: constructor arguments (the transformer's `n_heads`), or `None`.

        Returns:
            A positive int: the allowed widths are its multiples.
        """
        m = self.width_multiple
        return int(m(dict(kwargs or {}))) if callable(m) else int(m)

    def model_kwargs(self, width: int, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The constructor arguments at this width: the fixed ones, the caller's, then `configure`'s.

        Args:
            width: the width `W`.
            kwargs: the caller's constructor arguments.

        Returns:
            A new dict (without the width and input size themselves).

        Raises:
            ValueError: if `width` is not a multiple of `step(kwargs)`, or a caller's argument
                contradicts a fixed one.
        """
        given = dict(kwargs or {})
        self._check_fixed(given, self.name)
        merged = {**self.kwargs, **given}
        step = self.step(merged)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1 or width % step:
            args = ", ".join(f"{k}={v!r}" for k, v in given.items() if k != "backend")
            rule = f"; {self.width_rule}" if self.width_rule else ""
            raise ValueError(
                f"{self.name}: the width must be a positive int divisible by {step}"
                f"{' with ' + args if args else ''}{rule}; got {width!r}"
            )
        return self.configure(width, merged) if self.configure is not None else merged

    def _check_fixed(self, kwargs: Mapping[str, Any], where: str) -> None:
        for key, value in self.kwargs.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(f"{where}: {key} must be {value!r} for {self.name} (fixed), got {kwargs[key]!r}")

    def build(self, input_size: int, width: int, **kwargs: Any) -> nn.Module:
        """Build the model for `input_size` input features at width `width`.

        Args:
            input_size: input features per step (must equal `width` for a model without `input_arg`).
            width: the width `W` (`hidden_size` or `d_model`).
            **kwargs: further constructor arguments (e.g. `backend="numba"`, `n_layers` for a block).

        Returns:
            The module.

        Raises:
            ValueError: for a width off the grid, or an input size the model cannot take.
        """
        args = self.model_kwargs(width, kwargs)
        if self.input_arg is None:
            if input_size != width:
                raise ValueError(
                    f"{self.name}: its inputs have its width ({self.width_arg}={width}), got input_size={input_size}"
                )
        else:
            args[self.input_arg] = input_size
        args[self.width_arg] = width
        return self.factory(**args)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # a built-in or entry-point model travels to worker processes by name (its `configs` may be a
        # closure); any other spec by value, its factory by reference
        if _MODELS.portable(self):
            return (model_spec, (self.name,))
        return super().__reduce_ex__(protocol)

    def check(self) -> None:
        """Build the model at a tiny width and check it satisfies `SequenceModel` (a cheap sanity check).

        Raises:
            TypeError: if the built object is not an `nn.Module` satisfying `seqmem.SequenceModel`, or
                its `input_size`/`output_size` do not match what it was built for.
            ValueError: if building it at the smallest width of its grid fails.
        """
        from .protocol import SequenceModel

        step = self.step()
        width = step * -(-4 // step)  # the smallest width of the grid that is at least 4
        try:
            with torch.random.fork_rng(devices=[]):
                model = self.build(width, width)
        except Exception as e:
            raise ValueError(
                f"{self.name}: building {_qualname(self.factory)} at width {width} failed: {type(e).__name__}: {e}"
            ) from e
        if not isinstance(model, nn.Module) or not isinstance(model, SequenceModel):
            missing = [a for a in ("input_size", "output_size", "initial_state", "forward", "step")
                       if not hasattr(model, a)]
            raise TypeError(
                f"{self.name}: {_qualname(self.factory)} must build a torch.nn.Module satisfying "
                f"seqmem.SequenceModel (input_size, output_size, initial_state, forward, step); "
                f"got {type(model).__name__}" + (f", missing {missing}" if missing else "")
            )
        if model.input_size != width:
            raise TypeError(f"{self.name}: built with input size {width}, but its input_size is {model.input_size}")


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """A task of the registry.

    Args:
        name: the name `get_task` and `seqmem compare --task` take.
        factory: the `Task` subclass (or a function) called as `factory(seq_len, **options)`.
        description: one line for `seqmem list` (default: the factory's `description` attribute).

    Raises:
        ValueError: for an empty name. TypeError: for a factory that is not callable.
    """

    name: str
    factory: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"TaskSpec: name must be a non-empty string, got {self.name!r}")
        if not callable(self.factory):
            raise TypeError(f"TaskSpec({self.name!r}): factory must be callable, got {type(self.factory).__name__}")
        if not self.description:
            object.__setattr__(self, "description", str(getattr(self.factory, "description", "")))


# ---------------------------------------------------------------------------------------- registries
class _Registry:
    """Specs by name, filled lazily: built-ins, then entry points, then `register`."""

    def __init__(self, kind: str, group: str, builtins: Callable[[], Iterable[Any]], spec_type: type) -> None:
        self.kind, self.group, self.spec_type = kind, group, spec_type
        self._builtins = builtins
        self._specs: dict[str, Any] = {}
        self._portable: set[str] = set()  # built-ins and entry points: every process has them
        self._loaded = False
        self._lock = threading.RLock()

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            pending = dict(self._specs)  # registered before the first look-up: keep them after the built-ins
            self._specs.clear()
            for spec in self._builtins():
                self._specs[spec.name] = spec
            self._loaded = True
            for spec in _entry_point_specs(self.group, self.spec_type):
                if spec.name in self._specs:
                    warnings.warn(f"seqmem: entry point of group {self.group!r} defines {self.kind} {spec.name!r}, "
                                  f"which exists already; the entry point's is ignored", stacklevel=3)
                    continue
                self._specs[spec.name] = spec
            self._portable = set(self._specs)
            for name, spec in pending.items():
                self._specs.setdefault(name, spec)

    def portable(self, spec: Any) -> bool:
        """Whether `spec` is a built-in or entry-point spec (found by name in any process)."""
        return self._loaded and spec.name in self._portable and self._specs.get(spec.name) is spec

    def register(self, spec: Any, replace: bool) -> Any:
        with self._lock:
            self._load()
            if spec.name in self._specs and not replace:
                raise ValueError(
                    f"register_{self.kind}: a {self.kind} named {spec.name!r} is registered already "
                    f"({_qualname(self._specs[spec.name].factory)}); choose another name or pass replace=True"
                )
            self._specs[spec.name] = spec
            self._portable.discard(spec.name)  # replaced, or new: other processes do not have it
        return spec

    def get(self, name: str, where: str) -> Any:
        self._load()
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            check_choice(self.kind, name, list(self._specs), where)
        return spec

    def all(self) -> list[Any]:
        self._load()
        return list(self._specs.values())


def _entry_point_specs(group: str, spec_type: type) -> list[Any]:
    """The specs every installed distribution declares in an entry-point group; failures are warned."""
    from importlib.metadata import entry_points

    specs = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, (spec_type, type)):
                obj = obj()
            found = [obj] if isinstance(obj, spec_type) else list(obj)
            bad = [type(s).__name__ for s in found if not isinstance(s, spec_type)]
            if bad:
                raise TypeError(f"expected {spec_type.__name__} objects, got {bad}")
            if spec_type is ModelSpec:
                for s in found:
                    s.check()
        except Exception as e:  # a broken plug-in must not take the built-ins down
            warnings.warn(
                f"seqmem: could not load the entry point {ep.name!r} = {ep.value!r} of group {group!r} "
                f"({type(e).__name__}: {e}); the other {spec_type.__name__}s are still usable",
                stacklevel=4,
            )
            continue
        specs.extend(found)
    return specs


def _builtin_models() -> list[ModelSpec]:
    specs = []
    for folder in _BUILTIN_MODELS:
        specs.extend(importlib.import_module(f"seqmem.{folder}.spec").SPECS)
    return specs


def _builtin_tasks() -> list[TaskSpec]:
    return list(importlib.import_module(_BUILTIN_TASKS).BUILTIN_TASKS)


_MODELS = _Registry("model", MODEL_ENTRY_POINTS, _builtin_models, ModelSpec)
_TASKS = _Registry("task", TASK_ENTRY_POINTS, _builtin_tasks, TaskSpec)


def register_model(spec: ModelSpec, *, replace: bool = False, check: bool = True) -> ModelSpec:
    """Add a model to the registry, so every command and `seqmem.build` know it by name.

    Args:
        spec: its description.
        replace: replace a registered model of the same name instead of refusing.
        check: build it at a tiny width first and check it satisfies the protocol (`ModelSpec.check`).

    Returns:
        `spec`.

    Raises:
        TypeError: if `spec` is not a `ModelSpec`, or the model it builds does not satisfy `SequenceModel`.
        ValueError: for a name registered already (without `replace`), or a model that fails to build.

    Example:
        >>> import seqmem
        >>> spec = seqmem.ModelSpec("gru-nobias", seqmem.GRU, kwargs={"bias": False})
        >>> _ = seqmem.register_model(spec, replace=True)  # replace: a notebook cell may run twice
        >>> seqmem.build("gru-nobias", 3, 4).bias
        False
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register_model: expected a seqmem.ModelSpec, got {type(spec).__name__}")
    if check:
        spec.check()
    return _MODELS.register(spec, replace)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered model.

    Args:
        name: a registered name (`seqmem.model_names()`).

    Returns:
        Its `ModelSpec`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
        TypeError: if `name` is not a string.
    """
    return _MODELS.get(name, "seqmem.model_spec")


def list_models() -> list[ModelSpec]:
    """Every registered model's spec: the built-ins, then entry points, then `register_model`'s, in order."""
    return _MODELS.all()


def model_names() -> list[str]:
    """The names `build` accepts: `rnn, lstm, gru, transformer, mamba, s4d` and any registered since."""
    return [s.name for s in _MODELS.all()]


def register_task(spec: TaskSpec, *, replace: bool = False) -> TaskSpec:
    """Add a task to the registry, so `get_task` and `seqmem compare --task` know it by name.

    Args:
        spec: its description.
        replace: replace a registered task of the same name instead of refusing.

    Returns:
        `spec`.

    Raises:
        TypeError: if `spec` is not a `TaskSpec`.
        ValueError: for a name registered already (without `replace`).
    """
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task: expected a seqmem.TaskSpec, got {type(spec).__name__}")
    return _TASKS.register(spec, replace)


def task_spec(name: str) -> TaskSpec:
    """The spec of a registered task.

    Args:
        name: a registered name (`seqmem.task_names()`).

    Returns:
        Its `TaskSpec`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    return _TASKS.get(name, "seqmem.tasks.get_task")


def list_tasks() -> list[TaskSpec]:
    """Every registered task's spec, built-ins first."""
    return _TASKS.all()


# ---------------------------------------------------------------------------------------- resolving
def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _parameters(factory: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments a factory takes, or `None` if it takes `**kwargs` or has no signature."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _import_path(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"a model import path must look like 'package.module:attr', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} of model {ref!r}: {e}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (model {ref!r})") from None
    return obj


def _spec_from_callable(obj: Callable[..., Any], name: str) -> ModelSpec:
    params = _parameters(obj)
    if params is None:
        raise TypeError(
            f"model {name!r}: cannot tell the width argument of {_qualname(obj)} (it takes **kwargs or has no "
            f"signature); wrap it in a seqmem.ModelSpec(width_arg=..., input_arg=...)"
        )
    width_arg = next((a for a in ("hidden_size", "d_model") if a in params), None)
    if width_arg is None:
        raise TypeError(
            f"model {name!r}: {_qualname(obj)} takes no width argument (expected 'hidden_size' or 'd_model' "
            f"among {sorted(params)}); wrap it in a seqmem.ModelSpec(width_arg=...)"
        )
    input_arg = "input_size" if "input_size" in params else None
    doc = inspect.getdoc(obj) or ""
    return ModelSpec(
        name,
        obj,
        description=doc.splitlines()[0] if doc else "",
        width_arg=width_arg,
        input_arg=input_arg,
        stacking="layers" if input_arg is not None else "residual",
        default_layers=1 if input_arg is not None else 2,
    )


def resolve_model(ref: str | ModelSpec | Callable[..., Any], *, check: bool = True) -> ModelSpec:
    """Any way of naming a model, as a `ModelSpec`.

    | `ref` | spec |
    | --- | --- |
    | a registered name (`"lstm"`) | `model_spec(ref)` |
    | an import path `"package.module:attr"` | the object it names, resolved as below; the spec's name is the path |
    | a `ModelSpec` | itself |
    | a class or factory | a spec built from its signature (below) |

    A class or factory's width is its `hidden_size` argument (then it needs `input_size` too, and a
    network stacks it as layers) or its `d_model` argument (inputs of its width: a network stacks
    it as pre-norm residual blocks).

    Args:
        ref: the model.
        check: build it at a tiny width and check the protocol (`ModelSpec.check`), unless it is registered.

    Returns:
        The spec (not registered).

    Raises:
        ValueError: for an unknown name, or an import path that does not import.
        TypeError: for an object that is neither a spec nor a callable, a callable with no width
            argument, or a model that does not satisfy `SequenceModel`.
    """
    if isinstance(ref, ModelSpec):
        spec = ref
    elif isinstance(ref, str):
        if ":" not in ref:
            if ref not in model_names():
                raise ValueError(
                    f"unknown model {ref!r}; expected one of {model_names()}, or an import path "
                    f"'package.module:attr' to a model class, factory or ModelSpec"
                )
            return model_spec(ref)
        obj = _import_path(ref)
        if isinstance(obj, ModelSpec):
            spec = obj
        elif callable(obj):
            spec = _spec_from_callable(obj, ref)
        else:
            raise TypeError(f"model {ref!r} names a {type(obj).__name__}; expected a class, factory or ModelSpec")
    elif callable(ref):
        spec = _spec_from_callable(ref, f"{getattr(ref, '__module__', '?')}:{getattr(ref, '__qualname__', '?')}")
    else:
        raise TypeError(
            f"expected a model name, an import path 'module:attr', a ModelSpec or a class; got {type(ref).__name__}"
        )
    if check:
        spec.check()
    return spec


def resolve_models(refs: Any, where: str) -> list[ModelSpec]:
    """A list of models (names, import paths, specs or classes) as specs, duplicates dropped, each checked.

    Args:
        refs: one model or an iterable of them (see `resolve_model`).
        where: the caller's name, for messages (`"compare"`).

    Returns:
        The specs, in order, one per distinct name.

    Raises:
        ValueError: for an empty list or a model `resolve_model` refuses (the message starts with `where`).
        TypeError: as `resolve_model`.
    """
    if isinstance(refs, (str, ModelSpec)) or not isinstance(refs, Iterable):
        refs = [refs]
    specs: dict[str, ModelSpec] = {}
    for ref in refs:
        try:
            spec = resolve_model(ref)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{where}: {e}") from None
        specs.setdefault(spec.name, spec)
    if not specs:
        raise ValueError(f"{where}: models must not be empty; choose from {model_names()}")
    return list(specs.values())


def build(name: str, *args: Any, **kwargs: Any) -> nn.Module:
    """Build a registered model by name; the other arguments go to its constructor.

    | name | class |
    | --- | --- |
    | `rnn` | `RNN(input_size, hidden_size, nonlinearity="tanh", bias=True)` |
    | `lstm` | `LSTM(input_size, hidden_size, bias=True, forget_bias=1.0, peephole=False)` |
    | `gru` | `GRU(input_size, hidden_size, bias=True, reset_after=True)` |
    | `transformer` | `CausalTransformer(d_model, n_heads=4, n_layers=2)` |
    | `mamba` | `SelectiveSSM(d_model, d_state=16, d_conv=4, expand=2, selective=True)` |
    | `s4d` | `SelectiveSSM(d_model, ..., selective=False)`, the LTI ablation |

    and every model registered since (`seqmem.list_models()`).

    Args:
        name: one of `model_names()`.
        *args: positional constructor arguments.
        **kwargs: keyword constructor arguments (e.g. `backend="numba"`).

    Returns:
        The model, an `nn.Module` satisfying `SequenceModel`.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), or an argument that
            contradicts a fixed one (`build("s4d", 8, selective=True)`).

    Example:
        >>> import seqmem
        >>> seqmem.build("lstm", 4, 32)
        LSTM(4, 32, bias=True, backend='torch', forget_bias=1.0, peephole=False)
    """
    spec = _MODELS.get(name, "seqmem.build")
    spec._check_fixed(kwargs, f"build({name!r}, ...)")
    return spec.factory(*args, **{**spec.kwargs, **kwargs})
