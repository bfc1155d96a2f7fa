"""Typed, frozen run configuration: YAML presets plus dotted command-line overrides.

Every mistake a user can make in a config (unknown key, wrong type, impossible combination) is
reported as one `ConfigError` line naming the field, before any model is built or compiled.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A one-line, user-facing configuration problem."""


# The model families of `electra_jax.families` (named here so that a config is checked before jax is imported).
ARCHITECTURES = ("electra", "albert", "bert")
OPS = ("auto", "xla", "cpu")  # model.ops: see models/ops.py
ATTENTION = ("einsum", "jax", "cudnn", "splash")  # model.attention: models/layers.py SelfAttention
REMAT = ("none", "dots", "attention_projections", "full")  # model.remat, least recomputation first: models/layers.py


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "electra"  # electra | albert | bert (bert: imported, adapted by masked LM, or distilled)
    vocab_size: int = 0  # 0: taken from the tokenizer
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 1024
    generator_fraction: float = 0.25  # generator hidden = fraction * hidden_size
    # Explicit generator sizes (0: derived from the fraction); set when importing a published generator.
    generator_hidden: int = 0
    generator_heads: int = 0
    generator_intermediate: int = 0
    generator_layers: int = 0  # 0: as many as the discriminator (DeBERTaV3's generator has half)
    num_hidden_groups: int = 1  # ALBERT: groups of shared layers
    inner_group_num: int = 1  # ALBERT: layers in each group
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # compute dtype: auto (bfloat16 on TPU and GPU, float32 on CPU; precision.py) | float32 | bfloat16. Parameters,
    # optimizer state, softmax, LayerNorm statistics, logits and losses are float32 (param_dtype) either way.
    dtype: str = "auto"
    param_dtype: str = "float32"
    remat: str = "none"  # none | dots | attention_projections | full: what a layer's backward recomputes (layers.py)
    attention: str = "einsum"  # einsum (ours, with attention dropout) | jax | cudnn (GPU) | splash (TPU v4+): layers.py
    # The few ops with a CPU kernel (models/ops.py): auto (the CPU kernels where the step is lowered for a CPU,
    # plain XLA elsewhere) | xla | cpu.
    ops: str = "auto"

    @property
    def generator_hidden_size(self) -> int:
        return self.generator_hidden or max(1, int(round(self.hidden_size * self.generator_fraction)))

    @property
    def generator_num_heads(self) -> int:
        return self.generator_heads or max(1, self.generator_hidden_size // 64)

    @property
    def generator_intermediate_size(self) -> int:
        return self.generator_intermediate or 4 * self.generator_hidden_size

    @property
    def generator_num_layers(self) -> int:
        return self.generator_layers or self.num_layers


@dataclass(frozen=True)
class DataConfig:
    corpus: tuple[str, ...] = ()  # text files; empty: the embedded default corpus
    prepared: str = ""  # a folder from `electra-jax prepare` (then corpus is not read)
    tokenizer: str = ""  # existing tokenizer.json (or its folder); empty: train one on the corpus
    vocab_size: int = 8000
    lowercase: bool = False
    strip_accents: bool = False
    seq_len: int = 128
    short_seq_prob: float = 0.05  # share of examples with a random shorter target length
    blank_lines_separate_docs: bool = True
    seed: int = 0
    # Held-out evaluation data (see train.eval_every): a share of whole documents held out when the corpus is
    # packed (with data.prepared: the share its `prepare --eval-fraction` held out), or a separate prepared folder.
    eval_fraction: float = 0.0
    eval_prepared: str = ""
    # Threads reading training batches ahead of the step (data/loader.py); -1: none on a CPU, where they bought
    # nothing measurable (benchmarks/read_threads.py, docs/tpu_gpu.md), 8 on TPU and GPU hosts.
    read_threads: int = -1


@dataclass(frozen=True)
class ObjectiveConfig:
    mask_prob: float = 0.15
    mask_token_prob: float = 0.85  # of the selected positions; the rest stay unchanged
    # Per sequence; generator logits are computed only there. 0: derived from mask_prob and data.seq_len as
    # google-research/electra does, int((mask_prob + 0.005) * seq_len) (see `Config.max_predictions`).
    max_predictions: int = 0
    discriminator_weight: float = 50.0
    temperature: float = 1.0
    sampler: str = "inverse_cdf"  # or "gumbel": the same distribution, one noise draw per vocabulary entry
    random_token_prob: float = 0.0  # ALBERT/BERT: share of selected positions given a random token
    max_ngram: int = 3  # ALBERT: whole-word n-grams of up to this many words, p(n) ~ 1/n
    # ELECTRA: select whole words (a token and its ## continuations) until the mask_prob budget is met
    whole_word_masking: bool = False
    # ELECTRA's embeddings between the towers: full (one table, both losses train it; google-research/electra) |
    # gdes (DeBERTaV3's gradient-disentangled sharing: the discriminator reads stop_gradient(E) + its own
    # zero-initialised delta, so E learns from the generator's MLM loss only and the delta from RTD only) |
    # none (a table per tower)
    embedding_sharing: str = "full"


@dataclass(frozen=True)
class OptimizerConfig:
    kind: str = "adamw"  # adamw | lamb
    learning_rate: float = 5e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    bias_correction: bool = True  # false: Adam without it, as google-research's TF1 optimizers (BERT, ELECTRA, ALBERT)


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "linear"  # linear | polynomial | electra | bert (google-research/bert's and albert's)
    warmup_steps: int = 10_000
    end_learning_rate: float = 0.0
    power: float = 1.0  # polynomial decay power
    restarts: tuple[int, ...] = ()  # steps at which warmup + decay start over


@dataclass(frozen=True)
class MeshConfig:
    data: int = -1  # -1: all devices left over
    fsdp: int = 1
    tensor: int = 1
    logical_axis_rules: tuple[tuple[str, typing.Any], ...] = (
        ("batch", ("data", "fsdp")),
        ("vocab", None),  # vocabularies are rarely divisible by a mesh axis; the tables are small
        ("embed", "fsdp"),
        ("mlp", "tensor"),
        ("heads", "tensor"),
        ("length", None),
    )


@dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000
    every_minutes: float = 0.0  # also save when this much time has passed since the last save (0: off; a
    #                             run without a checkpoint yet saves at its first step)
    keep: int = 3
    async_save: bool = True


@dataclass(frozen=True)
class PhaseConfig:
    """One phase of a length curriculum (`train.phases`): this many steps at this length and batch size."""
    steps: int = 0
    seq_len: int = 0
    batch_size: int = 0
    prepared: str = ""  # its data, prepared at seq_len (empty: data.prepared; a data.corpus run packs its own)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1_000_000
    batch_size: int = 128
    grad_accum_steps: int = 1
    seed: int = 0
    log_every: int = 10
    stop_after: int = 0  # stop after this many steps in this process (0: run to `steps`)
    # Held-out evaluation every this many steps (0: never) and at the end, when the run has eval data: the step
    # without dropout on the same `eval_batches` batches with the same masking and sampling keys every time.
    eval_every: int = 500
    eval_batches: int = 10
    # A length curriculum (phases.py): phases run one after another, each at its own data.seq_len and
    # train.batch_size, under one optimizer state and one schedule over train.steps (= the phases' steps).
    # Empty: one phase of train.steps at data.seq_len and train.batch_size.
    phases: tuple[PhaseConfig, ...] = ()


@dataclass(frozen=True)
class DistillConfig:
    """Task-agnostic distillation of a BERT teacher into its bottom `student_layers` layers (LightMBERT)."""
    teacher: str = ""  # a run directory of a BERT (e.g. from `electra-jax import`) or a Hugging Face BERT folder
    student_layers: int = 0
    freeze_embeddings: bool = True  # LightMBERT keeps the teacher's (multilingual) embeddings as they are
    # (student layer, teacher layer) pairs matched by the hidden-state and attention losses; 0 is the embedding
    # output, i the output of layer i. Empty: the last student layer to the last teacher layer.
    layer_map: tuple[tuple[int, int], ...] = ()
    hidden_weight: float = 1.0  # MSE of the mapped hidden states
    attention_weight: float = 1.0  # MSE of the mapped layers' attention probabilities
    logit_weight: float = 0.0  # soft cross-entropy to the teacher's MLM distribution at masked positions
    mlm_weight: float = 0.0  # the student's own MLM loss at masked positions
    temperature: float = 1.0  # of the logit distillation


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @property
    def max_predictions(self) -> int:
        """Masked positions per sequence: `objective.max_predictions`, or derived from the masking rate."""
        return self.objective.max_predictions or derived_max_predictions(self.objective.mask_prob, self.data.seq_len)


def derived_max_predictions(mask_prob: float, seq_len: int) -> int:
    """google-research/electra configure_pretraining: max_predictions_per_seq = int((mask_prob + 0.005) * L)."""
    return max(1, int((mask_prob + 0.005) * seq_len))


def masking_warning(config: Config) -> str | None:
    """One line when a set `objective.max_predictions` caps masking below `objective.mask_prob`."""
    o, seq_len = config.objective, config.data.seq_len
    wanted = derived_max_predictions(o.mask_prob, seq_len)
    if not o.max_predictions or o.max_predictions >= wanted:
        return None
    return (f"warning: objective.max_predictions={o.max_predictions} masks at most {o.max_predictions} of "
            f"{seq_len} tokens ({o.max_predictions / seq_len:.1%}), below objective.mask_prob={o.mask_prob:.0%}; "
            f"set objective.max_predictions=0 to derive it ({wanted})")


# ---------------------------------------------------------------------------- building from dicts

def _coerce(value, annotation, name: str):
    """Check `value` against a (simple) type annotation; convert lists to tuples, ints to floats."""
    if annotation is typing.Any:
        return value
    if dataclasses.is_dataclass(annotation):
        return _from_dict(annotation, value, name)
    origin = typing.get_origin(annotation)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config: {name} must be a list, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{name}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"config: {name} must have {len(args)} items, got {value!r}")
        return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _coerce(value, arg, name)
            except ConfigError:
                pass
        raise ConfigError(f"config: {name} has the wrong type: {value!r}")
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"config: {name} must be null, got {value!r}")
        return None
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config: {name} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config: {name} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {name} must be a number, got {value!r}")
        if not math.isfinite(value):  # YAML reads .nan and .inf; no setting means either
            raise ConfigError(f"config: {name} must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"config: {name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation} for {name}")


def _from_dict(cls, values: dict, prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"config: {prefix or 'the file'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"config: unknown key '{where}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value or {}, name)
        else:
            kwargs[key] = _coerce(value, hint, name)
    return cls(**kwargs)


def to_dict(config) -> dict:
    def plain(x):
        if isinstance(x, tuple):
            return [plain(v) for v in x]
        return x
    return {k: (to_dict(v) if dataclasses.is_dataclass(v) else plain(v))
            for k, v in dataclasses.asdict(config).items()} if dataclasses.is_dataclass(config) else config


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config: override '{item}' must look like section.key=value")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"config: override key '{dotted}' must be section.key, e.g. train.steps")
        section, key = parts
        if section not in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"config: unknown key '{section}' in override '{item}'")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"config: cannot parse value of '{dotted}': {err.problem}") from None
        raw.setdefault(section, {})
        if raw[section] is None:
            raw[section] = {}
        raw[section][key] = value
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config: file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config: {path} is not valid YAML: {err}") from None
    raw = apply_overrides(raw, list(overrides))
    config = _from_dict(Config, raw, "")
    from electra_jax.validation import validate  # it reads these dataclasses
    validate(config)
    return config


def with_overrides(config: Config, overrides: list[str]) -> Config:
    """`config` with `section.key=value` strings applied on top (what the command line says wins)."""
    return _from_dict(Config, apply_overrides(to_dict(config), list(overrides)), "") if overrides else config


def save_config(config: Config, path: str | Path) -> None:
    """Atomically: a reader (or a crash) never sees half a config."""
    from electra_jax.storage import write_atomic
    write_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))
