"""``labkit train | evaluate | predict --method dvis`` on an instance folder and on synthetic data (two stages)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from labkit.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write_folder(root, n=3, size=32):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((size, size)) * 50).astype(np.uint8)
        mask = np.zeros((size, size), np.uint16)
        mask[3:12, 3:12] = 5
        mask[16:28, 14 + i:26 + i] = 2
        img[mask > 0] += 150
        Image.fromarray(img).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")


SMALL = ["width=8", "depth=2", "window=9", "center=2", "dilation=2", "verifier_epochs=1", "verifier_width=8",
         "verifier_hidden=16", "min_area=4"]


def _train_evaluate_predict(capsys, tmp_path, data, extra=()):
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--method", "dvis", "--data", data, "--out", str(run), "--epochs", "1",
                           "--device", "cpu", "--batch-size", "2", *extra, "--set", *SMALL)
    assert code == 0, err
    assert (run / "model.pt").is_file() and (run / "verification" / "model.pt").is_file()
    decode = json.loads((run / "decode.json").read_text())
    assert decode["verifier"] == str((run / "verification").resolve())
    for params in ([], ["--set", f"verifier={run / 'verification'}", "verify_threshold=0.0"]):
        code, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(run / "model.pt"), "--data", data,
                                 "--json", str(tmp_path / "eval.json"), *params)
        assert code == 0, err
        results = json.loads((tmp_path / "eval.json").read_text())
        assert results["method"] == "dvis" and {"ap", "ap50", "ap75"} <= set(results) and results["n_images"] > 0
    return run


def test_train_evaluate_predict_on_an_instance_folder(capsys, tmp_path):
    _write_folder(tmp_path / "ds")
    run = _train_evaluate_predict(capsys, tmp_path, str(tmp_path / "ds"), extra=("--crop", "32"))
    code, _, err = run_cli(capsys, "predict", "--checkpoint", str(run / "model.pt"), "--input", str(tmp_path / "ds"),
                           "--out", str(tmp_path / "pred"), "--set", f"verifier={run / 'verification'}")
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "pred" / "img0.png"))
    assert mask.dtype == np.uint16 and mask.shape == (32, 32)
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert index["method"] == "dvis" and set(index["images"]) == {"img0", "img1", "img2"}
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(tmp_path / "ds"),
                           "--set", "bandwidth=0.5")
    assert code == 2 and "unknown decoding parameter" in err
    # tune sweeps decode_grid() and keeps the verifier that post_train recorded
    code, _, err = run_cli(capsys, "tune", "--checkpoint", str(run / "model.pt"), "--data", str(tmp_path / "ds"),
                           "--tile", "0")
    assert code == 0, err
    decode = json.loads((run / "decode.json").read_text())
    assert decode["verifier"] == str((run / "verification").resolve())
    assert {"fg_threshold", "min_area", "verify_threshold"} <= set(decode)


@pytest.mark.slow
def test_train_evaluate_predict_on_synthetic(capsys, tmp_path):
    run = _train_evaluate_predict(capsys, tmp_path, "synthetic:sticks")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", str(run / "model.pt"), "--input", "synthetic:sticks",
                           "--out", str(tmp_path / "pred"), "--set", f"verifier={run / 'verification'}")
    assert code == 0, err
    assert len(json.loads((tmp_path / "pred" / "predictions.json").read_text())["images"]) == 50
