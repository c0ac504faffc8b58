"""Training on a few own images: fixed steps per epoch, validation split, best.pt, tune -> decode.json -> predict."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from labkit import cli, workflows
from labkit.checkpoint import read_checkpoint
from labkit.data.split import validation_split
from labkit.data.synthetic.nuclei import write_folder
from labkit.errors import LabkitError
from labkit.methods.discriminative import Discriminative
from labkit.tuning import DECODE_NAME, read_decode_json, write_decode_json

TINY = {"width": 4, "depth": 2, "embedding_dim": 4, "separate_semantic": False}


def folder(tmp_path, n, name="data", size=48):
    root = tmp_path / name
    write_folder(root, n, size=size, split="train")
    return root


def quick_train(data, out, **kw):
    options = dict(epochs=1, batch_size=2, crop=32, device="cpu", progress=False, steps_per_epoch=3,
                   method_params=TINY)
    return workflows.train_run("discriminative", data, out, **{**options, **kw})


@pytest.mark.parametrize("n", [2, 20])
def test_a_folder_of_2_images_trains_as_many_steps_per_epoch_as_one_of_20(tmp_path, n):
    run = tmp_path / "run"
    quick_train(folder(tmp_path, n, size=40), run, epochs=2)
    assert read_checkpoint(run)["scheduler"]["last_epoch"] == 2 * 3


def test_validation_split_is_deterministic_disjoint_and_order_free():
    names = [f"img{i:02d}" for i in range(20)]
    train, val = validation_split(names)
    assert len(val) == 3 and sorted(train + val) == list(range(20)) and not set(train) & set(val)
    again = validation_split(list(reversed(names)))
    assert sorted(names[i] for i in val) == sorted(list(reversed(names))[i] for i in again[1])
    assert validation_split(names) == (train, val)
    assert validation_split(names[:2]) == ([0, 1], [])  # too few to hold one out
    assert len(validation_split(names[:3])[1]) == 1
    other = validation_split([f"x{i}" for i in range(20)])[1]
    assert len(other) == 3


def test_held_out_images_are_named_and_best_checkpoint_kept(tmp_path, caplog):
    data = folder(tmp_path, 7, size=40)
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="labkit.workflows"):
        history = quick_train(data, run, epochs=2)
    info = json.loads((run / workflows.RUN_NAME).read_text())
    assert len(info["val"]) == 1 and set(info["val"]).isdisjoint(info["train"]) and len(info["train"]) == 6
    assert info["val"][0] in caplog.text
    assert info["tile"] == 32 and info["val_metric"] == "matching_accuracy"
    assert all("val_score" in r for r in history["epochs"])
    assert (run / "best.pt").is_file()


def test_a_val_folder_beside_train_is_used(tmp_path):
    write_folder(tmp_path / "set" / "train", 2, size=40, split="train")
    write_folder(tmp_path / "set" / "val", 1, size=40, split="val")
    run = tmp_path / "run"
    quick_train(tmp_path / "set" / "train", run)
    info = json.loads((run / workflows.RUN_NAME).read_text())
    assert info["val_folder"] == str(tmp_path / "set" / "val") and len(info["train"]) == 2
    assert (run / "best.pt").is_file()


def test_two_images_without_val_folder_train_without_validation(tmp_path, caplog):
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="labkit.workflows"):
        quick_train(folder(tmp_path, 2, size=40), run)
    assert "nothing held out" in caplog.text
    assert not (run / "best.pt").exists() and (run / "model.pt").exists()


SMALL_GRID = {"bandwidth": [0.3, 0.6], "min_area": [8, 12]}


@pytest.fixture()
def trained(tmp_path, monkeypatch):
    """A tiny run on two 48 x 48 images (2 x 2 tiles of the 32-pixel crop), with a 4-point decode grid."""
    data = folder(tmp_path, 2, size=48)
    run = tmp_path / "run"
    quick_train(data, run)
    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: SMALL_GRID)
    return data, run


def test_tune_writes_decode_json_and_predict_and_evaluate_use_it(trained, tmp_path, monkeypatch, capsys):
    data, run = trained
    assert cli.main(["tune", "--checkpoint", str(run / "model.pt"), "--data", str(data), "--device", "cpu",
                     "--margin", "0"]) == 0  # the best setting, however small its gain over the one in use
    printed = capsys.readouterr().out
    assert "bandwidth" in printed and "matching_accuracy" in printed and DECODE_NAME in printed
    tuned = read_decode_json(run)
    grid = SMALL_GRID
    result = json.loads((run / "tune.json").read_text())
    assert tuned == result["chosen"] and set(tuned) == set(grid)
    assert result["kept"] or all(tuned[k] in grid[k] for k in grid)  # kept: no setting beat the decoding in use
    assert len(result["curve"]) == 4
    assert result["best_score"] == max(r["score"] for r in result["curve"])

    seen = []
    decode = Discriminative.decode

    def spy(self, outputs, **params):
        seen.append(dict(params))
        return decode(self, outputs, **params)

    monkeypatch.setattr(Discriminative, "decode", spy)
    assert cli.main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(data),
                     "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert seen and all(p == tuned for p in seen)
    seen.clear()
    assert cli.main(["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(data), "--device", "cpu",
                     "--set", "bandwidth=0.61"]) == 0
    assert seen and all(p == {**tuned, "bandwidth": 0.61} for p in seen)  # --set wins


def test_tune_keeps_the_decoding_in_use_where_settings_tie(trained, monkeypatch):
    data, run = trained
    grid = {"bandwidth": [0.25, 0.5], "min_radius": [0.0, 4.0]}
    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: grid)
    monkeypatch.setattr("labkit.tuning.score", lambda *args, **kwargs: 0.5)  # every setting ties
    result = workflows.tune_run(checkpoint=run / "model.pt", data=data, device="cpu", progress=False)
    assert result["best"] == {"bandwidth": 0.5, "min_radius": 4.0}  # the method's (folder) defaults
    write_decode_json(run, {"bandwidth": 0.25})
    result = workflows.tune_run(checkpoint=run / "model.pt", data=data, device="cpu", progress=False)
    assert result["best"] == {"bandwidth": 0.25, "min_radius": 4.0}  # decode.json's value is the one in use


@pytest.mark.parametrize("gain_in_se, margin, moves", [(0.5, "se", False), (2.0, "se", True), (0.5, 0.0, True)])
def test_tune_keeps_the_decoding_in_use_unless_the_gain_is_beyond_the_margin(
    trained, monkeypatch, gain_in_se, margin, moves,
):
    """The one-standard-error rule: a gain within one standard error of the in-use score keeps the decoding."""
    from labkit.tuning import standard_error

    data, run = trained
    grid = {"bandwidth": [0.25, 0.5], "min_radius": [0.0, 4.0]}  # in use: bandwidth 0.5 (delta_v), min_radius 4
    before = 0.75
    gain = {}

    def sweep(method, cached, grid, **kwargs):
        n = sum(len(c.truth["ids"]) for c in cached)
        gain["value"] = gain_in_se * standard_error(before, n)
        return [{"params": {"bandwidth": b, "min_radius": r}, "score": before + gain["value"] * (b == 0.25)}
                for b in grid["bandwidth"] for r in grid["min_radius"]]

    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: grid)
    monkeypatch.setattr("labkit.tuning.sweep", sweep)
    monkeypatch.setattr("labkit.tuning.score", lambda *args, **kwargs: before)
    result = workflows.tune_run(checkpoint=run / "model.pt", data=data, device="cpu", progress=False, margin=margin)
    assert result["best"] == {"bandwidth": 0.25, "min_radius": 4.0} and result["default_score"] == before
    assert result["n_objects"] > 0 and result["kept"] is not moves
    expected = {"bandwidth": 0.25 if moves else 0.5, "min_radius": 4.0}
    assert result["chosen"] == expected and read_decode_json(run) == expected
    assert result["margin"] == pytest.approx(gain["value"] / gain_in_se if margin == "se" else 0.0)


def test_tune_margin_must_be_se_or_a_number_at_least_zero(trained, capsys):
    data, run = trained
    with pytest.raises(LabkitError, match="margin"):
        workflows.tune_run(checkpoint=run / "model.pt", data=data, device="cpu", progress=False, margin=-0.1)
    with pytest.raises(SystemExit):
        cli.main(["tune", "--checkpoint", str(run / "model.pt"), "--data", str(data), "--margin", "some"])
    assert "expected 'se' or a number" in capsys.readouterr().err


def test_images_larger_than_the_crop_are_tiled(trained, monkeypatch):
    data, run = trained  # 48 x 48 images, crop 32
    shapes = []
    decode = Discriminative.decode

    def spy(self, outputs, **params):
        shapes.append(tuple(outputs["embedding"].shape))
        return decode(self, outputs, **params)

    monkeypatch.setattr(Discriminative, "decode", spy)
    workflows.evaluate_run(data=str(data), checkpoint=run / "model.pt", device="cpu", progress=False)
    assert shapes and all(s[0] == 4 and s[-2:] == (32, 32) for s in shapes)  # 2 x 2 tiles of 32
    shapes.clear()
    workflows.evaluate_run(data=str(data), checkpoint=run / "model.pt", device="cpu", progress=False, tile=0)
    assert all(s[-2:] == (48, 48) for s in shapes)


@pytest.mark.parametrize("text, words", [("", "empty"), ("{oops", "not valid JSON"), ('"x"', "JSON object")])
def test_corrupt_decode_json_is_a_clear_error(trained, tmp_path, capsys, text, words):
    data, run = trained
    (run / DECODE_NAME).write_text(text)
    code = cli.main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(data),
                     "--out", str(tmp_path / "pred"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and words in err and DECODE_NAME in err


def test_tune_needs_something_to_sweep(trained):
    data, run = trained
    grid = SMALL_GRID
    with pytest.raises(LabkitError, match="no decode parameters to tune"):
        workflows.tune_run(checkpoint=run / "model.pt", data=str(data), device="cpu", progress=False,
                           decode_params={k: v[0] for k, v in grid.items()})


def test_tune_keeps_other_decode_json_entries(trained):
    data, run = trained
    (run / DECODE_NAME).write_text(json.dumps({"per_class": False}))
    workflows.tune_run(checkpoint=run / "model.pt", data=str(data), device="cpu", progress=False)
    assert read_decode_json(run)["per_class"] is False


def test_tune_on_the_training_folder_uses_only_the_held_out_images(tmp_path, monkeypatch):
    data = folder(tmp_path, 7, size=32)
    run = tmp_path / "run"
    quick_train(data, run)
    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: {"bandwidth": [0.5]})
    result = workflows.tune_run(checkpoint=run / "model.pt", data=str(data), device="cpu", progress=False)
    held = json.loads((run / workflows.RUN_NAME).read_text())["val"]
    assert result["n_images"] == len(held) == 1


def test_folder_defaults_apply_to_image_folders_only_and_set_wins(tmp_path, caplog):
    from labkit import methods

    paper, own = methods.get("recurrent").defaults, methods.get("recurrent", folder=True).defaults
    assert (paper.pair_weighting, paper.include_background, paper.lr) == ("paper", True, 1e-3)
    assert (own.pair_weighting, own.include_background, own.lr) == ("balanced", False, 2e-3)
    assert methods.get("recurrent", folder=True, lr=5e-4).defaults.lr == 5e-4
    tiny = {"width": 4, "depth": 2, "embedding_dim": 4, "max_pixels": 50, "include_background": True}
    run = tmp_path / "run"
    options = dict(epochs=1, batch_size=2, crop=32, device="cpu", progress=False, steps_per_epoch=1)
    with caplog.at_level("INFO", logger="labkit.workflows"):
        workflows.train_run("recurrent", folder(tmp_path, 2, size=40), run, method_params=tiny, **options)
    state = read_checkpoint(run)
    params = state["method"]["params"]
    assert params["pair_weighting"] == "balanced" and params["include_background"] is True  # --set wins
    assert state["training"]["lr"] == 2e-3
    line = next(r.getMessage() for r in caplog.records if "on an image folder: defaults" in r.getMessage())
    assert "pair_weighting=balanced" in line and "include_background" not in line  # the log names only what applies
    workflows.train_run("recurrent", "synthetic:digits", tmp_path / "synthetic", method_params=tiny,
                        **{**options, "steps_per_epoch": 1})
    assert read_checkpoint(tmp_path / "synthetic")["method"]["params"]["pair_weighting"] == "paper"
    dvis = methods.get("dvis", folder=True).defaults  # the authors' code's pairwise term on a folder
    assert (dvis.different_weight, dvis.min_pair_loss, dvis.epochs, dvis.edge_threshold) == (3.0, 1e-2, 40, 0.3)
    paper = methods.get("dvis").defaults
    assert (paper.different_weight, paper.min_pair_loss, paper.epochs, paper.edge_threshold) == (1.0, 0.0, 50, None)
    for key in ("discriminative", "recurrent", "dvis"):  # thin bands between touching objects join their neighbours
        assert methods.get(key, folder=True).defaults.min_radius == 4.0 and methods.get(key).defaults.min_radius == 0
    own_hle, paper_hle = methods.get("hle", folder=True).defaults, methods.get("hle").defaults
    assert (own_hle.seed_weight, own_hle.epochs) == (10.0, 60)  # SpatialEmbeddings' seed weight, longer
    assert (paper_hle.seed_weight, paper_hle.epochs) == (1.0, 30)
