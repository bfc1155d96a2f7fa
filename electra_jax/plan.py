"""`electra-jax plan`: what one device of a target accelerator holds for a config, before anything is rented.

Per device, in the target's compute dtype (`precision.py`) and mesh:
- parameters, optimizer state and gradients: each tensor's shard under the logical axis rules (float32);
  with gradient accumulation a second set of gradients, the running sum;
- saved activations: the residuals JAX keeps for the backward pass of the family's real loss on one
  per-device micro-batch (batch / (mesh.data x mesh.fsdp) / train.grad_accum_steps rows), under the config's
  remat policy, counted from the jaxpr of `jax.vjp` (the residuals `jax.ad_checkpoint.print_saved_residuals`
  lists), the ones that are the loss's own inputs (parameters, batch) left out;
- the backward pass's working set: the widest layer's residuals without remat, for one micro-batch. Whatever
  the policy, a layer's backward holds them (recomputed under remat), with its attention probabilities,
  as temporaries; the compiler's other temporaries depend on its fusion and scheduling, and `HEADROOM` (15%)
  of the device's memory is kept for them: a plan fits when the rest holds the total.

`choose` walks (train.grad_accum_steps, model.remat) from the cheapest step: fewest micro-batches first (each
one re-reads every weight and shrinks every matmul), then the remat policies in `config.REMAT` order (each
keeps a subset of what the one before keeps, so each recomputes more), and returns the first plan that fits.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from electra_jax.config import REMAT, Config, ConfigError

GiB = 2 ** 30
HEADROOM = 0.15  # of a device's memory, kept for XLA's temporaries and the allocator


class Target(NamedTuple):
    name: str
    platform: str  # "tpu" | "gpu": what model.dtype=auto resolves for
    devices: int  # JAX devices (a TPU v2/v3 chip shows its two cores as two devices)
    memory_gib: float  # high-bandwidth memory per JAX device
    device_kind: str  # the name `bench.PEAKS` lists its peak FLOP/s under

    @property
    def peak_bf16(self) -> float:
        """Dense bf16 matmul FLOP/s per JAX device (bench.PEAKS, the table `bench` computes MFU against)."""
        from electra_jax.bench import table_peak
        return table_peak(self.device_kind, "bfloat16")


TARGETS = {t.name: t for t in (
    Target("v2-8", "tpu", 8, 8.0, "TPU v2"),  # 4 chips x 2 cores, 8 GiB per core
    Target("v3-8", "tpu", 8, 16.0, "TPU v3"),  # 4 chips x 2 cores, 16 GiB per core
    Target("v4-8", "tpu", 4, 32.0, "TPU v4"),  # 4 chips (one device each), 32 GiB per chip
    Target("v5e-8", "tpu", 8, 16.0, "TPU v5 lite"),  # 8 chips, 16 GiB each
    Target("a100-40g", "gpu", 1, 40.0, "A100"),
    Target("a100-80g", "gpu", 1, 80.0, "A100"),
    Target("h100-80g", "gpu", 1, 80.0, "H100"),
)}


@dataclasses.dataclass(frozen=True)
class Plan:
    target: Target
    config: Config  # model.dtype resolved for the target
    mesh: tuple[int, int, int]  # (data, fsdp, tensor)
    micro_rows: int  # rows of one micro-batch on one device
    parameters: int  # bytes per device
    optimizer: int
    gradients: int
    activations: int  # saved for the backward pass of one micro-batch
    working_set: int  # one layer's backward on one micro-batch
    teacher: int = 0  # a distillation teacher's frozen parameters
    attention: str = "einsum"  # model.attention as asked for (cudnn is counted as jax: see for_target)

    @property
    def total(self) -> int:
        return (self.parameters + self.optimizer + self.gradients + self.activations + self.working_set
                + self.teacher)

    @property
    def usable(self) -> float:
        return self.target.memory_gib * GiB * (1 - HEADROOM)

    @property
    def fits(self) -> bool:
        return self.total <= self.usable

    def report(self) -> str:
        t, c, (data, fsdp, tensor) = self.target, self.config, self.mesh
        accum = c.train.grad_accum_steps
        rows = [("parameters (float32)", self.parameters), *([("teacher parameters (frozen)", self.teacher)]
                                                             if self.teacher else []),
                ("optimizer state", self.optimizer),
                ("gradients" + (" (+ the running sum)" if accum > 1 else ""), self.gradients),
                (f"saved activations ({self.micro_rows} rows x {c.data.seq_len} tokens)", self.activations),
                ("one layer's backward (working set)", self.working_set)]
        width = max(len(label) for label, _ in rows) + 2
        return "\n".join([
            f"target:       {t.name}: {t.devices} x {t.device_kind} device, {t.memory_gib:.1f} GiB and "
            f"{t.peak_bf16 / 1e12:.1f} bf16 TFLOP/s each",
            f"mesh:         data={data} fsdp={fsdp} tensor={tensor}; batch {c.train.batch_size} = {data * fsdp} x "
            f"{accum} micro-batch(es) x {self.micro_rows} rows of {c.data.seq_len} tokens",
            f"precision:    {c.model.dtype} compute, {c.model.param_dtype} parameters; remat {c.model.remat}; "
            f"attention {self.attention}",
            "per device:",
            *[f"  {label:<{width}}{size / GiB:7.2f} GiB" for label, size in rows],
            f"  {'other XLA temporaries':<{width}}not counted: {HEADROOM:.0%} of the memory is kept for them",
            f"  {'total':<{width}}{self.total / GiB:7.2f} GiB of {self.usable / GiB:.1f} usable",
            f"fits: {'yes' if self.fits else 'no'}, {self.total / GiB:.1f} of {t.memory_gib:.1f} GiB per device",
        ])


def for_target(config: Config, target: Target) -> Config:
    """The config as it runs on the target: dtype resolved, plain XLA ops (a CPU kernel is never lowered
    there), the vocabulary from data.vocab_size where the tokenizer would give it. cuDNN attention, which JAX
    will not trace without cuDNN, is counted as XLA's (`jax`): an upper bound, as flash attention keeps no
    L x L probabilities for the backward pass."""
    from electra_jax.precision import for_platform
    attention = "jax" if config.model.attention == "cudnn" else config.model.attention
    model = dataclasses.replace(config.model, ops="xla", attention=attention,
                                vocab_size=config.model.vocab_size or config.data.vocab_size)
    return for_platform(dataclasses.replace(config, model=model), target.platform)


def shard_bytes(abstract_tree, specs, axis_sizes: dict[str, int]) -> int:
    """Bytes of one device's shards of every array in `abstract_tree` under mesh-axis PartitionSpecs."""
    import jax

    def one(leaf, spec) -> int:
        shape = list(leaf.shape)
        for dim, axes in enumerate(tuple(spec or ())):
            for axis in (axes,) if isinstance(axes, str) else (axes or ()):
                shape[dim] = -(-shape[dim] // axis_sizes[axis])
        return math.prod(shape) * leaf.dtype.itemsize

    return sum(jax.tree.leaves(jax.tree.map(one, abstract_tree, specs, is_leaf=lambda x: x is None)))


SPECIALS = dict(pad=0, unk=1, cls=2, sep=3, mask=4)


class Parts(NamedTuple):
    """What a config trains: its (student's) config, module, objective and optimizer; a distillation's frozen
    teacher module (None otherwise)."""
    config: Config
    model: object
    objective: object
    tx: object
    teacher: object


def training_parts(config: Config) -> Parts:
    """A pretraining config's model and objective, or, for a distillation (distill.student_layers > 0), the
    student of that many layers against a teacher of the config's model shape, as `electra-jax distill` builds
    them (its teacher's shape, which `distill` reads from the teacher, is the config's here)."""
    import numpy as np

    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.families import family_of
    from electra_jax.state import build_model, build_optimizer

    specials = SpecialIds(**SPECIALS)
    k = config.distill
    if k.student_layers:
        from electra_jax.distill import distill_optimizer, layer_map
        from electra_jax.models.bert import Bert
        from electra_jax.objectives.distill import DistillObjective
        teacher = config.model
        config = dataclasses.replace(config, model=dataclasses.replace(teacher, num_layers=k.student_layers))
        objective = DistillObjective(config, teacher, specials, layer_map(k, k.student_layers, teacher.num_layers))
        return Parts(config, build_model(config), objective, distill_optimizer(config)[1], Bert(teacher))
    family, model = family_of(config.model), build_model(config)
    vocab = config.model.vocab_size
    word_starts = np.random.default_rng(0).random(vocab) < 0.7 if family.needs_word_starts(config) else None
    return Parts(config, model, family.objective(config, model, specials, word_starts), build_optimizer(config)[1],
                 None)


def saved_activation_bytes(config: Config, rows: int) -> int:
    """Bytes of the residuals JAX saves for the backward pass of the family's loss on `rows` rows (one
    device's micro-batch), the loss's own inputs (parameters, a teacher's, the batch) left out. Traced, never
    run: any size costs the same."""
    import jax

    from electra_jax.bench import synthetic_batch

    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=rows, grad_accum_steps=1))
    parts = training_parts(config)
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype)
             for name, array in synthetic_batch(parts.config, parts.config.model.vocab_size).items()}
    params = jax.eval_shape(lambda: _init_params(parts.config, parts.model))
    frozen = jax.eval_shape(lambda: _init_params(parts.config, parts.teacher)) if parts.teacher else None

    def residuals(params, frozen, batch):
        keys = jax.random.split(jax.random.key(0), 4)
        whole, counts = parts.objective.prepare((keys[0], keys[1]), batch)
        _, backward = jax.vjp(lambda p: parts.objective.loss(p, whole, keys[2:], counts, frozen)[0], params)
        return backward

    return _residual_bytes(jax.make_jaxpr(residuals)(params, frozen, batch).jaxpr)


def layer_working_set_bytes(config: Config, rows: int) -> int:
    """Bytes of the residuals of one Transformer layer of the model's width without remat, on `rows` rows: what
    its backward pass holds at once (recomputed first under remat). Its input and parameters left out."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from electra_jax.models.layers import TransformerBlock
    from electra_jax.precision import compute_dtype

    model = dataclasses.replace(config.model, remat="none")
    block = TransformerBlock(model)
    x = jax.ShapeDtypeStruct((rows, config.data.seq_len, model.hidden_size), compute_dtype(model))
    bias = jax.ShapeDtypeStruct((rows, 1, 1, config.data.seq_len), jnp.float32)
    params = jax.eval_shape(lambda x, b: nn.unbox(block.init({"params": jax.random.key(0)}, x, b, True)), x, bias)

    def residuals(params, x, bias):
        keys = {"dropout": jax.random.key(0)}
        return jax.vjp(lambda p, x: block.apply(p, x, bias, False, rngs=keys), params, x)[1]
    return _residual_bytes(jax.make_jaxpr(residuals)(params, x, bias).jaxpr)


def _residual_bytes(jaxpr) -> int:
    """Bytes of a jaxpr's outputs that are not its inputs (nor literals): the residuals of a `jax.vjp`."""
    inputs = {id(v) for v in jaxpr.invars}
    saved = {id(v): v.aval for v in jaxpr.outvars if hasattr(v, "aval") and id(v) not in inputs
             and type(v).__name__ != "Literal"}
    return sum(math.prod(aval.shape) * aval.dtype.itemsize for aval in saved.values())


def _init_params(config: Config, model):
    import flax.linen as nn
    import jax

    from electra_jax.state import _dummy_inputs
    return nn.unbox(model.init({"params": jax.random.key(0)}, *_dummy_inputs(config))["params"])


def plan(config: Config, target: Target) -> Plan:
    """The per-device memory of `config` on `target` (validated against the target's device count)."""
    import jax
    import flax.linen as nn

    from electra_jax.mesh import logical_rules
    from electra_jax.state import boxed_abstract_state
    from electra_jax.validation import mesh_shape, validate

    attention = config.model.attention if config.model.attention != "cudnn" else "cudnn (counted as jax: at most)"
    config = for_target(config, target)
    validate(config, target.devices)
    data, fsdp, tensor = mesh = mesh_shape(config, target.devices)
    accum = config.train.grad_accum_steps
    micro_rows = config.train.batch_size // (data * fsdp) // accum
    parts = training_parts(config)
    rules, axis_sizes = logical_rules(config), {"data": data, "fsdp": fsdp, "tensor": tensor}

    def per_device(boxed) -> int:
        specs = jax.tree.map(lambda spec: nn.logical_to_mesh_axes(spec, rules), nn.get_partition_spec(boxed),
                             is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
        return shard_bytes(nn.unbox(boxed), specs, axis_sizes)

    boxed = boxed_abstract_state(parts.config, parts.model, parts.tx)
    parameters = per_device(boxed.params)
    teacher = 0
    if parts.teacher is not None:  # frozen, split as the student's parameters are
        from electra_jax.state import _dummy_inputs
        teacher = per_device(jax.eval_shape(lambda: parts.teacher.init({"params": jax.random.key(0)},
                                                                        *_dummy_inputs(config))["params"]))
    gradients = parameters * (2 if accum > 1 else 1)  # float32, sharded as the parameters
    return Plan(target, config, mesh, micro_rows, parameters, per_device(boxed.opt_state), gradients,
                saved_activation_bytes(config, micro_rows), layer_working_set_bytes(config, micro_rows), teacher,
                attention)


def candidates(config: Config, target: Target) -> list[tuple[int, str]]:
    """(grad_accum_steps, remat) from the cheapest step to the dearest: accumulation steps that divide each
    device's rows, then the remat policies in REMAT order."""
    from electra_jax.validation import mesh_shape
    data, fsdp, _ = mesh_shape(config, target.devices)
    local_rows = config.train.batch_size // (data * fsdp)
    return [(accum, remat) for accum in range(1, local_rows + 1) if local_rows % accum == 0 for remat in REMAT]


def with_settings(config: Config, accum: int, remat: str) -> Config:
    return dataclasses.replace(config, model=dataclasses.replace(config.model, remat=remat),
                               train=dataclasses.replace(config.train, grad_accum_steps=accum))


def choose(config: Config, target: Target, log=lambda _: None) -> Plan:
    """The first plan of `candidates` that fits; ConfigError when none does."""
    tried = 0
    for accum, remat in candidates(config, target):
        found = plan(with_settings(config, accum, remat), target)
        tried += 1
        log(f"  grad_accum_steps={accum} remat={remat}: {found.total / GiB:.2f} GiB "
            f"({'fits' if found.fits else 'too much'})")
        if found.fits:
            return found
    raise ConfigError(f"plan: nothing fits a {target.name} device ({tried} settings of train.grad_accum_steps and "
                      f"model.remat tried, down to one row per micro-batch); use a larger target, mesh.fsdp, or a "
                      f"smaller model")


def overrides(found: Plan) -> str:
    c = found.config
    return f"model.remat={c.model.remat} train.grad_accum_steps={c.train.grad_accum_steps}"
