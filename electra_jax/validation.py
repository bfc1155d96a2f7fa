"""Every impossible combination in a `Config`, each reported as one `ConfigError` line naming the field,
before any model is built or compiled; `num_devices` adds the checks against the mesh."""
from __future__ import annotations

import math

from electra_jax.config import ARCHITECTURES, ATTENTION, OPS, REMAT, Config, ConfigError

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
    if m.remat not in REMAT:
        raise ConfigError(f"config: model.remat must be {', '.join(REMAT)}, got {m.remat!r}")
    if m.ops not in OPS:
        raise ConfigError(f"config: model.ops must be {', '.join(OPS)}, got {m.ops!r}")
    if m.attention not in ATTENTION:
        raise ConfigError(f"config: model.attention must be {', '.join(ATTENTION)}, got {m.attention!r}")
    if m.attention != "einsum" and m.attention_dropout_rate > 0:
        raise ConfigError(f"config: model.attention={m.attention} has no attention dropout; set "
                          f"model.attention_dropout_rate=0 or model.attention=einsum")
    if m.attention == "cudnn" and m.dtype == "float32":
        raise ConfigError("config: model.attention=cudnn (cuDNN flash attention) runs in bfloat16 only; set "
                          "model.dtype=auto or bfloat16, or model.attention=einsum")
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
    if m.generator_layers < 0:
        raise ConfigError(f"config: model.generator_layers must be >= 0 (0: as many as model.num_layers), "
                          f"got {m.generator_layers}")
    if o.embedding_sharing not in ("full", "gdes", "none"):
        raise ConfigError(f"config: objective.embedding_sharing must be full, gdes or none, got {o.embedding_sharing!r}")
    if m.architecture != "electra":
        for name, value, default in (("model.generator_layers", m.generator_layers, 0),
                                     ("objective.embedding_sharing", o.embedding_sharing, "full")):
            if value != default:
                raise ConfigError(f"config: {name}={value} is an ELECTRA option (a generator and a discriminator); "
                                  f"a {m.architecture} model has one tower: leave it out")
    if o.whole_word_masking and m.architecture == "albert":
        raise ConfigError("config: objective.whole_word_masking is an ELECTRA and BERT option; ALBERT masks whole-word "
                          "n-grams by its own rule (up to objective.max_ngram)")
    if m.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"config: model.dtype must be auto, float32 or bfloat16, got {m.dtype!r}")
    if m.param_dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"config: model.param_dtype must be float32 or bfloat16, got {m.param_dtype!r}")
    for name in ("dropout_rate", "attention_dropout_rate"):
        if not 0.0 <= getattr(m, name) < 1.0:
            raise ConfigError(f"config: model.{name} must be in [0, 1), got {getattr(m, name)}")
    if d.prepared and d.corpus:
        raise ConfigError("config: give data.prepared or data.corpus, not both (prepared data is already packed)")
    if d.vocab_size < 10:
        raise ConfigError(f"config: data.vocab_size must be at least 10, got {d.vocab_size}")
    if not 0.0 <= d.eval_fraction < 1.0:
        raise ConfigError(f"config: data.eval_fraction must be in [0, 1), got {d.eval_fraction}")
    if d.eval_fraction and d.eval_prepared:
        raise ConfigError("config: give data.eval_fraction or data.eval_prepared, not both")
    if d.read_threads < -1:
        raise ConfigError(f"config: data.read_threads must be >= 0, or -1 (none on a CPU, 8 on TPU and GPU hosts), "
                          f"got {d.read_threads}")
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
    _positive("objective.temperature", o.temperature)
    if o.sampler not in ("inverse_cdf", "gumbel"):
        raise ConfigError(f"config: objective.sampler must be inverse_cdf or gumbel, got {o.sampler!r}")
    for name in ("steps", "grad_accum_steps", "log_every"):
        _positive(f"train.{name}", getattr(t, name))
    if t.stop_after < 0:
        raise ConfigError(f"config: train.stop_after must be >= 0, got {t.stop_after}")
    if t.eval_every < 0:
        raise ConfigError(f"config: train.eval_every must be >= 0 (0: no held-out evaluation), got {t.eval_every}")
    _positive("train.eval_batches", t.eval_batches)
    if config.optimizer.kind not in ("adamw", "lamb"):
        raise ConfigError(f"config: optimizer.kind must be adamw or lamb, got {config.optimizer.kind!r}")
    _positive("optimizer.learning_rate", config.optimizer.learning_rate)
    if config.optimizer.clip_norm < 0:
        raise ConfigError(f"config: optimizer.clip_norm must be >= 0 (0: off), got {config.optimizer.clip_norm}")
    if s.kind not in ("linear", "polynomial", "electra", "bert"):
        raise ConfigError(f"config: schedule.kind must be linear, polynomial, electra or bert, got {s.kind!r}")
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
    if t.phases:
        validate_phases(config, num_devices)  # each phase's shapes; the run's own data.seq_len and batch unused
    else:
        validate_shape(config, num_devices)


def validate_platform(config: Config, platform: str, device_kind: str = "") -> None:
    """What the platform the step is compiled for ("cpu", "gpu"/"cuda", "tpu"; `device_kind` where the devices
    are at hand, e.g. "TPU v3") cannot run, after `precision.for_platform` has resolved model.dtype for it."""
    m = config.model
    if m.attention == "splash" and (platform != "tpu" or device_kind.startswith(("TPU v2", "TPU v3"))):
        where = device_kind if platform == "tpu" and device_kind else platform
        raise ConfigError(f"config: model.attention=splash (Pallas splash attention) runs on TPU v4 and later "
                          f"only, and this step is compiled for {where}; set model.attention=einsum")
    if m.attention == "cudnn" and platform not in ("gpu", "cuda"):
        raise ConfigError(f"config: model.attention=cudnn (cuDNN flash attention) runs on NVIDIA GPUs only, and this "
                          f"step is compiled for {platform}; set model.attention=einsum")
    if m.attention == "cudnn" and m.dtype != "bfloat16":
        raise ConfigError(f"config: model.attention=cudnn runs in bfloat16 only, and model.dtype is {m.dtype} here; "
                          f"set model.dtype=bfloat16 or model.attention=einsum")


def validate_shape(config: Config, num_devices: int | None) -> None:
    """What depends on the batch shape (data.seq_len x train.batch_size): a run's, or one phase's."""
    m, d, o, t = config.model, config.data, config.objective, config.train
    _positive("data.seq_len", d.seq_len)
    if d.seq_len < 8:
        raise ConfigError(f"config: data.seq_len must be at least 8, got {d.seq_len}")
    if d.seq_len > m.max_position_embeddings:
        raise ConfigError(f"config: data.seq_len={d.seq_len} exceeds model.max_position_embeddings="
                          f"{m.max_position_embeddings}")
    if m.attention == "splash" and d.seq_len % 128:
        raise ConfigError(f"config: model.attention=splash runs on blocks of 128 positions, and data.seq_len="
                          f"{d.seq_len} is no multiple of 128; set data.seq_len to one or model.attention=einsum")
    if o.max_predictions > d.seq_len:
        raise ConfigError(f"config: objective.max_predictions={o.max_predictions} exceeds data.seq_len={d.seq_len}")
    _positive("train.batch_size", t.batch_size)
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(f"config: train.grad_accum_steps={t.grad_accum_steps} does not divide "
                          f"train.batch_size={t.batch_size}")
    validate_mesh(config, num_devices)


def validate_phases(config: Config, num_devices: int | None) -> None:
    """A length curriculum: the phases together, then each phase's config as a run of its own."""
    from electra_jax.phases import run_phases
    t, d, m = config.train, config.data, config.model
    for i, phase in enumerate(t.phases):
        for name in ("steps", "seq_len", "batch_size"):
            _positive(f"train.phases[{i}].{name}", getattr(phase, name))
    total = sum(phase.steps for phase in t.phases)
    if total != t.steps:
        raise ConfigError(f"config: train.phases run {total} steps in all, but train.steps={t.steps}; set "
                          f"train.steps={total} (one learning-rate schedule spans every phase)")
    longest = max(range(len(t.phases)), key=lambda i: t.phases[i].seq_len)
    if t.phases[longest].seq_len > m.max_position_embeddings:
        raise ConfigError(f"config: train.phases[{longest}].seq_len={t.phases[longest].seq_len} exceeds "
                          f"model.max_position_embeddings={m.max_position_embeddings}; the position table is sized "
                          f"once, for the longest phase: set model.max_position_embeddings={t.phases[longest].seq_len}")
    with_data = [bool(phase.prepared or d.prepared) for phase in t.phases]
    if d.corpus and any(phase.prepared for phase in t.phases):
        i = next(i for i, phase in enumerate(t.phases) if phase.prepared)
        raise ConfigError(f"config: train.phases[{i}].prepared names prepared data, but data.corpus is given (the run "
                          f"packs its corpus at each phase's length); give one or the other")
    if any(with_data) and not all(with_data):
        i = with_data.index(False)
        raise ConfigError(f"config: train.phases[{i}] has no data while other phases have prepared folders; set "
                          f"train.phases[{i}].prepared to a folder prepared with --seq-len {t.phases[i].seq_len}")
    lengths = sorted({phase.seq_len for phase in t.phases})
    if d.eval_prepared and len(lengths) > 1:
        raise ConfigError(f"config: data.eval_prepared holds one length, but train.phases run at "
                          f"{', '.join(map(str, lengths))} tokens; hold documents out of each phase's data instead "
                          f"(data.eval_fraction, or prepare --eval-fraction)")
    for phase in run_phases(config):
        try:
            validate_shape(phase.config, num_devices)
        except ConfigError as err:  # named as the phase's fields, which set these
            message = str(err).removeprefix("config: ").replace("data.seq_len", f"{phase.field}.seq_len")
            raise ConfigError(f"config: {message.replace('train.batch_size', f'{phase.field}.batch_size')}") from None


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
    if k.teacher and config.train.phases:
        raise ConfigError("config: train.phases is a pretraining curriculum; a distillation runs at one data.seq_len "
                          "and train.batch_size: leave train.phases out")
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
