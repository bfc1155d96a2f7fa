"""Export to and import from Hugging Face PyTorch ELECTRA: logits parity, loss parity, bit-exact round trips."""
import json
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.objectives import electra, masking
from electra_jax.config import load_config
from electra_jax.data.tokenizer import save_tokenizer, wordpiece_from_vocab
from electra_jax.hf.electra import write_model_files
from electra_jax.hf.export import export
from electra_jax.run_dir import load_run_params
from electra_jax.hf.importer import HFImportError, import_hf
from electra_jax.models.electra import Electra
from tests.conftest import REPO, TINY

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 120
# (embedding size, hidden size, generator fraction): embeddings equal to and different from hidden.
SHAPES = [(48, 48, 0.25), (24, 48, 1 / 3), (24, 48, 1.0), (48, 48, 1.0)]
# make test-fast keeps the shape with both embedding projections and a narrower generator; all run in the suite
SHAPE_PARAMS = [shape if shape == (24, 48, 1 / 3) else pytest.param(shape, marks=pytest.mark.slow) for shape in SHAPES]


def tiny_config(embedding, hidden, fraction):
    return load_config(None, [f"model.vocab_size={VOCAB}", f"model.embedding_size={embedding}",
                              f"model.hidden_size={hidden}", "model.num_layers=2", "model.num_heads=4",
                              "model.intermediate_size=80", f"model.generator_fraction={fraction}",
                              "model.max_position_embeddings=40", "data.seq_len=16", "objective.max_predictions=4"])


def batch():
    ids = np.random.default_rng(0).integers(5, VOCAB, size=(3, 16)).astype(np.int32)
    ids[:, 0], ids[:, 8] = 2, 3
    ids[2, 11:] = 0  # a padded row
    segments = np.zeros_like(ids)
    segments[:, 9:] = 1
    return ids, segments, (ids != 0).astype(np.int32)


def random_params(config):
    ids, segments, mask = batch()
    params = nn.unbox(Electra(config.model).init(jax.random.key(1), ids, segments, mask, jnp.zeros((3, 4), jnp.int32)))
    # Non-trivial LayerNorm and bias values so a wrong mapping cannot hide.
    return jax.tree.map(lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.05, x.shape).astype(np.float32),
                        params["params"])


def our_logits(config, params):
    ids, segments, mask = batch()
    model = Electra(config.model)
    positions = jnp.tile(jnp.arange(ids.shape[1]), (ids.shape[0], 1))
    gen = model.apply({"params": params}, ids, segments, mask, positions, method=Electra.generator_logits)
    disc = model.apply({"params": params}, ids, segments, mask, method=Electra.discriminator_logits)
    return np.asarray(gen), np.asarray(disc)


def hf_logits(folder):
    ids, segments, mask = batch()
    inputs = dict(input_ids=torch.from_numpy(ids).long(), token_type_ids=torch.from_numpy(segments).long(),
                  attention_mask=torch.from_numpy(mask).long())
    gen = transformers.ElectraForMaskedLM.from_pretrained(folder / "generator").eval()
    disc = transformers.ElectraForPreTraining.from_pretrained(folder / "discriminator").eval()
    with torch.no_grad():
        return gen(**inputs).logits.numpy(), disc(**inputs).logits.numpy()


def assert_logits_equal(ours, theirs):
    mask = batch()[2].astype(bool)  # padded positions are not compared
    for a, b in zip(ours, theirs):
        assert np.abs(a[mask] - b[mask]).max() < 1e-4


@pytest.mark.parametrize("shape", SHAPE_PARAMS, ids=lambda s: f"E{s[0]}-H{s[1]}-g{s[2]:.2f}")
def test_exported_weights_give_hf_our_logits(tmp_path, shape):
    config = tiny_config(*shape)
    params = random_params(config)
    for tower in ("discriminator", "generator"):
        write_model_files(tmp_path / tower, config, params, tower)
    assert_logits_equal(our_logits(config, params), hf_logits(tmp_path))


def save_hf_pair(folder, config, seed=0):
    """Random HF PyTorch generator + discriminator sharing embeddings, saved with save_pretrained."""
    torch.manual_seed(seed)
    m = config.model
    common = dict(vocab_size=m.vocab_size, embedding_size=m.embedding_size, num_hidden_layers=m.num_layers,
                  max_position_embeddings=m.max_position_embeddings, hidden_act="gelu", layer_norm_eps=1e-12)
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=m.hidden_size, num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size, **common))
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=m.generator_hidden_size, num_attention_heads=m.generator_num_heads,
        intermediate_size=m.generator_intermediate_size, **common))
    with torch.no_grad():
        for p in [*disc.parameters(), *gen.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(folder / "discriminator")
    gen.save_pretrained(folder / "generator")
    vocab = {f"w{i}": i for i in range(m.vocab_size)}
    for i, token in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")):
        vocab = {**{k: v for k, v in vocab.items() if v != i}, token: i}
    save_tokenizer(wordpiece_from_vocab(vocab, lowercase=False, strip_accents=False), folder / "discriminator")


@pytest.mark.parametrize("shape", SHAPE_PARAMS, ids=lambda s: f"E{s[0]}-H{s[1]}-g{s[2]:.2f}")
def test_imported_hf_models_give_their_logits_and_export_back_bit_for_bit(tmp_path, shape):
    config = tiny_config(*shape)
    save_hf_pair(tmp_path / "hf", config)
    import_hf(tmp_path / "hf", tmp_path / "run", log=lambda *_: None)
    imported_config, params, step = load_run_params(tmp_path / "run", None)
    assert step == 0
    assert_logits_equal(our_logits(imported_config, params), hf_logits(tmp_path / "hf"))

    export(tmp_path / "run", tmp_path / "again", log=lambda *_: None)
    from safetensors.numpy import load_file
    for tower in ("discriminator", "generator"):
        original = load_file(str(tmp_path / "hf" / tower / "model.safetensors"))
        again = load_file(str(tmp_path / "again" / tower / "model.safetensors"))
        assert original.keys() == again.keys()
        for name in original:
            assert original[name].dtype == again[name].dtype and np.array_equal(original[name], again[name]), name


def test_losses_match_hf_outputs(tmp_path):
    config = tiny_config(24, 48, 0.25)
    params = random_params(config)
    for tower in ("discriminator", "generator"):
        write_model_files(tmp_path / tower, config, params, tower)
    ids, segments, mask = batch()
    model = Electra(config.model)
    masked = masking.mask_tokens(jax.random.key(5), jnp.asarray(ids), jnp.asarray((ids > 4)), mask_id=4,
                                    mask_prob=0.15, mask_token_prob=0.85, max_predictions=4)
    seen = {}

    def disc_fn(corrupted):
        seen["corrupted"] = np.asarray(corrupted)
        return model.apply({"params": params}, corrupted, segments, mask, method=Electra.discriminator_logits)

    sums = electra.electra_sums(
        lambda i, p: model.apply({"params": params}, i, segments, mask, p, method=Electra.generator_logits),
        disc_fn, jax.random.split(jax.random.key(6), 3), masked, jnp.asarray(ids), jnp.asarray(mask), 1.0)

    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    t = lambda x: torch.from_numpy(np.asarray(x)).long()  # noqa: E731
    with torch.no_grad():
        logits = gen(input_ids=t(masked.input_ids_BxL), token_type_ids=t(segments), attention_mask=t(mask)).logits
        at = logits.gather(1, t(masked.positions_BxP)[..., None].expand(-1, -1, logits.shape[-1]))
        weights = torch.from_numpy(np.asarray(masked.weights_BxP))
        mlm = (torch.nn.functional.cross_entropy(at.transpose(1, 2), t(masked.labels_BxP), reduction="none")
               * weights).sum() / weights.sum()
        disc_logits = disc(input_ids=t(seen["corrupted"]), token_type_ids=t(segments), attention_mask=t(mask)).logits
        replaced = torch.from_numpy((seen["corrupted"] != ids).astype(np.float32))
        token_mask = torch.from_numpy(mask.astype(np.float32))
        rtd = (torch.nn.functional.binary_cross_entropy_with_logits(disc_logits, replaced, reduction="none")
               * token_mask).sum() / token_mask.sum()
    assert float(sums.num_predictions) > 0 and float(sums.replaced) > 0
    assert abs(float(sums.mlm_loss / sums.num_predictions) - float(mlm)) < 1e-5
    assert abs(float(sums.disc_loss / sums.num_tokens) - float(rtd)) < 1e-5


@pytest.mark.slow
def test_import_errors_name_the_problem_and_write_nothing(tmp_path):
    config = tiny_config(24, 48, 0.25)
    save_hf_pair(tmp_path / "hf", config)
    disc = tmp_path / "hf" / "discriminator"
    settings = json.loads((disc / "config.json").read_text())

    def fails(match, source=tmp_path / "hf"):
        with pytest.raises((HFImportError, FileNotFoundError, FileExistsError), match=match):
            import_hf(source, tmp_path / "out", log=lambda *_: None)
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))

    fails("does not exist", tmp_path / "nowhere")
    (disc / "config.json").write_text(json.dumps({**settings, "model_type": "roberta"}))
    fails("model_type is 'roberta'")
    (disc / "config.json").write_text(json.dumps({**settings, "model_type": "bert"}))
    fails("holds a BertModel; a discriminator/generator pair")
    (disc / "config.json").write_text(json.dumps({**settings, "vocab_size": VOCAB + 8}))
    fails(r"disagree on vocab_size \(128 vs 120\)")
    (disc / "config.json").write_text(json.dumps({**settings, "intermediate_size": 96}))
    fails(r"wrong shape 6: electra.encoder.layer.0.intermediate.dense.weight \(80, 48\) \(expected \(96, 48\)\)")
    (disc / "config.json").write_text(json.dumps(settings))
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(disc / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if "layer.1.output.dense" not in k}, str(disc / "model.safetensors"))
    fails(r"missing 2: electra.encoder.layer.1.output.dense.bias, electra.encoder.layer.1.output.dense.weight")
    save_file({**tensors, "extra.weight": np.zeros(3, np.float32)}, str(disc / "model.safetensors"))
    fails("unexpected 1: extra.weight")
    save_file(tensors, str(disc / "model.safetensors"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty"):
        import_hf(tmp_path / "hf", tmp_path / "out", log=lambda *_: None)
    assert (tmp_path / "out" / "keep.txt").read_text() == "precious"


SELECTRA_SNIPPET = '''
from transformers import ElectraForPreTraining, ElectraTokenizerFast

discriminator = ElectraForPreTraining.from_pretrained(MODEL)
tokenizer = ElectraTokenizerFast.from_pretrained(MODEL)

sentence_with_fake_token = "Estamos desayunando pan rosa con tomate y aceite de oliva."

inputs = tokenizer.encode(sentence_with_fake_token, return_tensors="pt")
logits = discriminator(inputs).logits.tolist()[0]

print("\\t".join(tokenizer.tokenize(sentence_with_fake_token)))
print("\\t".join(map(lambda x: str(x)[:4], logits[1:-1])))
'''

KOELECTRA_SNIPPET = '''
from transformers import ElectraModel, ElectraTokenizer

model = ElectraModel.from_pretrained(MODEL)
tokenizer = ElectraTokenizer.from_pretrained(MODEL)
tokens = tokenizer.tokenize("[CLS] 한국어 ELECTRA를 공유합니다. [SEP]")
print(tokens)
print(tokenizer.convert_tokens_to_ids(tokens))
'''

AUTO_SNIPPET = '''
from transformers import AutoModel, AutoTokenizer, pipeline

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(MODEL)
print(type(model).__name__, model(**tokenizer("Åse går på øen", return_tensors="pt")).last_hidden_state.shape)
print(tokenizer.tokenize("Åse går på øen"))
'''


def run_snippet(snippet: str, model_dir) -> str:
    code = f"MODEL = {str(model_dir)!r}\n" + snippet
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_seed_model_snippets_run_on_an_exported_smoke_run(tmp_path, tiny_corpus):
    from electra_jax.cli import main
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus.read_text() + "\nÅse går på øen. Estamos desayunando pan rosa con tomate.\n"
                      "한국어 ELECTRA를 공유합니다.\n" * 5)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"), "--run-dir", str(run),
                 "--no-progress", *TINY, "mesh.data=-1", "model.max_position_embeddings=128", "train.steps=4", "checkpoint.every_steps=2", f"data.corpus=[{corpus}]"]) == 0
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    disc = tmp_path / "hf" / "discriminator"

    lines = run_snippet(SELECTRA_SNIPPET, disc).strip().splitlines()
    tokens, logits = lines[0].split("\t"), lines[1].split("\t")
    assert "".join(t.removeprefix("##") for t in tokens).startswith("Estamosdesayunando") and len(tokens) == len(logits)
    assert all(float(x) == float(x) for x in logits)  # numbers, not NaN

    printed = run_snippet(KOELECTRA_SNIPPET, disc).strip().splitlines()
    tokens, ids = eval(printed[0]), eval(printed[1])  # noqa: S307 - our own subprocess's print of two lists
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and ids[0] == 2 and ids[-1] == 3 and len(ids) == len(tokens)

    auto = run_snippet(AUTO_SNIPPET, disc).strip().splitlines()
    pieces = eval(auto[1])  # noqa: S307
    assert auto[0].startswith("ElectraModel") and pieces[0].startswith("Å") and any("ø" in p for p in pieces)
    card = (disc / "README.md").read_text()
    assert "ElectraForPreTraining" in card and "4 steps" in card and "parameters" in card
    assert json.loads((disc / "tokenizer_config.json").read_text())["strip_accents"] is False


@pytest.mark.slow
def test_export_skips_a_checkpoint_still_being_written(tmp_path, tiny_corpus, capsys):
    from electra_jax.cli import main
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"), "--run-dir", str(run),
                 "--no-progress", *TINY, "mesh.data=-1", "train.steps=4", "checkpoint.every_steps=2",
                 f"data.corpus=[{tiny_corpus}]"]) == 0
    in_flight = run / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000"  # how Orbax names a save in progress
    (in_flight / "state").mkdir(parents=True)
    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert "exported step 4" in capsys.readouterr().out
    assert main(["export", str(run), str(tmp_path / "hf2"), "--step", "2"]) == 0
    assert main(["export", str(run), str(tmp_path / "hf3"), "--step", "3"]) == 2
    assert "no checkpoint for step 3" in capsys.readouterr().err and not (tmp_path / "hf3").exists()
    assert main(["export", str(run), str(tmp_path / "hf")]) == 2  # never overwrites a finished export
    assert "not empty" in capsys.readouterr().err


def test_import_reads_pytorch_model_bin(tmp_path):
    config = tiny_config(24, 48, 0.25)
    save_hf_pair(tmp_path / "hf", config)
    disc = tmp_path / "hf" / "discriminator"
    from safetensors.numpy import load_file
    tensors = load_file(str(disc / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, disc / "pytorch_model.bin")
    (disc / "model.safetensors").unlink()
    import_hf(disc, tmp_path / "run", log=lambda *_: None)  # the discriminator alone: a fresh generator
    _, params, _ = load_run_params(tmp_path / "run", None)
    np.testing.assert_array_equal(params["discriminator"]["encoder"]["layer_1"]["intermediate"]["kernel"],
                                  tensors["electra.encoder.layer.1.intermediate.dense.weight"].T)
