"""BERT: import of BertForPreTraining / BertForMaskedLM / BertModel with logits parity to 1e-4, export as
BertForMaskedLM (bit-exact round trip), fine-tuning heads exported as BertFor…Classification, and masked-LM
adaptation (80/10/10 masking, whole words; the loss falls on Swedish text; the export's logits are ours)."""
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


def test_bert_config_checks(hf_bert, tmp_path):
    import_hf(hf_bert, tmp_path / "run")
    config = load_config(tmp_path / "run" / "config.yaml")
    with pytest.raises(ConfigError, match="set model.embedding_size=32"):
        validate(dataclasses.replace(config, model=dataclasses.replace(config.model, embedding_size=16)))


@pytest.mark.slow
def test_masked_lm_adaptation_of_an_imported_bert(shared_data, tmp_path):
    """The Swedish recipe's first step: a BERT (random here, with a Swedish WordPiece) imported with
    configs/bert_mlm.yaml and pretrained by masked LM of whole words on Swedish text: the loss falls, and the
    export is a BertForMaskedLM with our logits (1e-4)."""
    from electra_jax.metrics import read_metrics
    from electra_jax.train import pretrain
    lines = [line for line in (shared_data / "raw_text" / "libreoffice_help_sv.txt").read_text(
        encoding="utf-8").splitlines() if len(line) > 40][:3000]
    (tmp_path / "sv.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["tokenizer", "train", "--input", str(tmp_path / "sv.txt"), "--out", str(tmp_path / "tok"),
                 "--vocab-size", "2000"]) == 0
    vocab = len((tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=64))
    model.save_pretrained(tmp_path / "bert")
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tmp_path / "tok" / name, tmp_path / "bert" / name)
    from tests.conftest import REPO
    import_hf(tmp_path / "bert", tmp_path / "run", base_config=REPO / "configs" / "bert_mlm.yaml")
    config = load_config(tmp_path / "run" / "config.yaml", [
        f"data.corpus=[{tmp_path / 'sv.txt'}]", "data.seq_len=64", "train.steps=150", "train.batch_size=16",
        "schedule.warmup_steps=10", "optimizer.learning_rate=1e-3", "checkpoint.every_steps=150",
        "objective.whole_word_masking=true"])
    assert (config.model.architecture, config.objective.mask_token_prob, config.objective.random_token_prob) == (
        "bert", 0.8, 0.1)
    pretrain(config, tmp_path / "run", progress=False)
    records = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "mlm_loss" in r]
    first, last = records[0]["mlm_loss"], records[-1]["mlm_loss"]
    assert last < first - 0.7, (first, last)  # measured: 7.55 -> 6.39 nats over 150 steps (single tokens: 6.28)
    export(tmp_path / "run", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    _, _, logits = _ours(tmp_path / "run")
    exported = _theirs(tmp_path / "out", transformers.BertForMaskedLM, vocab).logits.numpy()
    real = _batch(vocab)[2].astype(bool)
    np.testing.assert_allclose(exported[real], logits[real], atol=1e-4, rtol=1e-4)


def test_bert_masking_is_80_10_10():
    """Of the selected positions 80% [MASK], 10% a random ordinary token, 10% unchanged; whole words stay whole."""
    import jax
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.objectives.bert import BertMlmObjective
    specials = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    config = load_config(None, ["model.architecture=bert", "model.embedding_size=32", "model.hidden_size=32",
                                "model.vocab_size=1000", "model.num_heads=2", "data.seq_len=128",
                                "objective.mask_token_prob=0.8",
                                "objective.random_token_prob=0.1", "objective.whole_word_masking=true"])
    word_starts = np.ones(1000, bool)
    word_starts[500:] = False  # ids from 500 continue a word
    objective = BertMlmObjective(config, None, specials, word_starts)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (256, 128))
    ids[:, 0], ids[:, -1] = 2, 3
    batch = {"input_ids": jax.numpy.asarray(ids), "segment_ids": jax.numpy.zeros_like(ids)}
    whole, counts = jax.jit(objective.prepare)(jax.random.split(jax.random.key(0)), batch)
    masked = whole["masked"]
    weights = np.asarray(masked.weights_BxP) > 0
    positions = np.asarray(masked.positions_BxP)
    seen = np.take_along_axis(np.asarray(masked.input_ids_BxL), positions, 1)[weights]
    labels = np.asarray(masked.labels_BxP)[weights]
    share_mask, share_kept = (seen == 4).mean(), (seen == labels).mean()
    assert abs(share_mask - 0.8) < 0.02 and abs(share_kept - 0.1 - 0.001) < 0.02, (share_mask, share_kept)
    random = seen[(seen != 4) & (seen != labels)]
    assert len(random) / len(seen) == pytest.approx(0.1, abs=0.02) and random.min() >= 5  # ordinary tokens only
    assert abs(weights.sum(1).mean() / 126 - 0.15) < 0.02
    # Whole words: a selected continuation's word start is selected too.
    selected = np.zeros_like(ids, bool)
    np.put_along_axis(selected, positions, weights, 1)
    continuation = selected[:, 2:] & (ids[:, 2:] >= 500)  # position 1 begins a word whatever its id
    assert continuation.any() and selected[:, 1:-1][continuation].all()


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
