"""Fine-tuning building blocks: readers with one-line errors, IOB2 repair, seqeval-equal entity F1, and the
layerwise learning-rate multipliers."""
import dataclasses
import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from electra_jax.finetune.data import FinetuneDataError, check_labels, read_columns, read_conllu, read_sentences
from electra_jax.finetune.metrics import classification_scores, entity_scores, token_accuracy
from electra_jax.finetune.schemes import SCHEMES, from_iob2, tag_problem, to_iob2
from electra_jax.optim import layerwise_multipliers, scale_by_multipliers


def test_entity_f1_equals_seqeval_strict_iob2():
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.scheme import IOB2
    rng = random.Random(0)
    tags = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-LOCderiv"]
    for _ in range(400):  # random sequences, invalid ones (stray I-X) included
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 15))] for _ in range(rng.randint(1, 6))]
        predicted = [[rng.choice(tags) for _ in sentence] for sentence in gold]
        ours = entity_scores(gold, predicted)
        assert ours["f1"] == pytest.approx(seqeval.f1_score(gold, predicted, mode="strict", scheme=IOB2,
                                                            zero_division=0), abs=1e-12)
        report = seqeval.classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True,
                                               zero_division=0)
        for kind, scores in ours["per_type"].items():
            if scores["support"]:
                assert scores["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
                assert scores["support"] == report[kind]["support"]


def test_other_metrics():
    assert token_accuracy([["A", "B"], ["C"]], [["A", "X"], ["C"]]) == pytest.approx(2 / 3)
    scores = classification_scores(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert scores["accuracy"] == 0.75 and scores["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_readers_and_repair(tmp_path, shared_data):
    news = read_columns(shared_data / "danplus_ner" / "da_news_dev.tsv")
    assert len(news) == 564 and news[0].line == 1
    repaired = [to_iob2(s.tags, "iob2") for s in read_columns(shared_data / "danplus_ner" / "da_news_train.tsv")]
    assert sum(counts["stray"] for _, counts in repaired) > 0  # the stray I- tags the data README mentions
    assert all(not (a == "O" and b.startswith("I-")) for tags, _ in repaired for a, b in zip(["O", *tags], tags))
    ud = read_conllu(shared_data / "ud_pos" / "UD_Danish-DDT" / "da_ddt-ud-dev.conllu")
    assert len(ud) == 564 and ud[0].tokens == ["Hvor", "kommer", "julemanden", "fra", "?"]
    assert ud[0].tags == ["ADV", "VERB", "NOUN", "ADP", "PUNCT"]
    assert to_iob2(["O", "I-PER", "I-PER", "I-LOC", "B-ORG", "I-ORG"], "iob2") == (
        ["O", "B-PER", "I-PER", "B-LOC", "B-ORG", "I-ORG"], {"bare": 0, "stray": 2})


def test_io_tags_outside_tag_and_malformed_lines(tmp_path, shared_data):
    """The Swedish Webbnyheter corpus: IO tags (PER on every word of a name), 0 for outside, one line without
    a tag."""
    from electra_jax.finetune.tasks import TASKS
    from electra_jax.finetune.train import FinetuneOptions
    assert to_iob2(["0", "PER", "PER", "LOC", "0", "B-ORG", "I-ORG", "ORG"], "iob2", outside="0") == (
        ["O", "B-PER", "I-PER", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"], {"bare": 4, "stray": 0})
    train = shared_data / "extra_ner" / "sv_webbnyheter2012_train_corpus.txt"
    with pytest.raises(FinetuneDataError, match=r"train_corpus.txt:90310: 1 column\(s\).*--skip-malformed"):
        TASKS["ner"].read(train, FinetuneOptions(outside_tag="0"))
    with pytest.raises(FinetuneDataError, match="pass --outside-tag 0"):
        TASKS["ner"].read(train, FinetuneOptions(skip_malformed=True))
    sentences, note = TASKS["ner"].read(train, FinetuneOptions(outside_tag="0", skip_malformed=True))
    assert len(sentences) == 6885 and note.startswith("1 malformed line(s) left out (line 90310)")
    assert "IO tag(s) read as IOB2" in note and "0 stray I- tag(s) repaired" in note
    assert TASKS["ner"].labels(sentences) == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG",
                                              "I-PER", "O"]
    assert sentences[0].tokens[:3] == ["I", "längden", "torde"]
    bioes = tmp_path / "bioes.tsv"
    bioes.write_text("Åse\tS-PER\nbor\tO\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match="bioes.tsv:1: tag 'S-PER' does not fit --tag-scheme iob2 .*"
                                                "looks like --tag-scheme bioes"):
        TASKS["ner"].read(bioes, FinetuneOptions())
    test, _ = TASKS["ner"].read(train.with_name("sv_webbnyheter2012_test_corpus.txt"), FinetuneOptions(outside_tag="0"))
    assert (test[0].tokens[:3], test[0].tags[:3]) == (["Inger", "Atterstam", ":"], ["B-PER", "I-PER", "O"])


def _random_iob2(rng: random.Random) -> list[str]:
    """Valid IOB2 (no stray I-X), with adjacent entities of one type, which iob1 must keep apart."""
    tags = []
    for _ in range(rng.randint(1, 14)):
        tag = rng.choice(["O", "B-PER", "B-LOC", "I", "I", "B-PER"])
        tags.append(("I-" + tags[-1][2:] if tags and tags[-1] != "O" else "O") if tag == "I" else tag)
    return tags


def test_every_tag_scheme_round_trips_to_iob2():
    rng = random.Random(0)
    for scheme in SCHEMES:
        for _ in range(500):
            tags = _random_iob2(rng)
            written = from_iob2(tags, scheme, outside="0")
            assert all(tag_problem(tag, scheme, outside="0") is None for tag in written), (scheme, written)
            assert to_iob2(written, scheme, outside="0")[0] == tags, (scheme, tags, written)
    tags = ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert from_iob2(tags, "iob1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert from_iob2(tags, "bioes") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
    assert from_iob2(tags, "suffix") == ["PER-B", "PER-I", "PER-B", "O", "LOC-B"]
    # BILOU and underscore suffixes (X_B) read too; iob1's own I- starts are not counted as repairs.
    assert to_iob2(["U-PER", "B-LOC", "L-LOC"], "bioes")[0] == ["B-PER", "B-LOC", "I-LOC"]
    assert to_iob2(["PER_B", "PER_I", "O", "LOC_I"], "suffix") == (["B-PER", "I-PER", "O", "B-LOC"],
                                                                   {"bare": 0, "stray": 1})
    assert to_iob2(["I-PER", "O", "I-LOC"], "iob1") == (["B-PER", "O", "B-LOC"], {"bare": 0, "stray": 0})


def test_ner_layouts_germeval_suffix_klue_and_dropped_types(tmp_path):
    """GermEval 2014 (index, token, outer and nested tags; `#\t` source comments), Naver's suffix tags, KLUE's
    character lines (`## ` comments, spaces as tokens), and DaNE without MISC."""
    from electra_jax.finetune.tasks import TASKS
    from electra_jax.finetune.train import FinetuneOptions
    germeval = tmp_path / "germeval.tsv"
    germeval.write_text("#\thttp://de.wikipedia.org/wiki/Manfred_Korfmann [2009-10-17]\n1\tAufgrund\tO\tO\n"
                        "2\tseiner\tO\tO\n3\tFC\tB-ORG\tO\n4\tKickers\tI-ORG\tO\n5\tDarmstadt\tI-ORG\tB-LOC\n\n"
                        "#\tn-tv.de vom 26.02.2005 [2005-02-26]\n1\t#\tO\tO\n2\tHamburg\tB-LOC\tO\n", encoding="utf-8")
    sentences, note = TASKS["ner"].read(germeval, FinetuneOptions(token_column=1, tag_column=2))
    assert [s.tokens for s in sentences] == [["Aufgrund", "seiner", "FC", "Kickers", "Darmstadt"], ["#", "Hamburg"]]
    assert sentences[0].tags == ["O", "O", "B-ORG", "I-ORG", "I-ORG"] and sentences[1].lines == [9, 10]
    assert TASKS["ner"].read(germeval, FinetuneOptions(token_column=1, tag_column=3))[0][0].tags[-1] == "B-LOC"
    with pytest.raises(FinetuneDataError, match=r"germeval.tsv:2: tag 'Aufgrund' does not fit"):
        TASKS["ner"].read(germeval, FinetuneOptions(token_column=2, tag_column=1, tag_scheme="bioes"))
    naver = tmp_path / "naver.tsv"
    naver.write_text("비토리오\tPER-B\n양일\tDAT-B\n만에\tO\n\n김\tPER-B\n씨\tPER-I\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=r"naver.tsv:1: .*looks like --tag-scheme suffix"):
        TASKS["ner"].read(naver, FinetuneOptions())
    sentences, note = TASKS["ner"].read(naver, FinetuneOptions(tag_scheme="suffix"))
    assert [s.tags for s in sentences] == [["B-PER", "B-DAT", "O"], ["B-PER", "I-PER"]]
    assert "suffix tags read as IOB2" in note
    klue = tmp_path / "klue.tsv"
    klue.write_text("## 샘플명 : CHAR\tNE_TAG\n## klue-ner-v1_dev_00000-wikitree\t<한국:OG>에\n한\tB-OG\n"
                    " \tI-OG\n국\tI-OG\n에\tO\n", encoding="utf-8")
    sentences, note = TASKS["ner"].read(klue, FinetuneOptions())
    assert (sentences[0].tokens, sentences[0].tags) == (["한", "국", "에"], ["B-OG", "I-OG", "O"])
    assert note.startswith("1 whitespace token(s) left out (line 4)")
    dane = tmp_path / "dane.tsv"
    dane.write_text("Åse\tB-PER\nså\tO\nMatrix\tB-MISC\nReloaded\tI-MISC\n", encoding="utf-8")
    sentences, note = TASKS["ner"].read(dane, FinetuneOptions(drop_tags=("MISC",)), training=True)
    assert sentences[0].tags == ["B-PER", "O", "O", "O"] and "2 MISC tag(s) read as O" in note
    with pytest.raises(FinetuneDataError, match=r"dane.tsv: --drop-tags EVENT: no such entity type in the "
                                                r"training data \(types: MISC, PER\)"):
        TASKS["ner"].read(dane, FinetuneOptions(drop_tags=("EVENT",)), training=True)


def test_bad_input_is_one_line_with_file_and_line(tmp_path):
    cases = [("bad.tsv", "Åse\tB-PER\nbor\n", "bad.tsv:2: 1 column(s), no tag column 1"),
             ("empty.tsv", "\n\n", "empty.tsv: no examples"),
             ("bad.conllu", "1\tHvor\thvor\tADV\n", "bad.conllu:1: CoNLL-U lines have 10"),
             ("bad.jsonl", '{"text": "a", "label": "x"}\n{"text": \n', "bad.jsonl:2: not JSON"),
             ("rows.csv", "text,label\nhej,pos\nhallo,\n", "rows.csv:3: no value for label")]
    for name, content, message in cases:
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        reader = read_conllu if name.endswith(".conllu") else (
            read_sentences if name.endswith((".jsonl", ".csv")) else read_columns)
        with pytest.raises(FinetuneDataError) as error:
            reader(path)
        assert message in str(error.value) and "\n" not in str(error.value)
    dev = tmp_path / "dev.tsv"
    dev.write_text("Åse\tB-PER\n\nNetto\tB-SHOP\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=r"dev.tsv:3: label\(s\) B-SHOP never occur in the training data"):
        check_labels(read_columns(dev), {"O", "B-PER", "I-PER"}, dev)
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("premise\thypothesis\tlabel\nEn hund løber.\tEt dyr bevæger sig.\tentailment\n", encoding="utf-8")
    example = read_sentences(pairs, "premise", "hypothesis")[0]
    assert (example.text, example.pair, example.label, example.line) == ("En hund løber.", "Et dyr bevæger sig.",
                                                                         "entailment", 2)


def test_layerwise_multipliers_are_exact():
    params = {"embeddings": {"word_embeddings": {"embedding": jnp.ones((4, 2))}},
              "encoder": {f"layer_{i}": {"output": {"kernel": jnp.ones((2, 2))}} for i in range(3)},
              "classifier": {"kernel": jnp.ones((2, 3))}}
    multipliers = layerwise_multipliers(params, num_layers=3, decay=0.8)
    assert multipliers["classifier"]["kernel"] == 1.0
    assert [multipliers["encoder"][f"layer_{i}"]["output"]["kernel"] for i in (2, 1, 0)] == pytest.approx(
        [0.8, 0.64, 0.512])
    assert multipliers["embeddings"]["word_embeddings"]["embedding"] == pytest.approx(0.8 ** 4)
    # In the optimizer: one step with the multipliers equals AdamW with each learning rate scaled.
    grads = jax.tree.map(lambda x: x * 0.3, params)
    scaled = optax.chain(optax.adamw(1e-2, weight_decay=0.01), scale_by_multipliers(multipliers))
    updates, _ = scaled.update(grads, scaled.init(params), params)
    for (path, value), m in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(multipliers)):
        single = optax.adamw(1e-2 * m, weight_decay=0.01)
        expected, _ = single.update(value * 0.3, single.init(value), value)
        np.testing.assert_allclose(_get(updates, path), expected, rtol=1e-6)


def _get(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_albert_groups_are_the_layers_of_layerwise_decay():
    params = {"embedding_hidden_mapping_in": {"kernel": jnp.ones((2, 2))},
              **{f"group_{g}_layer_0": {"ffn": {"kernel": jnp.ones((2, 2))}} for g in range(2)},
              "pooler": {"kernel": jnp.ones((2, 2))}}
    multipliers = layerwise_multipliers(params, num_layers=2, decay=0.5)
    assert multipliers["group_1_layer_0"]["ffn"]["kernel"] == 0.5
    assert multipliers["group_0_layer_0"]["ffn"]["kernel"] == 0.25
    assert multipliers["embedding_hidden_mapping_in"]["kernel"] == 0.125 and multipliers["pooler"]["kernel"] == 1.0


class _Characters:
    """A stand-in tokenizer: one id per character."""
    from electra_jax.data.text_tokenizer import SpecialIds
    specials = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)

    @staticmethod
    def encode_lines(lines):
        return [[ord(c) for c in line] for line in lines]


def test_pairs_are_cut_longest_first_with_segments():
    from electra_jax.finetune.data import SentenceExample
    from electra_jax.finetune.tokens import encode_examples
    examples = [SentenceExample("abcdefgh", "xy", "a"), SentenceExample("abc", "xyz", "b"),
                SentenceExample("abcdefgh", None, "a")]
    pairs = encode_examples(examples[:2], _Characters(), {"a": 0, "b": 1}, seq_len=9)
    # room 6 of 10 tokens: the longer first sentence gives up tokens until both are as long, then the second
    assert pairs.input_ids[0].tolist() == [2, *map(ord, "abcd"), 3, *map(ord, "xy"), 3]
    assert pairs.segment_ids[0].tolist() == [0] * 6 + [1] * 3
    assert pairs.input_ids[1].tolist() == [2, *map(ord, "abc"), 3, *map(ord, "xyz"), 3]
    assert pairs.labels.tolist() == [0, 1] and pairs.truncated == 1
    single = encode_examples(examples[2:], _Characters(), {"a": 0}, seq_len=12)
    assert single.input_ids[0].tolist() == [2, *map(ord, "abcdefgh"), 3, 0, 0]
    assert single.segment_ids[0].tolist() == [0] * 12 and single.truncated == 0


def test_learning_rate_follows_the_model_size_and_help_shows_every_default():
    import argparse

    from electra_jax.cli import build_parser
    from electra_jax.config import load_config
    from electra_jax.finetune.sizes import size_defaults
    from tests.conftest import REPO
    chosen = {name: size_defaults(load_config(REPO / "configs" / f"electra_{name}.yaml").model)
              for name in ("smoke", "small", "medium", "base", "large")}
    assert chosen == {"smoke": (1e-3, 0.8), "small": (3e-4, 0.8), "medium": (3e-4, 0.8), "base": (1e-4, 0.8),
                      "large": (5e-5, 0.9)}

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)
    checked = 0
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            unset = any(action.default is value for value in (None, False, "", argparse.SUPPRESS))
            if action.option_strings and not unset and not isinstance(action, argparse._HelpAction):
                assert "default" in formatter._expand_help(action), (parser.prog, action.option_strings)
                checked += 1
    assert checked >= 25
    from electra_jax.cli import TASK_NAMES
    from electra_jax.finetune.tasks import TASKS
    assert TASK_NAMES == tuple(TASKS)  # the CLI names the tasks without importing them (and jax)
    text = build_parser()._subparsers._group_actions[0].choices["finetune"].format_help()
    assert "(default: 32)" in " ".join(text.split()) and "ELECTRA paper" in text


def test_regression_reads_numbers_and_scores_as_scipy(tmp_path):
    from scipy import stats

    from electra_jax.finetune.tasks import TASKS
    from electra_jax.finetune.train import FinetuneOptions
    task, options = TASKS["regression"], FinetuneOptions(task="regression", text_field="a", pair_field="b",
                                                      label_field="score")
    scores = tmp_path / "sts.tsv"
    scores.write_text("a\tb\tscore\nEn hund.\tEt dyr.\t3.8\nDet regner.\tSolen skinner.\tlav\n", encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=r"sts.tsv:3: score 'lav' is not a number .*--task classify"):
        task.read(scores, options)
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 200).astype(float)  # ties, as STS-B's scores have
    predicted = gold + rng.normal(0, 2, 200)
    items = [dataclasses.make_dataclass("E", ["label"])(g) for g in gold]
    ours = task.score(items, None, predicted, task.labels(items))
    assert ours["spearman"] == pytest.approx(stats.spearmanr(gold, predicted).statistic, abs=1e-12)
    assert ours["pearson"] == pytest.approx(stats.pearsonr(gold, predicted).statistic, abs=1e-12)
    assert task.score(items, None, np.ones(200), ["LABEL_0"])["spearman"] == 0.0  # constant: no correlation


def test_a_run_pretrained_with_an_accelerator_attention_kernel_fine_tunes_with_einsum(tmp_path, monkeypatch):
    """cuDNN's and splash's attention run on one kind of accelerator: fine-tuning (often on another machine)
    starts from the same weights with our attention, which runs everywhere."""
    from electra_jax.config import load_config
    from electra_jax.finetune import train as finetune_train
    pretrained = load_config(None, ["model.attention=cudnn", "model.attention_dropout_rate=0"])
    monkeypatch.setattr("electra_jax.run_dir.load_run_params", lambda init, step: (pretrained, {"encoder": 1}, 7))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("")
    logs = []
    config, _, _ = finetune_train.load_init(tmp_path / "run", tmp_path / "out", logs.append)
    assert config.model.attention == "einsum" and "the run used cudnn" in logs[-1]
