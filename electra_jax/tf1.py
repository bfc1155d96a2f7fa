"""Import google-research's TensorFlow 1 pretraining checkpoints (electra, albert, bert) into a run directory,
optionally with their Adam moments and step, so `electra-jax pretrain` continues a run started with that code.

A checkpoint is `model.ckpt-N.{index,data-*}` (give the prefix, or the folder whose `checkpoint` file names
it). TensorFlow's own reader (`tf.train.load_checkpoint`, the `tf` extra) reads it; TensorFlow is imported
nowhere else. The family is told by the variable names, the sizes by the tensor shapes (ELECTRA) or the
`bert_config.json` / `albert_config.json` beside the checkpoint (ALBERT, BERT), and the variables map through
the TF1 column of `hf/names.py`. Every variable is consumed or named in one report; missing variables and
wrong shapes are one error, before anything is written.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig, load_config, with_overrides
from electra_jax.hf.importer import HFImportError, _listed, read_vocab, write_imported_run
from electra_jax.hf.names import convert, get_path, set_path
from electra_jax.storage import refuse_nonempty
from electra_jax.validation import validate

SLOTS = ("adam_m", "adam_v")  # AdamWeightDecayOptimizer's (BERT, ELECTRA) and LAMB's (ALBERT) moments
STEP = "global_step"


class TF1ImportError(HFImportError):
    """Bad input for `import` of a TF1 checkpoint: one line naming what is wrong."""


# ---------------------------------------------------------------------------- finding and reading

def is_tf1_checkpoint(path: Path) -> bool:
    """A checkpoint prefix (`model.ckpt-N`, beside its .index) or a folder holding one."""
    return Path(f"{path}.index").is_file() or (path.is_dir() and (
        (path / "checkpoint").is_file() or any(path.glob("*.ckpt*.index"))))


def find_checkpoint(path: Path) -> Path:
    """The checkpoint prefix that `path` names: itself, the newest one of its folder's `checkpoint` file (whose
    paths may point at the bucket the run wrote to, so only the file name is kept), or the folder's only one."""
    if Path(f"{path}.index").is_file():
        return path
    if not path.is_dir():
        raise TF1ImportError(f"import: no TF1 checkpoint at {path} (give model.ckpt-N, without .index, or its folder)")
    state = path / "checkpoint"
    if state.is_file():
        named = re.search(r'^model_checkpoint_path:\s*"(.+)"', state.read_text(), re.MULTILINE)
        if named:
            prefix = path / Path(named[1]).name
            if Path(f"{prefix}.index").is_file():
                return prefix
            raise TF1ImportError(f"import: {state} names {named[1]}, but {prefix}.index is not in {path}; copy "
                                 f"that checkpoint's files here or give its prefix")
    prefixes = sorted({p.with_suffix("") for p in path.glob("*.ckpt*.index")}, key=_step_of)
    if not prefixes:
        raise TF1ImportError(f"import: {path} holds no TF1 checkpoint (no *.index file)")
    return prefixes[-1]


def _step_of(prefix: Path) -> int:
    found = re.search(r"-(\d+)$", prefix.name)
    return int(found[1]) if found else 0


def read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    """Every variable of the checkpoint, by TensorFlow's own reader."""
    try:
        import tensorflow as tf
    except ImportError:
        raise TF1ImportError("import: reading a TensorFlow 1 checkpoint needs TensorFlow: "
                             "pip install 'electra-jax[tf]'") from None
    try:
        reader = tf.train.load_checkpoint(str(prefix))
    except (tf.errors.OpError, ValueError) as err:
        raise TF1ImportError(f"import: {prefix} does not read as a TF checkpoint "
                             f"({str(err).splitlines()[0]}); copy all its files again") from None
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


# ---------------------------------------------------------------------------- sizes and settings

def read_json(path: Path | None, what: str) -> dict:
    if path is None:
        return {}
    if not path.is_file():
        raise TF1ImportError(f"import: {what} {path} not found")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TF1ImportError(f"import: {path} is not JSON ({err})") from None
    if not isinstance(value, dict):
        raise TF1ImportError(f"import: {path} must hold a JSON object of hyperparameters")
    return value


def _layers(tensors: dict, scope: str) -> int:
    return len({m[1] for name in tensors if (m := re.match(rf"{scope}/encoder/layer_(\d+)/", name))})


def electra_model(tensors: dict, hparams: dict, config: Config) -> ModelConfig:
    """ELECTRA's sizes from the shapes; heads = max(1, hidden // 64) per tower, as google-research/electra
    derives them, unless the hparams' model_hparam_overrides (or a BERT-style config) give them."""
    if config.objective.embedding_sharing != "full":
        raise TF1ImportError(f"import: google-research/electra's towers share one embedding table; import with "
                             f"objective.embedding_sharing=full, not {config.objective.embedding_sharing}")
    if any(name.startswith("generator/embeddings/") for name in tensors):
        raise TF1ImportError("import: the checkpoint's generator has its own embeddings "
                             "(untied_generator_embeddings=True), which electra-jax's ELECTRA does not represent")
    need = ["electra/embeddings/word_embeddings", "electra/embeddings/position_embeddings",
            "electra/encoder/layer_0/intermediate/dense/kernel", "generator/encoder/layer_0/intermediate/dense/kernel"]
    missing = [name for name in need if name not in tensors]
    if missing:
        raise TF1ImportError(f"import: not a google-research/electra pretraining checkpoint: missing {', '.join(missing)}")
    overrides = {**hparams, **hparams.get("model_hparam_overrides", {})}
    vocab, embedding = tensors["electra/embeddings/word_embeddings"].shape
    hidden, intermediate = tensors["electra/encoder/layer_0/intermediate/dense/kernel"].shape
    gen_hidden, gen_intermediate = tensors["generator/encoder/layer_0/intermediate/dense/kernel"].shape
    layers, gen_layers = _layers(tensors, "electra"), _layers(tensors, "generator")
    model = dataclasses.replace(
        config.model, architecture="electra", vocab_size=vocab, embedding_size=embedding, hidden_size=hidden,
        num_layers=layers, intermediate_size=intermediate,
        num_heads=overrides.get("num_attention_heads", max(1, hidden // 64)),
        max_position_embeddings=tensors["electra/embeddings/position_embeddings"].shape[0],
        type_vocab_size=tensors.get("electra/embeddings/token_type_embeddings", np.zeros((2, 1))).shape[0],
        generator_hidden=gen_hidden, generator_heads=max(1, gen_hidden // 64), generator_intermediate=gen_intermediate,
        generator_fraction=min(1.0, gen_hidden / hidden), generator_layers=0 if gen_layers == layers else gen_layers,
        layer_norm_eps=1e-12, initializer_range=0.02,
        dropout_rate=overrides.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=overrides.get("attention_probs_dropout_prob", 0.1))
    shapes = {"vocab_size": vocab, "embedding_size": embedding, "hidden_size": hidden, "num_hidden_layers": layers,
              "intermediate_size": intermediate}
    differ = [f"{key} {overrides[key]} (the checkpoint's is {value})" for key, value in shapes.items()
              if overrides.get(key) not in (None, value)]
    if differ:
        raise TF1ImportError(f"import: --tf-config disagrees with the checkpoint's shapes: {'; '.join(differ)}")
    return model


# google-research/electra's configure_pretraining.py defaults: what a run used unless its hparams said otherwise.
ELECTRA_TRAINING = {"learning_rate": 5e-4, "lr_decay_power": 1.0, "weight_decay_rate": 0.01,
                    "num_warmup_steps": 10000, "num_train_steps": 1000000, "train_batch_size": 128,
                    "max_seq_length": 128, "mask_prob": 0.15, "disc_weight": 50.0, "temperature": 1.0}


def electra_training(config: Config, hparams: dict) -> tuple[Config, list[str]]:
    """The run's optimizer, schedule and objective from the hparams (google-research/electra's defaults where
    they are silent), so the continued run takes the step the original would have; and what was taken."""
    h = {**ELECTRA_TRAINING, **{k: v for k, v in hparams.items() if k in ELECTRA_TRAINING}}
    config = dataclasses.replace(
        config,
        optimizer=dataclasses.replace(config.optimizer, kind="adamw", learning_rate=h["learning_rate"], b1=0.9,
                                      b2=0.999, eps=1e-6, weight_decay=h["weight_decay_rate"], clip_norm=1.0),
        schedule=dataclasses.replace(config.schedule, kind="electra", warmup_steps=h["num_warmup_steps"],
                                     power=h["lr_decay_power"], end_learning_rate=0.0, restarts=()),
        train=dataclasses.replace(config.train, steps=h["num_train_steps"], batch_size=h["train_batch_size"]),
        data=dataclasses.replace(config.data, seq_len=h["max_seq_length"]),
        objective=dataclasses.replace(config.objective, mask_prob=h["mask_prob"],
                                      discriminator_weight=h["disc_weight"], temperature=h["temperature"]))
    taken = [f"{k}={h[k]}" + ("" if k in hparams else " (default)") for k in ELECTRA_TRAINING]
    return config, taken


def config_file_model(family_name: str):
    """ALBERT's and BERT's sizes: their albert_config.json / bert_config.json, read as HF reads its own
    config.json (the keys are the same)."""
    def model(tensors: dict, hparams: dict, config: Config) -> ModelConfig:
        from electra_jax.families import FAMILIES
        family = FAMILIES[family_name]
        hf = family.hf
        if not hparams:
            raise TF1ImportError(f"import: a {family_name} checkpoint's sizes are in its {family.tf1.config_file}: "
                                 f"put it beside the checkpoint or give --tf-config FILE")
        # albert's and bert's modeling.py compute "gelu" by the tanh approximation: ALBERT's is ours (gelu_new);
        # BERT's runs here, as in transformers' converted BERTs, with the exact erf (an activation ~1e-3 apart).
        hparams = {**hparams, "hidden_act": "gelu_new" if family_name == "albert" else "gelu"}
        problems = hf.config_problems(hparams)
        if problems:
            raise TF1ImportError(f"import: --tf-config: {'; '.join(problems)}")
        try:
            return hf.from_hf_config(hparams, config.model)
        except KeyError as err:
            raise TF1ImportError(f"import: the {family_name} config lacks {err}") from None
    return model


def albert_identity_mapping(model: ModelConfig, rows) -> tuple[list, dict[str, np.ndarray]]:
    """google-research/albert has no embedding_hidden_mapping_in when the embedding and hidden sizes are equal
    (HF's ALBERT always has one): ours is then the identity. Returns the rows to read and the values (by our
    path) set instead."""
    if model.embedding_size != model.hidden_size:
        return rows, {}
    return ([row for row in rows if "embedding_hidden_mapping_in" not in row[0]],
            {"embedding_hidden_mapping_in/kernel": np.eye(model.hidden_size, dtype=np.float32),
             "embedding_hidden_mapping_in/bias": np.zeros(model.hidden_size, np.float32)})


def family_of_checkpoint(tensors: dict, prefix: Path):
    """The family whose TF1 marker the checkpoint's variable names carry."""
    from electra_jax.families import FAMILIES
    for family in FAMILIES.values():
        if family.tf1 and any(name.startswith(family.tf1.marker) for name in tensors):
            return family
    markers = ", ".join(f.tf1.marker for f in FAMILIES.values() if f.tf1)
    raise TF1ImportError(f"import: {prefix} is not a google-research/electra, albert or bert pretraining checkpoint "
                         f"(no variable starts with {markers})")


# ---------------------------------------------------------------------------- tokenizer

def find_vocab(layout, folder: Path, given: Path | None) -> Path:
    if given is not None:
        if not given.is_file():
            raise TF1ImportError(f"import: --vocab {given} not found")
        return given
    for pattern in layout.vocab_files:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise TF1ImportError(f"import: no {' or '.join(layout.vocab_files)} beside the checkpoint in {folder}; "
                         f"give the vocabulary with --vocab FILE")


def choose_lowercase(flag: bool | None, hparams: dict, vocab_tokens: list[str]) -> tuple[bool, str]:
    """The user's choice (--cased / --uncased), else the hparams' do_lower_case; never a silent default, since
    google-research's code lowercases unless told not to and a wrong guess silently ruins a cased model."""
    if flag is not None:
        return flag, "--uncased" if flag else "--cased"
    if "do_lower_case" in hparams:
        return bool(hparams["do_lower_case"]), f"do_lower_case={hparams['do_lower_case']} in --tf-config"
    capitals = sum(1 for t in vocab_tokens if any(c.isupper() for c in t) and not t.startswith("[")
                   and not t.startswith("<"))
    hint = (f"its vocabulary has {capitals:,} tokens with capitals, so probably --cased" if capitals
            else "its vocabulary has no capitals, so probably --uncased")
    raise TF1ImportError(f"import: say whether the model is cased: --cased or --uncased (google-research's code "
                         f"lowercases unless do_lower_case=False; {hint})")


def read_tokenizer(layout, vocab: Path, flag: bool | None, hparams: dict):
    """(lowercase, strip_accents, vocabulary size, write(folder), how the casing was decided)."""
    from electra_jax.data.tokenizer import save_tokenizer, wordpiece_from_vocab
    if vocab.suffix == ".model":  # ALBERT's SentencePiece: accents stripped (keep_accents=False) as albert does
        import sentencepiece as spm
        processor = spm.SentencePieceProcessor(model_proto=vocab.read_bytes())
        pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
        lowercase, why = choose_lowercase(flag, hparams, pieces)
        from electra_jax.data.spm import save_sentencepiece
        return lowercase, True, len(pieces), lambda out: save_sentencepiece(
            vocab.read_bytes(), out, lowercase=lowercase, strip_accents=True), why
    tokens = read_vocab(vocab)
    lowercase, why = choose_lowercase(flag, hparams, list(tokens))
    # BERT's BasicTokenizer strips accents exactly when it lowercases.
    tokenizer = wordpiece_from_vocab(tokens, lowercase=lowercase, strip_accents=lowercase)
    return lowercase, lowercase, len(tokens), lambda out: save_tokenizer(tokenizer, out, layout.tokenizer_class), why


# ---------------------------------------------------------------------------- weights and moments

def check_tensors(rows, tensors: dict, params: dict, with_optimizer: bool, vocab_size: int) -> None:
    """Every problem at once: missing variables (and moments with --with-optimizer), wrong shapes, a vocabulary
    larger than the embedding table."""
    missing, wrong = [], []
    for ours, name, layout in rows:
        if name not in tensors:
            missing.append(name)
        else:
            want = get_path(params, ours).shape
            got = convert(tensors[name], layout).shape
            if got != want:
                wrong.append(f"{name} {tuple(tensors[name].shape)} (expected {want if layout == 'same' else want[::-1]})")
        if with_optimizer:
            missing += [f"{name}/{slot}" for slot in SLOTS if f"{name}/{slot}" not in tensors]
    if with_optimizer and STEP not in tensors:
        missing.append(STEP)
    embeddings = get_path(params, "embeddings/word_embeddings/embedding").shape[0]
    problems = [_listed("missing", missing, 6), _listed("wrong shape", wrong, 4)]
    if vocab_size > embeddings:
        problems.append(f"the vocabulary has {vocab_size} tokens but the embedding table {embeddings} rows")
    problems = [p for p in problems if p]
    if problems:
        hint = " (--with-optimizer needs a checkpoint written by the training run)" if with_optimizer and any(
            m.endswith(SLOTS) or m == STEP for m in missing) else ""
        raise TF1ImportError("import: the checkpoint does not fit its model: " + "; ".join(problems) + hint)


def fill(params: dict, rows, tensors: dict, slot: str | None = None) -> None:
    """Copies each row's variable (or its optimizer `slot`) into `params`, in our layout and float32."""
    for ours, name, layout in rows:
        source = tensors[f"{name}/{slot}" if slot else name]
        set_path(params, ours, convert(source, layout).astype(np.float32))


def report(tensors: dict, used: set[str], layout) -> list[str]:
    """What the run does not keep, by kind: one line each."""
    left = sorted(set(tensors) - used)
    slots = [n for n in left if n.endswith(SLOTS)]
    dropped = [n for n in left if n.startswith(layout.dropped)] if layout.dropped else []
    other = [n for n in left if n not in slots and n not in dropped and n != STEP]
    lines = []
    if STEP in left:
        lines.append(f"not kept: {STEP} (the run starts at step 0; --with-optimizer continues at the checkpoint's step)")
    if slots:
        lines.append(f"not kept: {len(slots)} optimizer moments (adam_m, adam_v; --with-optimizer keeps them)")
    if dropped:
        lines.append(f"not kept (no such head here): {', '.join(dropped)}")
    if other:
        lines.append(_listed("not kept (not part of the model)", other, 8))
    return lines


# ---------------------------------------------------------------------------- the command

def import_tf1(source: Path, out_dir: Path, *, vocab: Path | None = None, tf_config: Path | None = None,
               with_optimizer: bool = False, lowercase: bool | None = None, base_config: str | Path | None = None,
               overrides: list[str] | None = None, log=print) -> Path:
    """A TF1 checkpoint -> a run directory (config.yaml, tokenizer/, checkpoints/N) that `pretrain` continues."""
    import jax
    import jax.numpy as jnp

    from electra_jax.optim import with_adam_moments
    from electra_jax.state import single_device_state

    refuse_nonempty(out_dir, "import")
    prefix = find_checkpoint(source)
    folder = prefix.parent
    tensors = read_checkpoint(prefix)
    family = family_of_checkpoint(tensors, prefix)
    layout = family.tf1
    if tf_config is None and layout.config_file and (folder / layout.config_file).is_file():
        tf_config = folder / layout.config_file
    hparams = read_json(tf_config, "--tf-config")

    config = load_config(base_config, overrides or [])
    model = layout.model(tensors, hparams, config)
    vocab_path = find_vocab(layout, folder, vocab)
    lower, strip, vocab_size, write_tokenizer, why = read_tokenizer(layout, vocab_path, lowercase, hparams)
    taken = []
    if with_optimizer and layout.training:
        config, taken = layout.training(config, hparams)
    if with_optimizer:  # google-research's optimizers have no bias correction: continue with the same update
        config = dataclasses.replace(config, optimizer=dataclasses.replace(config.optimizer, bias_correction=False))
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(
        config.data, vocab_size=vocab_size, lowercase=lower, strip_accents=strip, tokenizer="",
        seq_len=min(config.data.seq_len, model.max_position_embeddings)))
    # The command line's overrides win over what the checkpoint's folder said (hparams, derived sizes).
    config = with_overrides(config, overrides or [])
    validate(config)

    abstract, make_state = single_device_state(config)
    rows, fixed = layout.fixed(model, layout.rows(model)) if layout.fixed else (layout.rows(model), {})
    check_tensors(rows, tensors, abstract.params, with_optimizer, vocab_size)  # shapes only: before any compile
    state = jax.jit(make_state)(jax.random.key(config.train.seed))
    params = jax.tree.map(np.asarray, state.params)
    for path, value in fixed.items():
        set_path(params, path, value)
    if fixed:
        log(f"not in the checkpoint, set here: {', '.join(fixed)}")
    fill(params, rows, tensors)
    used = {name for _, name, _ in rows}
    step = 0
    opt_state = state.opt_state
    if with_optimizer:
        step = int(tensors[STEP])
        moments = {}
        for slot in SLOTS:
            moments[slot] = jax.tree.map(np.zeros_like, params)
            fill(moments[slot], rows, tensors, slot)
        opt_state = with_adam_moments(opt_state, moments["adam_m"], moments["adam_v"], step)
        used |= {f"{name}/{slot}" for name in list(used) for slot in SLOTS} | {STEP}
    state = state.replace(step=jnp.asarray(step, jnp.int32), params=jax.tree.map(jnp.asarray, params),
                          opt_state=opt_state)

    log(f"imported a google-research/{family.name} checkpoint: {prefix} ({len(used)} of {len(tensors)} variables)")
    log(f"tokenizer: {vocab_path}, lowercase={lower}, strip_accents={strip} (from {why})")
    if with_optimizer:
        log(f"optimizer: its Adam moments at step {step:,}, without bias correction (optimizer.bias_correction="
            f"false) as the TF code; the schedule is at step {step:,} of train.steps={config.train.steps:,}")
        if taken:
            log("from the hparams: " + ", ".join(taken))
        else:  # albert's and bert's training settings were command-line flags, not in the checkpoint's folder
            o, sc = config.optimizer, config.schedule
            log(f"from --config and the overrides: optimizer.kind={o.kind} learning_rate={o.learning_rate} "
                f"schedule.kind={sc.kind} warmup_steps={sc.warmup_steps} train.steps={config.train.steps}; give "
                f"them as the TF run's flags had them (its schedule is schedule.kind=bert; albert's optimizer lamb)")
        log("data: the run reads its data from the start (the TF input pipeline's position is not in the checkpoint)")
    for line in report(tensors, used, layout):
        log(line)
    write_imported_run(out_dir, config, write_tokenizer, state, step=step, source=str(prefix))
    log(f"wrote {out_dir} ({family.next_steps(out_dir)} data.prepared=...)")
    return out_dir
