"""decode.json of a run folder: written atomically, read back, clear errors when corrupt."""
from __future__ import annotations

import json

import pytest

from labkit.errors import LabkitError
from labkit.tuning import DECODE_NAME, read_decode_json, write_decode_json


def test_roundtrip_and_checkpoint_path(tmp_path):
    path = write_decode_json(tmp_path, {"bandwidth": 0.75, "split_components": True})
    assert path == tmp_path / DECODE_NAME
    assert json.loads(path.read_text()) == {"bandwidth": 0.75, "split_components": True}
    # a checkpoint inside the run folder names the same file
    assert read_decode_json(tmp_path / "model.pt") == {"bandwidth": 0.75, "split_components": True}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_absent_is_empty(tmp_path):
    assert read_decode_json(tmp_path) == {}


@pytest.mark.parametrize(
    "text, words",
    [("", "empty"), ("   \n", "empty"), ("{bandwidth: 1", "not valid JSON"), ("[1, 2]", "JSON object"), ("3", "JSON object")],
)
def test_corrupt_is_a_clear_error(tmp_path, text, words):
    (tmp_path / DECODE_NAME).write_text(text)
    with pytest.raises(LabkitError, match=words) as info:
        read_decode_json(tmp_path)
    assert DECODE_NAME in str(info.value)


def test_write_rejects_non_dict(tmp_path):
    with pytest.raises(LabkitError, match="dict"):
        write_decode_json(tmp_path, [("bandwidth", 1.0)])
    with pytest.raises(LabkitError, match="names"):
        write_decode_json(tmp_path, {"": 1.0})
    assert not (tmp_path / DECODE_NAME).exists()


def test_grid_points_and_best_point():
    from labkit.tuning import best_point, format_curve, grid_points

    points = grid_points({"bandwidth": [0.5, 1.0], "split_components": [False, True]})
    assert points == [
        {"bandwidth": 0.5, "split_components": False}, {"bandwidth": 0.5, "split_components": True},
        {"bandwidth": 1.0, "split_components": False}, {"bandwidth": 1.0, "split_components": True},
    ]
    curve = [{"params": p, "score": s} for p, s in zip(points, [0.2, 0.7, 0.7, 0.1])]
    assert best_point(curve) is curve[1]  # the first of equals
    # unless another of the equals keeps more of the decoding in use
    assert best_point(curve, prefer={"bandwidth": 1.0}) is curve[2]
    assert best_point(curve, prefer={"bandwidth": 0.5}) is curve[1]
    assert best_point(curve, prefer={"bandwidth": 1.0, "split_components": False}) is curve[2]
    table = format_curve(curve, "matching_accuracy", curve[1])
    assert table.count("\n") == 5 and table.splitlines()[3].endswith("*")
    with pytest.raises(LabkitError, match="no candidate values"):
        grid_points({"bandwidth": []})
    with pytest.raises(LabkitError, match="empty"):
        best_point([])


def test_standard_error_and_choose_point():
    from labkit.tuning import choose_point, standard_error

    assert standard_error(0.9, 36) == pytest.approx(0.05)
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(1.0, 30) == 0.0 and standard_error(0.7, 0) == 0.0
    curve = [{"params": {"bandwidth": b}, "score": s} for b, s in [(0.25, 0.80), (0.5, 0.86), (1.0, 0.70)]]
    best, params, kept = choose_point(curve, {"bandwidth": 0.25}, 0.80, margin=0.05)
    assert best is curve[1] and params == {"bandwidth": 0.5} and not kept  # gain 0.06 > 0.05
    best, params, kept = choose_point(curve, {"bandwidth": 0.25}, 0.80, margin=0.06)
    assert best is curve[1] and params == {"bandwidth": 0.25} and kept  # gain 0.06 within 0.06: keep
    # the decoding in use need not be on the grid
    assert choose_point(curve, {"bandwidth": 0.3}, 0.84, margin=0.05)[1:] == ({"bandwidth": 0.3}, True)
    with pytest.raises(LabkitError, match="margin"):
        choose_point(curve, {"bandwidth": 0.25}, 0.80, margin=-1.0)


def test_check_margin_takes_se_or_a_number_at_least_zero():
    from labkit.tuning import check_margin

    assert check_margin("se") == "se" and check_margin(0) == 0 and check_margin(0.05) == 0.05
    for bad in (-0.1, "SE", None, True):
        with pytest.raises(LabkitError, match="tuning margin"):
            check_margin(bad)


def test_sweep_scores_each_setting_on_cached_outputs():
    """A decoder whose output depends on one parameter: the sweep finds the setting that matches the truth."""
    import torch

    from labkit.tuning import CachedImage, resolve_metric, sweep

    truth = torch.zeros(8, 8, dtype=torch.int64)
    truth[1:4, 1:4] = 1
    truth[5:8, 5:8] = 2

    class Fake:
        key = "fake"

        def decode(self, outputs, threshold, **params):
            inst = torch.where(outputs["x"][0, 0] > threshold, truth, torch.zeros_like(truth))
            ids = inst.unique()
            ids = ids[ids > 0]
            return [{"instances": inst, "ids": ids, "classes": torch.ones_like(ids),
                     "scores": torch.ones(len(ids))}]

    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 1:4, 1:4] = 0.5  # object 1 is dim: only a low threshold keeps it
    x[0, 0, 5:8, 5:8] = 1.0
    cached = [CachedImage({"x": x}, [(0, 0, 8, 8)], {"instances": truth})]
    curve = sweep(Fake(), cached, {"threshold": [0.7, 0.3, 1.5]}, metric="matching_accuracy", progress=False)
    assert [row["score"] for row in curve] == [0.5, 1.0, 0.0]
    assert resolve_metric("auto", type("D", (), {"class_names": ["bg", "a", "b"]})()) == "ap50"
    assert resolve_metric("auto", type("D", (), {"class_names": ["bg", "cell"]})()) == "matching_accuracy"
    with pytest.raises(LabkitError, match="unknown tuning metric"):
        resolve_metric("f1", None)


def test_panoptic_data_is_tuned_on_pq_stuff_included():
    """With stuff classes the score is PQ: a decoder that drops the stuff region loses, though its things are right."""
    import torch

    from labkit.tuning import CachedImage, resolve_metric, score, sweep

    semantic = torch.full((8, 8), 3)  # stuff class 3 everywhere ...
    instances = torch.zeros(8, 8, dtype=torch.int64)
    instances[1:4, 1:4] = 1  # ... but one thing (class 1)
    semantic[1:4, 1:4] = 1
    truth = {"instances": instances, "semantic": semantic, "classes": torch.tensor([1])}

    class Fake:
        key = "fake"

        def decode(self, outputs, keep_stuff, **params):
            sem = semantic if keep_stuff else torch.where(instances > 0, semantic, torch.zeros_like(semantic))
            return [{"instances": instances, "ids": torch.tensor([1]), "classes": torch.tensor([1]),
                     "scores": torch.ones(1), "semantic": sem}]

    cached = [CachedImage({}, [(0, 0, 8, 8)], truth)]
    curve = sweep(Fake(), cached, {"keep_stuff": [False, True]}, metric="pq", progress=False, stuff=[3])
    assert [row["score"] for row in curve] == [0.5, 1.0]  # things PQ 1 and stuff PQ 0 or 1, averaged over classes
    panoptic_data = type("D", (), {"class_names": ["bg", "a", "b", "s"], "stuff": [3]})()
    assert resolve_metric("auto", panoptic_data, type("M", (), {"panoptic": True})()) == "pq"
    assert resolve_metric("auto", panoptic_data, type("M", (), {"panoptic": False})()) == "ap50"  # no semantic map
    with pytest.raises(LabkitError, match="stuff"):
        score(Fake().decode({}, True), [truth], "pq")
    instance_only = [{k: v for k, v in Fake().decode({}, True)[0].items() if k != "semantic"}]
    with pytest.raises(LabkitError, match="semantic map"):
        score(instance_only, [truth], "pq", stuff=[3])
