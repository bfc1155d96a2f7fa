"""Import of google-research's TensorFlow 1 checkpoints: each checkpoint is written by tf.compat.v1's Saver in
graph mode under the original code's variable names (listed here from its modeling code, not from our name
tables), with random values; imported; exported to HF; `from_pretrained` gives our logits, and each exported
tensor is its TF variable bit for bit. With --with-optimizer the next training step is the TF update."""
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.hf.export import export
from electra_jax.hf.importer import HFImportError
from electra_jax.run_dir import load_run_params
from electra_jax.tf1 import import_tf1
from tests.conftest import REPO

pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RNG = np.random.default_rng(0)


def save_tf1_checkpoint(folder, variables: dict, step: int) -> None:
    """`variables` (name -> array) as model.ckpt-STEP by tf.compat.v1.train.Saver, with global_step, in a
    subprocess (TensorFlow stays out of the test process's graph state)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "values.npz", **{name.replace("/", "|"): value for name, value in variables.items()})
    code = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        tf.compat.v1.disable_eager_execution()
        values = np.load({str(folder / "values.npz")!r})
        with tf.Graph().as_default():
            for key in values.files:  # names with "/" as the original code gives them (e.g. param_name + "/adam_m")
                tf.compat.v1.get_variable(key.replace("|", "/"), initializer=values[key])
            step = tf.compat.v1.train.get_or_create_global_step()
            saver = tf.compat.v1.train.Saver()
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                session.run(step.assign({step}))
                saver.save(session, {str(folder / "model.ckpt")!r}, global_step=step)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def dense(prefix, n_in, n_out):
    return {f"{prefix}/kernel": (n_in, n_out), f"{prefix}/bias": (n_out,)}


def layer_norm(prefix, n):
    return {f"{prefix}/gamma": (n,), f"{prefix}/beta": (n,)}


def bert_layer(prefix, hidden, intermediate):
    """modeling.py's transformer_model: one layer_{i} (BERT's and ELECTRA's names)."""
    shapes = {}
    for part in ("query", "key", "value"):
        shapes |= dense(f"{prefix}/attention/self/{part}", hidden, hidden)
    shapes |= dense(f"{prefix}/attention/output/dense", hidden, hidden) | layer_norm(f"{prefix}/attention/output/LayerNorm", hidden)
    shapes |= dense(f"{prefix}/intermediate/dense", hidden, intermediate)
    shapes |= dense(f"{prefix}/output/dense", intermediate, hidden) | layer_norm(f"{prefix}/output/LayerNorm", hidden)
    return shapes


def embeddings(prefix, vocab, width, positions=64):
    return {f"{prefix}/word_embeddings": (vocab, width), f"{prefix}/token_type_embeddings": (2, width),
            f"{prefix}/position_embeddings": (positions, width)} | layer_norm(f"{prefix}/LayerNorm", width)


def random_values(shapes: dict) -> dict:
    return {name: RNG.normal(0, 0.2, shape).astype(np.float32) for name, shape in shapes.items()}


def with_moments(values: dict) -> dict:
    """AdamWeightDecayOptimizer's slots: param_name + "/adam_m" and "/adam_v"."""
    moments = {}
    for name, value in values.items():
        moments[f"{name}/adam_m"] = RNG.normal(0, 0.01, value.shape).astype(np.float32)
        moments[f"{name}/adam_v"] = RNG.uniform(1e-6, 1e-4, value.shape).astype(np.float32)
    return values | moments


def vocab_of(tokenizer_dir):
    return [t for t in (tokenizer_dir / "vocab.txt").read_text().split("\n") if t]


# ---------------------------------------------------------------------------- ELECTRA

# Embedding 16 != hidden 32 (both towers project), a generator 24 wide and one layer deep.
E, H, I, L, HG, IG, LG = 16, 32, 64, 2, 24, 48, 1


def electra_shapes(vocab: int) -> dict:
    """run_pretraining.py + modeling.py: shared electra/embeddings, each tower's embeddings_project and
    layers under its scope, the generator_predictions and discriminator_predictions heads."""
    shapes = embeddings("electra/embeddings", vocab, E)
    for scope, hidden, intermediate, layers in (("electra", H, I, L), ("generator", HG, IG, LG)):
        shapes |= dense(f"{scope}/embeddings_project", E, hidden)
        for i in range(layers):
            shapes |= bert_layer(f"{scope}/encoder/layer_{i}", hidden, intermediate)
    shapes |= dense("generator_predictions/dense", HG, E) | layer_norm("generator_predictions/LayerNorm", E)
    shapes |= {"generator_predictions/output_bias": (vocab,)}
    shapes |= dense("discriminator_predictions/dense", H, H) | dense("discriminator_predictions/dense_1", H, 1)
    return shapes


def electra_hf_name(tf_name: str, tower: str) -> str:
    """transformers 4.x's load_tf_weights_in_electra renaming, applied to what our export wrote."""
    name = tf_name
    if tower == "generator":
        name = name.replace("generator/", "electra/")
    name = name.replace("dense_1", "dense_prediction").replace("generator_predictions/output_bias",
                                                                 "generator_lm_head/bias")
    name = name.replace("/kernel", "/weight").replace("/gamma", "/weight").replace("/beta", "/bias")
    if name.endswith("_embeddings"):
        name += "/weight"
    return re.sub(r"layer_(\d+)", r"layer.\1", name.replace("/", "."))  # its getattr + index for layer_N


def electra_tower(tf_name: str) -> list[str]:
    if tf_name.startswith("electra/embeddings/"):
        return ["discriminator", "generator"]
    if tf_name.startswith(("generator/", "generator_predictions/")):
        return ["generator"]
    return ["discriminator"]


def batch(vocab: int):
    ids = np.random.default_rng(1).integers(5, vocab, size=(2, 12)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[1, 9:] = 0
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    return ids, segments, (ids != 0).astype(np.int64)


@pytest.fixture(scope="module")
def electra_checkpoint(tokenizer_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tf1") / "electra_small_owt"
    vocab = vocab_of(tokenizer_dir)
    values = with_moments(random_values(electra_shapes(len(vocab))))
    save_tf1_checkpoint(folder, values, step=20000)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    hparams = {"model_size": "small", "embedding_size": E, "generator_hidden_size": HG / H, "vocab_size": len(vocab),
               "learning_rate": 2e-3, "num_train_steps": 40000, "num_warmup_steps": 1000, "do_lower_case": False,
               "max_seq_length": 32, "train_batch_size": 16, "model_hparam_overrides": {"hidden_size": H}}
    (folder / "hparams.json").write_text(json.dumps(hparams))
    return folder, values


def test_electra_checkpoint_imports_exports_and_gives_hf_its_logits(electra_checkpoint, tmp_path, capsys):
    folder, values = electra_checkpoint
    run = import_tf1(folder, tmp_path / "run", tf_config=folder / "hparams.json")
    out = capsys.readouterr().out
    assert "lowercase=False, strip_accents=False (from do_lower_case=False in --tf-config)" in out
    assert "not kept: global_step" in out and "optimizer moments" in out  # without --with-optimizer: reported
    config, params, step = load_run_params(run, None, log=lambda _: None)
    m = config.model
    assert step == 0 and (m.hidden_size, m.embedding_size, m.num_layers, m.intermediate_size) == (H, E, L, I)
    assert (m.generator_hidden_size, m.generator_num_layers, m.num_heads, m.generator_num_heads) == (HG, LG, 1, 1)

    export(run, tmp_path / "hf", log=lambda _: None)
    from safetensors.numpy import load_file
    files = {tower: load_file(tmp_path / "hf" / tower / "model.safetensors") for tower in ("discriminator", "generator")}
    for name, value in values.items():
        if name.endswith(("adam_m", "adam_v")):
            continue
        for tower in electra_tower(name):
            hf = electra_hf_name(name, tower)
            got = files[tower][hf]
            assert np.array_equal(got.T if name.endswith("kernel") else got, value), (name, tower, hf)

    from electra_jax.models.electra import Electra
    ids, segments, mask = batch(m.vocab_size)
    model = Electra(m)
    args = (jnp.asarray(ids, jnp.int32), jnp.asarray(segments, jnp.int32), jnp.asarray(mask, jnp.int32))
    positions = jnp.tile(jnp.arange(ids.shape[1]), (ids.shape[0], 1))
    ours = {"generator": model.apply({"params": params}, *args, positions, method=Electra.generator_logits),
            "discriminator": model.apply({"params": params}, *args, method=Electra.discriminator_logits)}
    inputs = dict(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                  attention_mask=torch.from_numpy(mask))
    classes = {"generator": transformers.ElectraForMaskedLM, "discriminator": transformers.ElectraForPreTraining}
    for tower, cls in classes.items():
        with torch.no_grad():
            theirs = cls.from_pretrained(tmp_path / "hf" / tower).eval()(**inputs).logits.numpy()
        keep = mask.astype(bool)
        assert np.abs(np.asarray(ours[tower])[keep] - theirs[keep]).max() < 1e-4, tower


def electra_lr(step, peak=2e-3, total=40000, warmup=1000, power=1.0):
    """google-research/electra's optimization.py: polynomial decay, warmup multiplied in."""
    return peak * (1 - min(step, total) / total) ** power * min(1.0, step / warmup)


def test_with_optimizer_the_next_step_is_the_tf_update(electra_checkpoint, prepared, tmp_path, capsys):
    from electra_jax.checkpoint import Checkpointer
    from electra_jax.config import load_config
    from electra_jax.data.loader import PretrainingData
    from electra_jax.mesh import make_mesh
    from electra_jax.run_dir import read_metadata, special_ids
    from electra_jax.train import setup_training
    folder, values = electra_checkpoint
    run = import_tf1(folder, tmp_path / "run", tf_config=folder / "hparams.json", with_optimizer=True,
                     overrides=["model.dropout_rate=0", "model.attention_dropout_rate=0", "mesh.data=1"])
    out = capsys.readouterr().out
    assert "Adam moments at step 20,000" in out and "not kept" not in out
    config = load_config(run / "config.yaml")
    assert (config.optimizer.bias_correction, config.schedule.kind, config.train.steps) == (False, "electra", 40000)
    assert config.optimizer.learning_rate == 2e-3 and config.model.dropout_rate == 0.0  # hparams, then overrides
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), special_ids(read_metadata(prepared)))
    checkpointer = Checkpointer(run / "checkpoints", config.checkpoint, read_only=True)
    assert checkpointer.all_steps() == [20000]
    state = checkpointer.restore(20000, training.abstract_state)
    checkpointer.close()
    assert int(state.step) == 20000
    loader_batch = next(PretrainingData(prepared, config.train.batch_size, seed=0))

    # The reference: our gradient on this batch (the same keys as the step's), then the TF update in NumPy
    # from the checkpoint's own moments.
    rng = jax.random.fold_in(jax.random.key(config.train.seed + 1), state.step)
    batch_rng, sample_rng, *micro = jax.random.split(rng, 4)
    loader_batch = jax.tree.map(jnp.asarray, loader_batch)
    whole, counts = training.objective.prepare((batch_rng, sample_rng), loader_batch)
    grads, _ = jax.grad(lambda p: training.objective.loss(p, whole, jnp.stack(micro).reshape(1, 2)[0], counts, None),
                        has_aux=True)(state.params)
    from electra_jax.hf.names import electra_tf1_rows, get_path
    rows = electra_tf1_rows(config.model)
    from tests.test_optim import tf1_update_numpy
    grad_of = {tf: np.asarray(get_path(grads, ours), np.float64) for ours, tf, _ in rows}
    by_tf = tf1_update_numpy({tf: values[tf] for tf in grad_of}, grad_of, {tf: values[f"{tf}/adam_m"] for tf in grad_of},
                             {tf: values[f"{tf}/adam_v"] for tf in grad_of}, lr=electra_lr(20000))
    expected = {ours: by_tf[tf] for ours, tf, _ in rows}

    new_state, metrics = training.step_fn(state, loader_batch)
    assert int(new_state.step) == 20001
    for ours, tf, _ in rows:
        np.testing.assert_allclose(np.asarray(get_path(new_state.params, ours)), expected[ours], rtol=0, atol=2e-6,
                                   err_msg=tf)
    # Step N+1's loss: from the continued run's parameters and from the NumPy update's, on the same batch.
    from electra_jax.hf.names import set_path
    reference = jax.tree.map(np.asarray, new_state.params)
    for ours, value in expected.items():
        set_path(reference, ours, value.astype(np.float32))
    rng = jax.random.fold_in(jax.random.key(config.train.seed + 1), new_state.step)
    batch_rng, sample_rng, *micro = jax.random.split(rng, 4)
    whole, counts = training.objective.prepare((batch_rng, sample_rng), loader_batch)
    keys = jnp.stack(micro).reshape(1, 2)[0]
    losses = [float(training.objective.loss(p, whole, keys, counts, None)[0]) for p in (new_state.params, reference)]
    _, next_metrics = training.step_fn(new_state, loader_batch)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert float(next_metrics["loss"]) == pytest.approx(losses[1], rel=1e-5)


def test_tf1_import_errors_name_every_problem_and_write_nothing(electra_checkpoint, tmp_path, capsys):
    folder, values = electra_checkpoint
    # No casing stated anywhere: refused, with the vocabulary's hint.
    with pytest.raises(HFImportError, match=r"--cased or --uncased .*capitals, so probably --cased"):
        import_tf1(folder, tmp_path / "a")
    # Missing moments with --with-optimizer, and a missing and a misshapen variable: one error naming all.
    broken = {k: v for k, v in values.items() if not k.startswith("electra/encoder/layer_1/output/dense/bias")}
    broken["discriminator_predictions/dense/kernel"] = np.zeros((H, H + 1), np.float32)
    save_tf1_checkpoint(tmp_path / "broken", broken, step=5)
    (tmp_path / "broken" / "vocab.txt").write_text((folder / "vocab.txt").read_text())
    with pytest.raises(HFImportError) as err:
        import_tf1(tmp_path / "broken", tmp_path / "b", with_optimizer=True, lowercase=False)
    message = str(err.value)
    assert "\n" not in message
    assert "missing 3: electra/encoder/layer_1/output/dense/bias, electra/encoder/layer_1/output/dense/bias/adam_m" in message
    assert "wrong shape 1: discriminator_predictions/dense/kernel (32, 33) (expected (32, 32))" in message
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.partial-*"))
    # A vocabulary longer than the embedding table.
    (tmp_path / "long_vocab.txt").write_text((folder / "vocab.txt").read_text() + "extra1\nextra2\n")
    with pytest.raises(HFImportError, match=r"the vocabulary has \d+ tokens but the embedding table \d+ rows"):
        import_tf1(folder, tmp_path / "v", vocab=tmp_path / "long_vocab.txt", lowercase=False)
    assert not (tmp_path / "v").exists()
    # A --tf-config that disagrees with the shapes.
    (tmp_path / "h.json").write_text(json.dumps({"hidden_size": 64}))
    with pytest.raises(HFImportError, match=r"hidden_size 64 \(the checkpoint's is 32\)"):
        import_tf1(folder, tmp_path / "c", tf_config=tmp_path / "h.json", lowercase=False)
    # The checkpoint file of a run written to a bucket: its absolute path is read by file name.
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in folder.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    (moved / "checkpoint").write_text('model_checkpoint_path: "gs://bucket/run/model.ckpt-20000"\n')
    import_tf1(moved, tmp_path / "d", lowercase=False)
    assert (tmp_path / "d" / "checkpoints" / "0").is_dir()


def test_without_tensorflow_one_line_names_the_extra(electra_checkpoint, tmp_path, monkeypatch):
    folder, _ = electra_checkpoint
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow raises ImportError
    with pytest.raises(HFImportError, match=r"needs TensorFlow: pip install 'electra-jax\[tf\]'"):
        import_tf1(folder, tmp_path / "run", lowercase=False)


@pytest.mark.slow
def test_pretrain_continues_an_imported_tf1_run_from_its_step(electra_checkpoint, prepared, tmp_path):
    folder, _ = electra_checkpoint
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "electra_jax"]
    one_device = {**os.environ, "XLA_FLAGS": ""}  # not conftest's eight fake devices: no 8-way all-reduce per step
    done = subprocess.run([*cli, "import", str(folder / "model.ckpt-20000"), str(run), "--with-optimizer", "--cased",
                           "--tf-config", str(folder / "hparams.json"), "train.seed=3"],
                          capture_output=True, text=True, cwd=REPO, env=one_device)
    assert done.returncode == 0, done.stderr
    assert "continue with: electra-jax pretrain" in done.stdout
    done = subprocess.run([*cli, "pretrain", "--config", str(run / "config.yaml"), "--run-dir", str(run),
                           "--no-progress", f"data.prepared={prepared}", "train.steps=20002",
                           "checkpoint.every_steps=1"], capture_output=True, text=True, cwd=REPO, env=one_device)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resum" in done.stdout.lower() and "20000" in done.stdout.replace(",", "")
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1] == 20002


# ---------------------------------------------------------------------------- ALBERT and BERT

def albert_values(vocab: int, groups=2, hidden=32, embedding=16, intermediate=48) -> dict:
    """albert's modeling.py: bert/embeddings, embedding_hidden_mapping_in, transformer/group_{g}/inner_group_0
    with attention_1, LayerNorm, ffn_1 and LayerNorm_1; the cls/ MLM and sentence-order heads."""
    shapes = embeddings("bert/embeddings", vocab, embedding)
    shapes |= dense("bert/encoder/embedding_hidden_mapping_in", embedding, hidden)
    for g in range(groups):
        block = f"bert/encoder/transformer/group_{g}/inner_group_0"
        for part in ("query", "key", "value"):
            shapes |= dense(f"{block}/attention_1/self/{part}", hidden, hidden)
        shapes |= dense(f"{block}/attention_1/output/dense", hidden, hidden) | layer_norm(f"{block}/LayerNorm", hidden)
        shapes |= dense(f"{block}/ffn_1/intermediate/dense", hidden, intermediate)
        shapes |= dense(f"{block}/ffn_1/intermediate/output/dense", intermediate, hidden)
        shapes |= layer_norm(f"{block}/LayerNorm_1", hidden)
    shapes |= dense("bert/pooler/dense", hidden, hidden)
    shapes |= dense("cls/predictions/transform/dense", hidden, embedding)
    shapes |= layer_norm("cls/predictions/transform/LayerNorm", embedding) | {"cls/predictions/output_bias": (vocab,)}
    shapes |= {"cls/seq_relationship/output_weights": (2, hidden), "cls/seq_relationship/output_bias": (2,)}
    return random_values(shapes)


def albert_hf_name(tf_name: str) -> str:
    """transformers 4.x's load_tf_weights_in_albert replacement table, in its order."""
    name = tf_name
    for old, new in (("ffn_1", "ffn"), ("bert/", "albert/"), ("attention_1", "attention"), ("transform/", ""),
                     ("LayerNorm_1", "full_layer_layer_norm"), ("LayerNorm", "attention/LayerNorm"),
                     ("transformer/", ""), ("intermediate/dense/", ""), ("ffn/intermediate/output/dense/", "ffn_output/"),
                     ("/output/", "/"), ("/self/", "/"), ("pooler/dense", "pooler"), ("cls/predictions", "predictions"),
                     ("predictions/attention", "predictions"), ("embeddings/attention", "embeddings"),
                     ("inner_group_", "albert_layers/"), ("group_", "albert_layer_groups/"),
                     ("seq_relationship/output_", "sop_classifier/classifier/"), ("weights", "weight")):
        name = name.replace(old, new)
    name = name.replace("/kernel", "/weight").replace("/gamma", "/weight").replace("/beta", "/bias")
    name = name.replace("output_bias", "bias").removeprefix("cls/")  # AlbertForPreTraining has no cls module
    if name.endswith("_embeddings"):
        name += "/weight"
    return name.replace("/", ".")


def test_albert_checkpoint_with_two_groups_imports_and_gives_hf_its_logits(tiny_corpus, tmp_path, capsys):
    import sentencepiece as spm
    folder = tmp_path / "albert_base"
    folder.mkdir()
    spm.SentencePieceTrainer.train(input=str(tiny_corpus), model_prefix=str(folder / "30k-clean"), vocab_size=120,
                                   user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], pad_id=0, unk_id=1,
                                   bos_id=-1, eos_id=-1, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_file=str(folder / "30k-clean.model")).get_piece_size()
    values = albert_values(vocab)
    save_tf1_checkpoint(folder, with_moments(values), step=125000)  # LAMB's slots have Adam's names
    (folder / "albert_config.json").write_text(json.dumps({
        "attention_probs_dropout_prob": 0, "hidden_act": "gelu", "hidden_dropout_prob": 0, "embedding_size": 16,
        "hidden_size": 32, "initializer_range": 0.02, "intermediate_size": 48, "max_position_embeddings": 64,
        "num_attention_heads": 2, "num_hidden_layers": 4, "num_hidden_groups": 2, "net_structure_type": 0,
        "gap_size": 0, "num_memory_blocks": 0, "inner_group_num": 1, "down_scale_factor": 1, "type_vocab_size": 2,
        "vocab_size": vocab}))
    run = import_tf1(folder, tmp_path / "run", lowercase=True)
    out = capsys.readouterr().out
    assert "google-research/albert" in out and "lowercase=True, strip_accents=True (from --uncased)" in out
    export(run, tmp_path / "hf", log=lambda _: None)
    from safetensors.numpy import load_file
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    for name, value in values.items():
        hf = albert_hf_name(name)
        transposed = name.endswith("kernel")
        assert np.array_equal(tensors[hf].T if transposed else tensors[hf], value), (name, hf)

    config, params, _ = load_run_params(run, None, log=lambda _: None)
    from electra_jax.models.albert import Albert
    ids, segments, mask = batch(vocab)
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    mlm, sop = Albert(config.model).apply({"params": params}, ids, segments, mask, positions)
    hf_model = transformers.AlbertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        theirs = hf_model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
                          attention_mask=torch.from_numpy(mask))
    keep = mask.astype(bool)
    assert np.abs(np.asarray(mlm)[keep] - theirs.prediction_logits.numpy()[keep]).max() < 1e-4
    assert np.abs(np.asarray(sop) - theirs.sop_logits.numpy()).max() < 1e-4

    # With the optimizer: LAMB's moments in optax's state, every counter at the checkpoint's step.
    import optax
    from electra_jax.checkpoint import Checkpointer
    from electra_jax.state import single_device_state
    run = import_tf1(folder, tmp_path / "with-optimizer", lowercase=True, with_optimizer=True,
                     overrides=["optimizer.kind=lamb", "schedule.kind=bert", "train.steps=250000"])
    assert "give them as the TF run's flags had them" in capsys.readouterr().out
    config, _, _ = load_run_params(run, None, log=lambda _: None)
    checkpointer = Checkpointer(run / "checkpoints", config.checkpoint, read_only=True)
    state = checkpointer.restore(125000, single_device_state(config)[0])
    checkpointer.close()
    adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)][0]
    name = "bert/encoder/transformer/group_1/inner_group_0/ffn_1/intermediate/output/dense/kernel"
    moments = np.load(folder / "values.npz")
    assert np.array_equal(adam.mu["group_1_layer_0"]["output"]["kernel"], moments[name.replace("/", "|") + "|adam_m"])
    assert np.array_equal(adam.nu["sop_classifier"]["kernel"],
                          moments["cls|seq_relationship|output_weights|adam_v"].T)
    assert int(state.step) == int(adam.count) == 125000 and config.optimizer.bias_correction is False


def bert_values(vocab: int, hidden=32, intermediate=64, layers=2) -> dict:
    shapes = embeddings("bert/embeddings", vocab, hidden)
    for i in range(layers):
        shapes |= bert_layer(f"bert/encoder/layer_{i}", hidden, intermediate)
    shapes |= dense("bert/pooler/dense", hidden, hidden) | dense("cls/predictions/transform/dense", hidden, hidden)
    shapes |= layer_norm("cls/predictions/transform/LayerNorm", hidden) | {"cls/predictions/output_bias": (vocab,)}
    shapes |= {"cls/seq_relationship/output_weights": (2, hidden), "cls/seq_relationship/output_bias": (2,)}
    return random_values(shapes)


def test_bert_checkpoint_imports_without_its_next_sentence_head(tokenizer_dir, tmp_path, capsys):
    folder = tmp_path / "uncased_L-2_H-32"
    vocab = vocab_of(tokenizer_dir)
    values = bert_values(len(vocab))
    save_tf1_checkpoint(folder, values, step=1000)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "bert_config.json").write_text(json.dumps({
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 64, "num_attention_heads": 2,
        "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": len(vocab)}))
    run = import_tf1(folder, tmp_path / "run", lowercase=False)
    out = capsys.readouterr().out
    assert "not kept (no such head here): cls/seq_relationship/output_bias, cls/seq_relationship/output_weights" in out
    export(run, tmp_path / "hf", log=lambda _: None)
    from safetensors.numpy import load_file
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    config, params, _ = load_run_params(run, None, log=lambda _: None)
    # The export is a BertForMaskedLM, without the pooler: that one is checked in the run's parameters.
    assert np.array_equal(params["pooler"]["kernel"], values["bert/pooler/dense/kernel"])
    for name, value in values.items():
        if name.startswith(("cls/seq_relationship", "bert/pooler")):
            continue
        hf = (name.replace("/kernel", "/weight").replace("/gamma", "/weight").replace("/beta", "/bias")
              .replace("output_bias", "bias") + ("/weight" if name.endswith("_embeddings") else "")).replace("/", ".")
        hf = re.sub(r"layer_(\d+)", r"layer.\1", hf)
        assert np.array_equal(tensors[hf].T if name.endswith("kernel") else tensors[hf], value), (name, hf)
    from electra_jax.models.bert import Bert
    ids, segments, mask = batch(len(vocab))
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    ours = Bert(config.model).apply({"params": params}, ids, segments, mask, positions)
    with torch.no_grad():
        theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()(
            input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(segments),
            attention_mask=torch.from_numpy(mask)).logits.numpy()
    keep = mask.astype(bool)
    assert np.abs(np.asarray(ours)[keep] - theirs[keep]).max() < 1e-4
