"""Task-agnostic distillation of a BERT teacher into a student made of its embeddings and bottom K layers
(LightMBERT; the distilled Swedish mBERT), through the pretraining trainer: same data, mesh, step skeleton,
checkpoints, preemption and resume.

The student is a BERT of the teacher's width with `distill.student_layers` layers, initialised from the
teacher's embeddings, layers 0..K-1, pooler and MLM head. The teacher runs in inference mode only; its
parameters are an argument of the jitted step (sharded like the student's), never part of the checkpoint:
`teacher.json` in the run directory records a digest of them and a resume with another teacher is refused.

The losses and which parameters stay frozen: `objectives/distill.py`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.config import Config, ConfigError, DistillConfig, ModelConfig
from electra_jax.data.text_tokenizer import copy_tokenizer
from electra_jax.families import FAMILIES, family_of
from electra_jax.mesh import logical_rules, make_mesh
from electra_jax.models.bert import Bert
from electra_jax.objectives.distill import DistillObjective, frozen_label, needs_masking
from electra_jax.run_dir import (check_inputs, check_teacher_record, hold_run_dir, load_run_params, special_ids,
                                 start_run)
from electra_jax.state import TrainState, build_optimizer
from electra_jax.storage import staged_folder
from electra_jax.train import setup_training, train_loop
from electra_jax.validation import validate

BERT = FAMILIES["bert"]  # the one family distillation reads and writes

# What a student takes from its teacher: the shape of the model. Compute settings (dtype, remat, attention
# implementation) and dropout come from the run's own config.
TEACHER_FIELDS = ("architecture", "vocab_size", "embedding_size", "hidden_size", "num_heads", "intermediate_size",
                  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range")


# ---------------------------------------------------------------------------- teacher and student

def load_teacher(source: str | Path, config: Config, log=print):
    """(teacher ModelConfig, parameters as numpy, write(tokenizer folder), names of parameters its file lacked)
    from a run directory (e.g. one that `electra-jax import` wrote) or a Hugging Face BERT folder, read in
    memory."""
    source = Path(source)
    if (source / "config.yaml").is_file():
        teacher_config, params, step = load_run_params(source, None)
        log(f"teacher: {source} ({teacher_config.model.architecture}, step {step})")
        return teacher_config.model, params, lambda out: copy_tokenizer(source / "tokenizer", out), ()
    if (source / "config.json").is_file():
        from electra_jax.hf.importer import HFImportError, read_single
        model_type = json.loads((source / "config.json").read_text()).get("model_type")
        if model_type != BERT.hf.model_type:
            raise HFImportError(f"distill: the teacher {source} is a {model_type!r} model; distillation "
                                f"takes a BERT (model_type {BERT.hf.model_type!r})")
        teacher_config, state, write_tokenizer, fresh = read_single(source, config, BERT,
                                                                    log=lambda m: log(f"teacher: {m}"))
        return teacher_config.model, jax.tree.map(np.asarray, state.params), write_tokenizer, fresh
    raise FileNotFoundError(f"distill: the teacher {source} is neither a run directory (config.yaml) nor a "
                            f"Hugging Face model folder (config.json)")


def student_model(teacher: ModelConfig, run: ModelConfig, layers: int) -> ModelConfig:
    return dataclasses.replace(run, **{name: getattr(teacher, name) for name in TEACHER_FIELDS}, num_layers=layers)


def student_params(teacher_params: dict, layers: int) -> dict:
    """The teacher's embeddings, bottom `layers` layers, pooler and MLM head."""
    return {**teacher_params, "encoder": {f"layer_{i}": teacher_params["encoder"][f"layer_{i}"]
                                          for i in range(layers)}}


def layer_map(k: DistillConfig, student_layers: int, teacher_layers: int) -> tuple[tuple[int, int], ...]:
    pairs = k.layer_map or ((student_layers, teacher_layers),)
    for s, t in pairs:
        if not (0 <= s <= student_layers and 0 <= t <= teacher_layers):
            raise ConfigError(f"config: distill.layer_map pair {s}:{t} is out of range: student layers 0..{student_layers}, "
                              f"teacher layers 0..{teacher_layers} (0 is the embedding output)")
        if k.attention_weight and (s == 0 or t == 0):
            raise ConfigError(f"config: distill.layer_map pair {s}:{t}: the embedding output (0) has no attention; "
                              f"map layers >= 1 or set distill.attention_weight=0")
    return tuple(pairs)


def distill_optimizer(config: Config):
    """The run's schedule and optimizer on the trained parameters; zero updates (and no moments) for the frozen."""
    schedule, tx = build_optimizer(config)
    return schedule, optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                                           frozen_label(config.distill))


def teacher_digest(params: dict, fresh: tuple[str, ...] = ()) -> str:
    """sha256 of the teacher's parameters, leaving out those its file lacked (`fresh`, e.g. "pooler/kernel"):
    they depend on the seed, not on the teacher."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if "/".join(key.key for key in path) in fresh:
            continue
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- the objective

# ---------------------------------------------------------------------------- the command

def on_mesh(tree: dict, shardings):
    """Host arrays -> global arrays of these shardings (each process holds the whole tree). Each shard is a
    copy: on a CPU a device array may otherwise alias the host memory it came from, and the student's arrays
    (donated every step) come from the same host arrays as the teacher's."""
    return jax.tree.map(lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: np.array(x[index])),
                        tree, shardings)


def param_shardings(model: ModelConfig, config: Config, mesh):
    module = Bert(model)
    ids = jnp.zeros((1, config.data.seq_len), jnp.int32)
    boxed = jax.eval_shape(lambda rng: module.init({"params": rng}, ids, ids, ids, ids[:, :1])["params"],
                           jax.random.key(0))
    return nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, logical_rules(config))


def resolve(config: Config, log=print):
    """(student config, teacher model config, teacher parameters, write(tokenizer), layer map, names of the
    teacher's freshly initialised parameters): every check that needs the teacher, before any data work or
    compile."""
    k = config.distill
    if not k.teacher:
        raise ConfigError("distill: no teacher; give --teacher RUN_DIR|HF_DIR (distill.teacher)")
    if k.student_layers < 1:
        raise ConfigError("distill: give the student's depth with --student-layers K (distill.student_layers)")
    teacher, teacher_params, write_tokenizer, fresh = load_teacher(k.teacher, config, log)
    if family_of(teacher) is not BERT:
        raise ConfigError(f"distill: the teacher {k.teacher} is an {teacher.architecture} model; distillation takes "
                          f"a BERT (import one with `electra-jax import`)")
    if k.student_layers > teacher.num_layers:
        raise ConfigError(f"distill: --student-layers {k.student_layers} exceeds the teacher's {teacher.num_layers} "
                          f"layers")
    if k.logit_weight and any(name.startswith("predictions_") for name in fresh):
        raise ConfigError(f"distill: the teacher {k.teacher} has no MLM head (a BertModel), so there are no teacher "
                          f"logits to distil; set distill.logit_weight=0 or give a BertForMaskedLM / "
                          f"BertForPreTraining")
    model = student_model(teacher, config.model, k.student_layers)
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(
        config.data, seq_len=min(config.data.seq_len, model.max_position_embeddings)))
    validate(config, jax.device_count())
    teacher = dataclasses.replace(model, num_layers=teacher.num_layers)
    return (config, teacher, teacher_params, write_tokenizer, layer_map(k, k.student_layers, teacher.num_layers),
            fresh)


def distill(config: Config, run_dir: str | Path, log=print, progress: bool = True) -> dict:
    """Distil (or resume distilling) `config.distill.teacher` into a student in `run_dir`; returns the summary
    of `train.train_loop`. The student's checkpoints are a BERT run directory: `electra-jax export` writes it
    as a BertForMaskedLM and `finetune --init` starts from it."""
    run_dir = Path(run_dir)
    check_inputs(config)
    config, teacher_model, teacher_params, write_tokenizer, pairs, fresh = resolve(config, log)
    k = config.distill
    record = {"source": str(Path(k.teacher).resolve()), "digest": teacher_digest(teacher_params, fresh),
              "teacher_layers": teacher_model.num_layers, "student_layers": k.student_layers,
              "layer_map": [list(p) for p in pairs], "freeze_embeddings": k.freeze_embeddings,
              "masked": needs_masking(k)}
    with hold_run_dir(run_dir, "distill"):  # makes the run directory
        is_main = jax.process_index() == 0
        check_teacher_record(run_dir, record, write=is_main)
        if is_main and not (run_dir / "tokenizer").is_dir():  # the teacher's vocabulary is the student's
            with staged_folder(run_dir / "tokenizer", "distill") as staging:
                write_tokenizer(staging)
        config, data_folders, metadata, log = start_run(config, run_dir, log)
        embeddings = "frozen" if config.distill.freeze_embeddings else "trained"
        log(f"distilling {teacher_model.num_layers} -> {config.model.num_layers} layers, layer map "
            f"{', '.join(f'{s}:{t}' for s, t in pairs)}, embeddings {embeddings}")

        mesh = make_mesh(config)
        teacher_shardings = param_shardings(teacher_model, config, mesh)
        teacher = on_mesh(teacher_params, teacher_shardings)
        objective = DistillObjective(config, teacher_model, special_ids(metadata), pairs)
        training = setup_training(config, mesh, special_ids(metadata), objective=objective,
                                  optimizer=distill_optimizer(config), frozen_shardings=teacher_shardings)
        tx, shardings = training.tx, training.shardings
        new_state = jax.jit(lambda params: TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                                      opt_state=tx.init(params)),
                            out_shardings=shardings, donate_argnums=0)

        def init():
            # Fresh buffers from the host copy: the student never shares (and so never donates) the teacher's.
            params = student_params(teacher_params, config.distill.student_layers)
            return new_state(on_mesh(params, shardings.params))

        return train_loop(config, run_dir, [training], data_folders, init, log, progress, frozen=teacher)
