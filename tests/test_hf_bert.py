"""BERT: import of BertForPreTraining / BertForMaskedLM / BertModel with logits parity to 1e-4, export as
BertForMaskedLM (bit-exact round trip), fine-tuning heads exported as BertFor…Classification, and the refusal
to pretrain one from scratch."""
import dataclasses
import json
import shutil

import numpy as np
import pytest

from electra_jax.cli import main
from electra_jax.config import ConfigError, load_config
from electra_jax.hf.export import export
from electra_jax.run_dir import load_run_params
from electra_jax.hf.importer import import_hf
from electra_jax.models.bert import Bert
from electra_jax.validation import validate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_bert(tiny_corpus, tmp_path_factory):
    """A random BertForPreTraining (pooler and next-sentence head included, as multilingual BERT is published)
    with a cased WordPiece vocabulary."""
    root = tmp_path_factory.mktemp("hf-bert")
    assert main(["tokenizer", "train", "--input", str(tiny_corpus), "--out", str(root / "tok"),
                 "--vocab-size", "300"]) == 0
    vocab = len((root / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a wrong mapping cannot hide
        for name, tensor in model.named_parameters():
            if name.endswith(("bias", "LayerNorm.weight")):
                tensor.add_(torch.randn_like(tensor) * 0.1)
    folder = root / "bert"
    model.save_pretrained(folder)
    shutil.copy(root / "tok" / "vocab.txt", folder / "vocab.txt")
    settings = json.loads((root / "tok" / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "BertTokenizer"}))
    return folder


def _batch(vocab):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, size=(3, 20))
    ids[:, 0], ids[:, 9], ids[:, 19] = 2, 3, 3
    ids[2, 15:], ids[2, 14] = 0, 3
    segments = np.zeros_like(ids)
    segments[:, 10:] = 1
    return ids, segments, (ids != 0).astype(np.int64)


def _ours(run_dir):
    config, params, _ = load_run_params(run_dir, None)
    ids, segments, attention = _batch(config.model.vocab_size)
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    return config, params, np.asarray(Bert(config.model).apply({"params": params}, ids, segments, attention,
                                                               positions))


def _theirs(folder, cls, vocab):
    ids, segments, attention = _batch(vocab)
    with torch.no_grad():
        return cls.from_pretrained(folder).eval()(torch.from_numpy(ids), attention_mask=torch.from_numpy(attention),
                                                  token_type_ids=torch.from_numpy(segments))


def test_import_export_round_trip(hf_bert, tmp_path, capsys):
    import_hf(hf_bert, tmp_path / "run")
    assert "cls.seq_relationship.bias, cls.seq_relationship.weight" in capsys.readouterr().out  # named, not kept
    config, params, logits = _ours(tmp_path / "run")
    assert (config.model.architecture, config.model.embedding_size, config.model.num_layers) == ("bert", 32, 3)
    vocab, real = config.model.vocab_size, _batch(config.model.vocab_size)[2].astype(bool)
    theirs = _theirs(hf_bert, transformers.BertForPreTraining, vocab).prediction_logits.numpy()
    np.testing.assert_allclose(logits[real], theirs[real], atol=1e-4, rtol=1e-4)
    pooled = _theirs(hf_bert, transformers.BertModel, vocab).pooler_output.numpy()
    hidden = Bert(config.model).apply({"params": params}, *_batch(vocab), method=Bert.encode)
    ours_pooled = Bert(config.model).apply({"params": params}, hidden, method=Bert.pool)
    np.testing.assert_allclose(np.asarray(ours_pooled), pooled, atol=1e-4, rtol=1e-4)

    export(tmp_path / "run", tmp_path / "out")
    exported = _theirs(tmp_path / "out", transformers.BertForMaskedLM, vocab).logits.numpy()
    np.testing.assert_allclose(exported[real], logits[real], atol=1e-4, rtol=1e-4)
    from safetensors.numpy import load_file
    original, written = load_file(str(hf_bert / "model.safetensors")), load_file(str(tmp_path / "out" /
                                                                                      "model.safetensors"))
    assert written and all(np.array_equal(tensor, original[name]) for name, tensor in written.items())  # bit-exact
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    from electra_jax.data.text_tokenizer import load_text_tokenizer
    ours = load_text_tokenizer(tmp_path / "run" / "tokenizer")
    for text in ("Åse går på øen i Aarhus.", "Vi tæller en, to, tre."):
        assert tokenizer(text)["input_ids"] == [2, *ours.encode_lines([text])[0], 3]
    # The exported BertForMaskedLM comes back as the same parameters (its file has no pooler: that stays fresh).
    import_hf(tmp_path / "out", tmp_path / "again")
    _, again, again_logits = _ours(tmp_path / "again")
    np.testing.assert_array_equal(again_logits, logits)


def test_bert_models_are_not_pretrained_from_scratch(hf_bert, tmp_path):
    import_hf(hf_bert, tmp_path / "run")
    from electra_jax.train import pretrain
    with pytest.raises(ConfigError, match="model.architecture=bert is for imported models and distilled students"):
        pretrain(load_config(tmp_path / "run" / "config.yaml"), tmp_path / "run")
    config = load_config(tmp_path / "run" / "config.yaml")
    with pytest.raises(ConfigError, match="set model.embedding_size=32"):
        validate(dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_size=16)))


@pytest.mark.slow
def test_bert_fine_tuning_heads(hf_bert, tmp_path):
    """finetune --init on the HF folder itself (imported first); both exports load as BertFor…Classification
    with our logits."""
    from tests.test_finetune import _assert_hf_parity
    sentences = ["Åse bor i Aarhus .", "Netto ligger i Odense .", "Peter køber chili ."]
    tags = [["B-PER", "O", "O", "B-LOC", "O"], ["B-ORG", "O", "O", "B-LOC", "O"], ["B-PER", "O", "O", "O"]]
    conll = "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s.split(), ts)) for s, ts in zip(sentences, tags))
    (tmp_path / "ner.tsv").write_text(conll + "\n", encoding="utf-8")
    pairs = "text\tpair\tlabel\n" + "".join(f"{a}\t{b}\t{label}\n" for a, b, label in [
        (sentences[0], sentences[1], "yes"), (sentences[1], sentences[2], "no"), (sentences[2], sentences[0], "yes")])
    (tmp_path / "pairs.tsv").write_text(pairs, encoding="utf-8")
    common = ["--init", str(hf_bert), "--epochs", "2", "--batch-size", "2", "--seq-len", "32"]
    assert main(["finetune", "--task", "ner", "--train", str(tmp_path / "ner.tsv"), "--dev", str(tmp_path / "ner.tsv"),
                 "--out", str(tmp_path / "ner"), *common]) == 0
    _assert_hf_parity(tmp_path / "ner" / "init", tmp_path / "ner" / "hf", True, sentences[:2], sentences[1:])
    assert main(["finetune", "--task", "classify", "--train", str(tmp_path / "pairs.tsv"), "--dev",
                 str(tmp_path / "pairs.tsv"), "--pair-field", "pair", "--out", str(tmp_path / "classify"),
                 *common]) == 0
    _assert_hf_parity(tmp_path / "classify" / "init", tmp_path / "classify" / "hf", False, sentences[:2],
                      sentences[1:])
    assert json.loads((tmp_path / "classify" / "hf" / "config.json").read_text())["id2label"] == {"0": "no",
                                                                                                  "1": "yes"}


def test_hidden_states_and_attention_probabilities_match_hf(hf_bert, tmp_path):
    """What distillation matches: every layer's hidden states and attention probabilities, as HF's
    output_hidden_states / output_attentions give them."""
    import_hf(hf_bert, tmp_path / "run")
    config, params, _ = load_run_params(tmp_path / "run", None)
    ids, segments, attention = _batch(config.model.vocab_size)
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    _, state = Bert(config.model).apply({"params": params}, ids, segments, attention, positions,
                                        mutable=["intermediates"])
    encoder = state["intermediates"]["encoder"]
    hidden = encoder["hidden_states"]
    probs = [encoder[f"layer_{i}"]["attention"]["attention_probs"][0] for i in range(config.model.num_layers)]
    with torch.no_grad():
        theirs = transformers.BertModel.from_pretrained(hf_bert, attn_implementation="eager").eval()(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(attention),
            token_type_ids=torch.from_numpy(segments), output_hidden_states=True, output_attentions=True)
    assert len(hidden) == len(theirs.hidden_states) == config.model.num_layers + 1
    real = attention.astype(bool)
    for ours, reference in zip(hidden, theirs.hidden_states):
        np.testing.assert_allclose(np.asarray(ours)[real], reference.numpy()[real], atol=1e-4)
    for ours, reference in zip(probs, theirs.attentions):
        np.testing.assert_allclose(np.asarray(ours), reference.numpy(), atol=1e-5)
