"""recipes/: every seed's recipe at --scale tpu prints full-size commands whose configs resolve and carry the
seed's sizes; at --scale cpu (shortened: 8 pretraining steps, 1 epoch on 100 sentences) each runs end to end on
the shared data and ends with its model card's snippet working on what it produced."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from electra_jax.config import load_config

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
NAMES = ["aelaectra_danish", "selectra_spanish", "albert_german", "koelectra_korean", "mbert_swedish_distilled"]


def recipe(name: str):
    sys.path.insert(0, str(RECIPES))
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECIPE


def printed_commands(name: str) -> list[list[str]]:
    out = subprocess.run([sys.executable, str(RECIPES / f"{name}.py"), "--scale", "tpu", "--bucket", "gs://b"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [shlex.split(line) for line in out.stdout.splitlines() if line and not line.startswith("#")]


def launched_config(words: list[str]):
    """The config a printed `launch/tpu.sh babysit ... -- ARGS` resolves to (a bucket path read as the repo's
    own preset: only the overrides are checked)."""
    args = words[words.index("--") + 1:]
    config = args[args.index("--config") + 1]
    overrides = [a for a in args if "=" in a and not a.startswith("-") and "gs://" not in a]
    return load_config(REPO / config if not config.startswith("gs://") else None, overrides)


SEED_SIZES = {  # what each seed's card or code says, as the printed commands must carry it
    "aelaectra_danish": (["--vocab-size", "32000", "--no-lowercase"], dict(hidden_size=256, num_layers=12,
                         embedding_size=128, vocab_size=32000, seq_len=128, batch_size=128, steps=1_000_000)),
    "selectra_spanish": (["--vocab-size", "50000", "--limit-alphabet", "1000"], dict(hidden_size=384, num_layers=12,
                         vocab_size=50000, seq_len=512, batch_size=128, steps=300_000, restarts=(150_000,))),
    "albert_german": (["--kind", "sentencepiece", "--vocab-size", "30000"], dict(hidden_size=768, num_layers=12,
                      embedding_size=128, vocab_size=30000, seq_len=512, batch_size=4096)),
    "koelectra_korean": (["--vocab-size", "35000", "--limit-alphabet", "6000", "--unused", "200"],
                         dict(hidden_size=256, num_layers=12, vocab_size=35000, seq_len=512, batch_size=512,
                              steps=800_000, generator_fraction=1.0)),
}


def sizes(config) -> dict:
    m, d, t, s = config.model, config.data, config.train, config.schedule
    return dict(hidden_size=m.hidden_size, num_layers=m.num_layers, embedding_size=m.embedding_size,
                vocab_size=d.vocab_size, seq_len=d.seq_len, batch_size=t.batch_size, steps=t.steps,
                restarts=tuple(s.restarts), generator_fraction=getattr(m, "generator_fraction", None))


@pytest.mark.parametrize("name", list(SEED_SIZES))
def test_tpu_scale_prints_the_seeds_full_size_commands(name):
    commands = printed_commands(name)
    tokenizer_words, expected = SEED_SIZES[name]
    tok = next(c for c in commands if c[:3] == ["electra-jax", "tokenizer", "train"])
    assert " ".join(tokenizer_words) in " ".join(tok)
    babysit = [c for c in commands if len(c) > 1 and c[1] == "babysit"]
    assert len(babysit) == 1 and "--spot" in babysit[0] and "--gcsfuse" in babysit[0]
    got = sizes(launched_config(babysit[0]))
    assert {k: got[k] for k in expected} == expected
    assert [c[1] for c in commands if c[0].endswith("tpu.sh")] == ["create", "setup", "babysit", "delete"]
    assert any(c[:2] == ["electra-jax", "finetune"] for c in commands)


def test_tpu_scale_swedish_adapts_the_teacher_then_distils_six_layers():
    commands = printed_commands("mbert_swedish_distilled")
    assert commands[0][:2] == ["electra-jax", "import"] and commands[0][-2:] == ["--config",
                                                                                 str(REPO / "configs" / "bert_mlm.yaml")]
    babysit = [c for c in commands if len(c) > 1 and c[1] == "babysit"]
    assert [c[c.index("--command") + 1] for c in babysit] == ["pretrain", "distill"]
    distill = babysit[1][babysit[1].index("--") + 1:]
    assert distill[distill.index("--student-layers") + 1] == "6" and "--no-freeze-embeddings" in distill
    assert load_config(REPO / "configs" / "distill_mbert.yaml",
                       [a for a in distill if "=" in a and "gs://" not in a]).data.seq_len == 512


def test_cpu_scale_commands_resolve_without_running(tmp_path):
    """Every cpu-scale pretraining command's config and overrides load (a typo would fail only minutes in)."""
    import argparse
    for name in NAMES:
        r = recipe(name)
        args = argparse.Namespace(corpus=None, steps=40, epochs=1, seeds=1, max_sentences=0, teacher=None,
                                  student_layers=None)
        for step in r.cpu(args, tmp_path / name):
            if step.argv[:1] == ("pretrain",):
                argv = list(step.argv)
                overrides = [a for a in argv if "=" in a and not a.startswith("-") and "prepared=" not in a]
                config = load_config(argv[argv.index("--config") + 1], overrides)
                assert config.train.steps == 40, name


def run_recipe(name: str, out: Path, *extra: str) -> str:
    # One CPU device, as a user's machine has: conftest's eight fake devices would make every step an 8-way
    # all-reduce, whose rendezvous XLA aborts after 40 s when the other test worker holds both cores.
    env = {**os.environ, "XLA_FLAGS": os.environ.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", "").strip()}
    result = subprocess.run([sys.executable, str(RECIPES / f"{name}.py"), "--out", str(out), "--steps", "8",
                             "--epochs", "1", "--max-sentences", "100", *extra],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def check_scores(out: Path, tasks: list[str]) -> None:
    scores = json.loads((out / "scores.json").read_text())
    assert sorted(scores) == sorted(tasks)
    for score in scores.values():
        assert 0.0 <= score["dev"] <= 1.0 and 0.0 <= score["test"] <= 1.0


@pytest.mark.slow
def test_danish_and_korean_electra_recipes_run_end_to_end(shared_data, tmp_path):
    printed = run_recipe("aelaectra_danish", tmp_path / "da")
    check_scores(tmp_path / "da", ["DaNE NER", "DaNE NER without MISC"])
    assert "ElectraForPreTraining torch.Size([1," in printed  # the card's AutoModelForPreTraining loads it
    printed = run_recipe("koelectra_korean", tmp_path / "ko")
    check_scores(tmp_path / "ko", ["KLUE NER"])
    tokens, ids = printed.strip().splitlines()[-2:]
    assert tokens.startswith("['[CLS]', '한국어'") and ids.startswith("[2, ")
    vocab = (tmp_path / "ko" / "tokenizer" / "vocab.txt").read_text().splitlines()
    assert vocab[5:205] == [f"[unused{i}]" for i in range(200)]
    split = {part: len((tmp_path / "ko" / "data" / "klue" / f"{part}.tsv").read_text().split("\n\n")) - 1
             for part in ("train", "dev", "test")}
    assert sum(split.values()) == 5000 and split["dev"] > 400 and split["test"] > 400  # KLUE dev's 5,000 sentences
    again = run_recipe("koelectra_korean", tmp_path / "ko")  # finished steps are skipped
    assert "already done" in again and "electra-jax pretrain" in again  # pretraining resumes (finished: a no-op)


@pytest.mark.slow
def test_spanish_german_and_swedish_recipes_run_end_to_end(shared_data, tmp_path):
    printed = run_recipe("selectra_spanish", tmp_path / "es")
    check_scores(tmp_path / "es", ["AnCora NER", "UD Spanish-GSD POS"])
    tokens, logits = printed.strip().splitlines()[-2:]
    assert tokens.split("\t")[0].startswith("Esta") and len(tokens.split("\t")) == len(logits.split("\t"))
    schedule = yaml.safe_load((tmp_path / "es" / "pretrain" / "config.yaml").read_text())["schedule"]
    assert schedule["restarts"] == [4]  # SELECTRA's warm restart, half-way
    printed = run_recipe("albert_german", tmp_path / "de")
    check_scores(tmp_path / "de", ["GermEval 2014 NER"])
    assert printed.strip().splitlines()[-1].startswith("[")  # the card's pipeline('ner') answers a list
    printed = run_recipe("mbert_swedish_distilled", tmp_path / "sv")
    check_scores(tmp_path / "sv", ["Webbnyheter NER"])
    assert "BertModel torch.Size([1," in printed
    student = json.loads((tmp_path / "sv" / "hf" / "config.json").read_text())
    assert student["num_hidden_layers"] == 2
