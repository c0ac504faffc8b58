"""The labkit command: user errors are one clear line (no traceback), and the
train -> evaluate -> predict path works on synthetic data and on an image folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from labkit.checkpoint import read_checkpoint
from labkit.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    assert err.startswith("labkit: error:")
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def test_unknown_method_key(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--method", "nope", "--data", "synthetic:shapes", "--out", str(tmp_path))
    assert_user_error(code, err, "'nope'", "semantic")


def test_unknown_synthetic_family(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--method", "semantic", "--data", "synthetic:blobz", "--out", str(tmp_path))
    assert_user_error(code, err, "blobz", "shapes")


def test_missing_data_folder(capsys, tmp_path):
    missing = tmp_path / "no_such_dir"
    code, _, err = run_cli(capsys, "evaluate", "--method", "components", "--data", str(missing))
    assert_user_error(code, err, "no_such_dir")


def test_missing_checkpoint(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "model.pt"), "--data", "synthetic:shapes")
    assert_user_error(code, err, "model.pt")


def _write_folder(root, n=2, size=40, with_mask=True):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((size, size)) * 1000).astype(np.uint16)
        mask = np.zeros((size, size), np.uint16)
        mask[5:15, 5:15] = 7
        mask[20:32, 18:30] = 3
        img[mask > 0] += 3000
        Image.fromarray(img).save(root / "images" / f"cell{i}.png")
        if with_mask or i == 0:
            Image.fromarray(mask).save(root / "masks" / f"cell{i}.png")


def test_image_without_mask_names_the_file(capsys, tmp_path):
    _write_folder(tmp_path / "ds", with_mask=False)
    code, _, err = run_cli(capsys, "evaluate", "--method", "components", "--data", str(tmp_path / "ds"))
    assert_user_error(code, err, "cell1")


def test_bad_set_syntax(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--method", "semantic", "--data", "synthetic:shapes",
                           "--out", str(tmp_path), "--set", "novalue")
    assert_user_error(code, err, "KEY=VALUE")


def test_methods_lists_keys(capsys):
    code, out, _ = run_cli(capsys, "methods")
    assert code == 0
    assert {"semantic", "watershed", "components"} <= set(out.split())


@pytest.mark.slow
def test_train_evaluate_predict_on_synthetic(capsys, tmp_path):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--method", "semantic", "--data", "synthetic:shapes",
                             "--out", str(run), "--epochs", "1", "--device", "cpu", "--schedule", "onecycle")
    assert code == 0, err
    assert (run / "model.pt").is_file() and (run / "history.json").is_file()
    assert read_checkpoint(run)["training"]["schedule"] == "onecycle"
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(run / "model.pt"),
                             "--data", "synthetic:shapes", "--json", str(tmp_path / "eval.json"))
    assert code == 0, err
    results = json.loads((tmp_path / "eval.json").read_text())
    assert 0.0 <= results["miou"] <= 1.0 and results["n_images"] > 0
    assert {"ap", "ap50", "ap75"} <= set(results)  # DESIGN: evaluate always writes mask AP
    assert "miou" in out


@pytest.mark.slow
def test_baseline_predict_on_user_folder(capsys, tmp_path):
    _write_folder(tmp_path / "ds")
    code, out, err = run_cli(capsys, "predict", "--method", "components", "--input", str(tmp_path / "ds"),
                             "--out", str(tmp_path / "pred"))
    assert code == 0, err
    mask = np.asarray(Image.open(tmp_path / "pred" / "cell0.png"))
    assert mask.dtype == np.uint16 and mask.shape == (40, 40)
    assert len(np.unique(mask[mask > 0])) == 2
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert set(index["images"]) == {"cell0", "cell1"}
    assert len(index["images"]["cell0"]["ids"]) == 2
    code, out, err = run_cli(capsys, "evaluate", "--method", "components", "--data", str(tmp_path / "ds"),
                             "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "e.json").read_text())["ap50"] == pytest.approx(1.0)


def test_train_schedule_choices_are_the_training_loops():
    from labkit.cli import build_parser
    from labkit.train import SCHEDULES

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    schedule = next(a for a in train._actions if a.dest == "schedule")
    assert tuple(schedule.choices) == SCHEDULES and schedule.default is None  # None: the method's, else cosine


def test_set_values_are_parsed():
    from labkit import methods
    from labkit.cli import _overrides

    assert _overrides(["a=3", "b=0.5", "c=true", "d=none", "e=gap", "f=1,1.5,2.0", "g=0.9,"]) == {
        "a": 3, "b": 0.5, "c": True, "d": None, "e": "gap", "f": (1, 1.5, 2.0), "g": (0.9,)}
    assert methods.get("irnet", **_overrides(["cam_scales=1.0,1.5"])).defaults.cam_scales == (1.0, 1.5)
