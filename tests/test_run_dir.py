"""run_dir.py and checkpoint.py as a user meets them through `electra-jax pretrain` and `export`: a refused
resume writes nothing, a damaged newest checkpoint falls back to an intact one (left on disk), a failed
first run leaves no tokenizer, and every corpus path reads text through the one reader."""
import gzip
import json
import shutil

import pytest

from electra_jax.cli import main
from electra_jax.run_dir import load_run_params
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)

SMOKE = str(REPO / "configs" / "electra_smoke.yaml")


def _pretrain(run_dir, *overrides, config=SMOKE):
    return main(["pretrain", "--config", str(config), "--run-dir", str(run_dir), "--no-progress", *TINY,
                 "checkpoint.keep=5", "mesh.data=-1", *overrides])  # all 8 of the test process's devices


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    """4 steps with checkpoints at 2 and 4."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert _pretrain(run_dir, f"data.prepared={prepared}", "train.steps=4", "checkpoint.every_steps=2") == 0
    return run_dir


@pytest.fixture
def run(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _truncate_arrays(checkpoint) -> None:
    """Cut every array file of the checkpoint to a third, as a full disk or an interrupted copy leaves it."""
    for blob in (checkpoint / "state").rglob("*"):
        if blob.is_file() and blob.parent.name == "d":
            blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])


def test_a_changed_model_shape_is_refused_and_config_yaml_is_left_as_it_was(run, prepared, capsys):
    before = (run / "config.yaml").read_bytes()
    assert _pretrain(run, f"data.prepared={prepared}", "train.steps=6", "model.hidden_size=64") == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert "model.hidden_size=64" in errors[0] and "model.hidden_size=32" in errors[0] and "--run-dir" in errors[0]
    assert (run / "config.yaml").read_bytes() == before
    # The documented continue command still works, and so does export.
    assert main(["pretrain", "--config", str(run / "config.yaml"), "--run-dir", str(run), "--no-progress",
                 "train.steps=6"]) == 0
    assert "resumed from step 4" in capsys.readouterr().out
    assert main(["export", str(run), str(run.parent / "hf")]) == 0


def test_another_batch_size_is_refused_before_anything_is_written(run, prepared, capsys):
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert _pretrain(run, f"data.prepared={prepared}", "train.steps=6", "train.batch_size=8") == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "train.batch_size=8" in errors[0] and "train.batch_size=16" in errors[0], errors
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.name != ".lock"} == {
        p: t for p, t in before.items() if p.name != ".lock"}


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(run, prepared, capsys):
    _truncate_arrays(run / "checkpoints" / "4")
    # export (and finetune --init, through the same reader) passes it over with one warning
    config, params, step = load_run_params(run, None, log=print)
    assert step == 2
    out = capsys.readouterr().out
    assert "warning: checkpoint 4" in out and "using step 2" in out and "Traceback" not in out
    # the trainer resumes from step 2, moves the damaged checkpoint aside (kept) and saves step 4 again
    assert _pretrain(run, f"data.prepared={prepared}", "train.steps=6", "checkpoint.every_steps=2") == 0
    captured = capsys.readouterr()
    assert "resumed from step 2" in captured.out and "Traceback" not in captured.out + captured.err
    assert (run / "checkpoints.damaged" / "4" / "state").is_dir()
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4, 6]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the first steps 3 and 4 went to metrics.discarded.jsonl
    assert [json.loads(line)["step"] for line in (run / "metrics.discarded.jsonl").read_text().splitlines()] == [3, 4]


@pytest.mark.parametrize("damage", ["no_state_folder", "garbled_metadata"])
def test_other_damage_falls_back_too(run, damage):
    state = run / "checkpoints" / "4" / "state"
    if damage == "no_state_folder":
        shutil.rmtree(state)
    else:
        (state / "_METADATA").write_text("{not json")
    warnings = []
    assert load_run_params(run, None, log=warnings.append)[2] == 2
    assert len(warnings) == 1 and warnings[0].startswith("warning: checkpoint 4")


def test_no_intact_checkpoint_is_one_line(run, capsys):
    for step in ("2", "4"):
        shutil.rmtree(run / "checkpoints" / step / "state")
    assert main(["export", str(run), str(run.parent / "hf")]) == 2
    errors = [line for line in _errors(capsys) if not line.startswith("warning:")]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0], errors
    assert (run / "checkpoints" / "4").is_dir()  # never deleted


def test_a_failed_first_run_leaves_no_tokenizer_and_the_corpus_goes_through_the_one_reader(tmp_path, tiny_corpus,
                                                                                            capsys):
    """An empty corpus fails without leaving a tokenizer; the rerun on a .gz corpus with stray Latin-1 bytes
    trains its own, reading the text as `prepare` does (repairs counted in the tokenizer's skip report)."""
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    run = tmp_path / "run"
    assert _pretrain(run, f"data.corpus=[{empty}]", "train.steps=4") == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "no text found" in errors[0], errors
    assert not (run / "tokenizer").exists() and not list(run.glob(".tokenizer*"))
    text = tiny_corpus.read_bytes().replace(b"the ", b"caf\xe9 the ", 3)  # three stray Latin-1 bytes
    corpus = tmp_path / "corpus.txt.gz"
    corpus.write_bytes(gzip.compress(text))
    assert _pretrain(run, f"data.corpus=[{corpus}]", "train.steps=4") == 0
    assert len((run / "tokenizer" / "vocab.txt").read_text().splitlines()) == 300
    printed = capsys.readouterr().out
    tokenizer_report = printed[printed.index("training a wordpiece tokenizer"):printed.index("prepared ")]
    assert "invalid UTF-8 lines repaired" in tokenizer_report  # the tokenizer's skip report, as prepare's
    coverage = json.loads((run / "tokenizer" / "coverage.json").read_text())
    assert coverage["skipped"]["invalid_utf8_lines_repaired"] >= 1


def test_a_tokenizer_of_special_tokens_only_is_refused(tmp_path, tiny_corpus, capsys):
    from electra_jax.data.tokenizer import SPECIAL_TOKENS, save_tokenizer, wordpiece_from_vocab
    run = tmp_path / "run"
    save_tokenizer(wordpiece_from_vocab({t: i for i, t in enumerate(SPECIAL_TOKENS)}, lowercase=False,
                                        strip_accents=False), run / "tokenizer")  # what an old failed run left
    assert _pretrain(run, f"data.corpus=[{tiny_corpus}]", "train.steps=4") == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "holds only its 5 special tokens" in errors[0], errors
