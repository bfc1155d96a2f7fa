"""hf/importer.py's reading of weight files: a damaged file or a pickle with objects is one line, not a
traceback (and never runs the pickle's code)."""
import json
import os

import pytest

from electra_jax.cli import main


def _folder(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "electra"}))
    return folder


def test_a_truncated_safetensors_file_is_one_line(tmp_path, capsys):
    from safetensors.numpy import save_file
    import numpy as np
    folder = _folder(tmp_path)
    save_file({"w": np.zeros((64, 64), np.float32)}, str(folder / "model.safetensors"))
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert main(["import", str(folder), str(tmp_path / "out")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "is damaged or incomplete" in errors[0], errors
    assert not (tmp_path / "out").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_holding_objects_is_refused_without_running_them(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    folder = _folder(tmp_path)
    torch.save({"w": _RunsCode()}, folder / "pytorch_model.bin")
    monkeypatch.chdir(tmp_path)
    assert main(["import", str(folder), str(tmp_path / "out")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "holds Python objects other than tensors" in errors[0], errors
    assert "weights_only=False" not in errors[0]
    assert not (tmp_path / "PWNED").exists()
