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


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "electra"  # electra | albert | bert (bert: imported or distilled, not pretrained)
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
    num_hidden_groups: int = 1  # ALBERT: groups of shared layers
    inner_group_num: int = 1  # ALBERT: layers in each group
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    dtype: str = "float32"  # compute dtype: float32 or bfloat16
    param_dtype: str = "float32"
    remat: str = "none"  # none | full (recompute each layer in the backward pass) | dots (keep matmul outputs)
    attention: str = "einsum"  # einsum (ours, with attention dropout) | jax (jax.nn.dot_product_attention) | cudnn
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


@dataclass(frozen=True)
class OptimizerConfig:
    kind: str = "adamw"  # adamw | lamb
    learning_rate: float = 5e-4
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 1.0


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "linear"  # linear | polynomial | electra
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
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config: {name} must be a number, got {value!r}")
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
    validate(config)
    return config


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


# ---------------------------------------------------------------------------- validation

def _positive(name: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"config: {name} must be positive, got {value}")


def validate(config: Config, num_devices: int | None = None) -> None:
    """Impossible combinations, each named by field. `num_devices` adds the mesh checks."""
    m, d, o, t, s = config.model, config.data, config.objective, config.train, config.schedule
    for name in ("embedding_size", "hidden_size", "num_layers", "num_heads", "intermediate_size"):
        _positive(f"model.{name}", getattr(m, name))
    if m.vocab_size < 0:
        raise ConfigError(f"config: model.vocab_size must be >= 0 (0: from the tokenizer), got {m.vocab_size}")
    if m.architecture not in ARCHITECTURES:
        raise ConfigError(f"config: model.architecture must be {', '.join(ARCHITECTURES)}, got {m.architecture!r}")
    if m.remat not in ("none", "full", "dots"):
        raise ConfigError(f"config: model.remat must be none, full or dots, got {m.remat!r}")
    if m.ops not in ("auto", "xla", "cpu"):
        raise ConfigError(f"config: model.ops must be auto, xla or cpu, got {m.ops!r}")
    if m.attention not in ("einsum", "jax", "cudnn"):
        raise ConfigError(f"config: model.attention must be einsum, jax or cudnn, got {m.attention!r}")
    if m.attention != "einsum" and m.attention_dropout_rate > 0:
        raise ConfigError(f"config: model.attention={m.attention} (jax.nn.dot_product_attention) has no attention "
                          f"dropout; set model.attention_dropout_rate=0 or model.attention=einsum")
    if m.architecture == "bert" and m.embedding_size != m.hidden_size:
        raise ConfigError(f"config: a bert model's embeddings have its hidden size: set model.embedding_size="
                          f"{m.hidden_size} (got {m.embedding_size})")
    if not 1 <= m.num_hidden_groups <= m.num_layers:
        raise ConfigError(f"config: model.num_hidden_groups must be in [1, model.num_layers={m.num_layers}], "
                          f"got {m.num_hidden_groups}")
    _positive("model.inner_group_num", m.inner_group_num)
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"config: model.num_heads={m.num_heads} does not divide model.hidden_size={m.hidden_size}")
    if not 0.0 < m.generator_fraction <= 1.0:
        raise ConfigError(f"config: model.generator_fraction must be in (0, 1], got {m.generator_fraction}")
    if m.architecture == "electra" and m.generator_hidden_size % m.generator_num_heads:
        raise ConfigError(f"config: model.generator_fraction={m.generator_fraction} gives generator hidden "
                          f"{m.generator_hidden_size}, not divisible by its {m.generator_num_heads} heads")
    for name in ("dtype", "param_dtype"):
        if getattr(m, name) not in ("float32", "bfloat16"):
            raise ConfigError(f"config: model.{name} must be float32 or bfloat16, got {getattr(m, name)!r}")
    for name in ("dropout_rate", "attention_dropout_rate"):
        if not 0.0 <= getattr(m, name) < 1.0:
            raise ConfigError(f"config: model.{name} must be in [0, 1), got {getattr(m, name)}")
    _positive("data.seq_len", d.seq_len)
    if d.seq_len < 8:
        raise ConfigError(f"config: data.seq_len must be at least 8, got {d.seq_len}")
    if d.seq_len > m.max_position_embeddings:
        raise ConfigError(f"config: data.seq_len={d.seq_len} exceeds model.max_position_embeddings="
                          f"{m.max_position_embeddings}")
    if d.prepared and d.corpus:
        raise ConfigError("config: give data.prepared or data.corpus, not both (prepared data is already packed)")
    if d.vocab_size < 10:
        raise ConfigError(f"config: data.vocab_size must be at least 10, got {d.vocab_size}")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"config: data.eval_fraction must be in [0, 1), got {d.eval_fraction}")
    if d.eval_fraction and d.eval_prepared:
        raise ConfigError("config: give data.eval_fraction or data.eval_prepared, not both")
    if not 0.0 <= d.short_seq_prob <= 1.0:
        raise ConfigError(f"config: data.short_seq_prob must be in [0, 1], got {d.short_seq_prob}")
    if not 0.0 < o.mask_prob < 1.0:
        raise ConfigError(f"config: objective.mask_prob must be in (0, 1), got {o.mask_prob}")
    if not 0.0 <= o.mask_token_prob <= 1.0:
        raise ConfigError(f"config: objective.mask_token_prob must be in [0, 1], got {o.mask_token_prob}")
    if not 0.0 <= o.random_token_prob <= 1.0 - o.mask_token_prob:
        raise ConfigError(f"config: objective.random_token_prob must be in [0, 1 - objective.mask_token_prob], "
                          f"got {o.random_token_prob}")
    _positive("objective.max_ngram", o.max_ngram)
    if o.max_predictions < 0:
        raise ConfigError(f"config: objective.max_predictions must be >= 0 (0: derived from objective.mask_prob "
                          f"and data.seq_len), got {o.max_predictions}")
    if o.max_predictions > d.seq_len:
        raise ConfigError(f"config: objective.max_predictions={o.max_predictions} exceeds data.seq_len={d.seq_len}")
    _positive("objective.temperature", o.temperature)
    if o.sampler not in ("inverse_cdf", "gumbel"):
        raise ConfigError(f"config: objective.sampler must be inverse_cdf or gumbel, got {o.sampler!r}")
    for name in ("steps", "batch_size", "grad_accum_steps", "log_every"):
        _positive(f"train.{name}", getattr(t, name))
    if t.stop_after < 0:
        raise ConfigError(f"config: train.stop_after must be >= 0, got {t.stop_after}")
    if t.eval_every < 0:
        raise ConfigError(f"config: train.eval_every must be >= 0 (0: no held-out evaluation), got {t.eval_every}")
    _positive("train.eval_batches", t.eval_batches)
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(f"config: train.grad_accum_steps={t.grad_accum_steps} does not divide "
                          f"train.batch_size={t.batch_size}")
    if config.optimizer.kind not in ("adamw", "lamb"):
        raise ConfigError(f"config: optimizer.kind must be adamw or lamb, got {config.optimizer.kind!r}")
    _positive("optimizer.learning_rate", config.optimizer.learning_rate)
    if config.optimizer.clip_norm < 0:
        raise ConfigError(f"config: optimizer.clip_norm must be >= 0 (0: off), got {config.optimizer.clip_norm}")
    if s.kind not in ("linear", "polynomial", "electra"):
        raise ConfigError(f"config: schedule.kind must be linear, polynomial or electra, got {s.kind!r}")
    if s.warmup_steps < 0:
        raise ConfigError(f"config: schedule.warmup_steps must be >= 0, got {s.warmup_steps}")
    bounds = (0, *s.restarts, t.steps)
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise ConfigError(f"config: schedule.restarts={list(s.restarts)} must increase strictly inside "
                          f"(0, train.steps={t.steps})")
    if s.warmup_steps >= min(b - a for a, b in zip(bounds, bounds[1:])):
        raise ConfigError(f"config: schedule.warmup_steps={s.warmup_steps} must be shorter than train.steps "
                          f"and every restart period")
    _positive("checkpoint.every_steps", config.checkpoint.every_steps)
    if config.checkpoint.every_minutes < 0:
        raise ConfigError(f"config: checkpoint.every_minutes must be >= 0 (0: off), got "
                          f"{config.checkpoint.every_minutes}")
    _positive("checkpoint.keep", config.checkpoint.keep)
    validate_distill(config)
    validate_mesh(config, num_devices)


def validate_distill(config: Config) -> None:
    """The distillation fields that need no teacher (the layer map is checked against it in `distill`)."""
    k = config.distill
    weights = ("hidden_weight", "attention_weight", "logit_weight", "mlm_weight")
    for name in weights:
        if getattr(k, name) < 0:
            raise ConfigError(f"config: distill.{name} must be >= 0, got {getattr(k, name)}")
    if k.teacher and not any(getattr(k, name) for name in weights):
        raise ConfigError("config: every distill.*_weight is 0; give at least one loss a weight")
    _positive("distill.temperature", k.temperature)
    if k.student_layers < 0:
        raise ConfigError(f"config: distill.student_layers must be >= 0, got {k.student_layers}")
    if k.teacher and k.attention_weight and config.model.attention != "einsum":
        raise ConfigError(f"config: distill.attention_weight needs the attention probabilities, which only "
                          f"model.attention=einsum makes (got {config.model.attention}); set model.attention=einsum "
                          f"or distill.attention_weight=0")


def mesh_shape(config: Config, num_devices: int) -> tuple[int, int, int]:
    shape = [config.mesh.data, config.mesh.fsdp, config.mesh.tensor]
    names = ("mesh.data", "mesh.fsdp", "mesh.tensor")
    if shape.count(-1) > 1:
        raise ConfigError("config: at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    for name, size in zip(names, shape):
        if size == 0 or size < -1:
            raise ConfigError(f"config: {name} must be positive or -1, got {size}")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ConfigError(f"config: mesh {shape} cannot be filled from {num_devices} devices "
                              f"({known} does not divide {num_devices})")
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ConfigError(f"config: mesh data*fsdp*tensor = {math.prod(shape)} does not match the "
                          f"{num_devices} available devices")
    return tuple(shape)


def validate_mesh(config: Config, num_devices: int | None) -> None:
    if num_devices is None:
        return
    data, fsdp, tensor = mesh_shape(config, num_devices)
    t, m = config.train, config.model
    micro = t.batch_size // t.grad_accum_steps
    if micro % (data * fsdp):
        raise ConfigError(f"config: micro-batch {micro} (train.batch_size / train.grad_accum_steps) is not "
                          f"divisible by the data axes mesh.data*mesh.fsdp = {data * fsdp}")
    checks = [("model.num_heads", m.num_heads, "mesh.tensor", tensor),
              ("model.intermediate_size", m.intermediate_size, "mesh.tensor", tensor),
              ("model.hidden_size", m.hidden_size, "mesh.fsdp", fsdp),
              ("model.embedding_size", m.embedding_size, "mesh.fsdp", fsdp)]
    if m.architecture == "electra":
        checks += [("generator heads (from model.generator_fraction)", m.generator_num_heads, "mesh.tensor", tensor),
                   ("generator hidden size (from model.generator_fraction)", m.generator_hidden_size, "mesh.fsdp",
                    fsdp)]
    for name, size, axis, axis_size in checks:
        if size % axis_size:
            raise ConfigError(f"config: {name}={size} is not divisible by {axis}={axis_size}")
