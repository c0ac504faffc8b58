"""``labkit compare``: the same table for every run on the same data, and a self-contained report.

Two tiny runs (one epoch of a small UNet on 16 sticks scenes) are compared
with a training-free baseline on 6 test scenes: every column is present, the
metrics are those of :func:`labkit.evaluation.evaluate_predictions` on the same
predictions, and the report holds the table's data, plotly.js and the image
grid and loads nothing from the network.  A run that does not fit the data
and a method that says it does not apply are marked ``not applicable``
instead of stopping the comparison.
"""
from __future__ import annotations

import json
import math
import re

import pytest
import torch

from labkit import methods
from labkit.cli import main
from labkit.compare import COLUMNS, METRICS, NOT_APPLICABLE, OK, compare, training_minutes
from labkit.data.synthetic import SyntheticScenes
from labkit.errors import LabkitError
from labkit.train import train

SMALL = {"width": 4, "depth": 2}


def _tiny_run(method: str, family: str, out):
    m = methods.get(method)
    data = SyntheticScenes(family, split="train", num_samples=16)
    torch.manual_seed(0)
    model = m.build_model(in_channels=data.in_channels, num_classes=data.num_classes, **SMALL)
    train(m, model, data, out_dir=out, epochs=1, batch_size=8, lr=1e-3, device="cpu", progress=False,
          data_spec=f"synthetic:{family}")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "discriminative": _tiny_run("discriminative", "sticks", root / "disc"),
        "semantic": _tiny_run("semantic", "sticks", root / "sem"),
        "digits": _tiny_run("semantic", "digits", root / "sem_digits"),
    }


def _synthetic_test(monkeypatch, n=6):
    """Only the first ``n`` test scenes, to keep the test short."""
    import labkit.data as data_module

    real = data_module.load_dataset

    def small(spec, split=None, **kw):
        dataset = real(spec, split=split, **kw)
        return SyntheticScenes(dataset.family.name, split=dataset.split, num_samples=n) if spec.startswith("synthetic:") \
            else dataset
    monkeypatch.setattr(data_module, "load_dataset", small)


def test_compare_gives_every_column_and_a_report_with_its_data(runs, tmp_path, monkeypatch, capsys):
    _synthetic_test(monkeypatch)
    code = main(["compare", str(runs["discriminative"]), str(runs["semantic"]), "watershed",
                 "--data", "synthetic:sticks", "--out", str(tmp_path / "cmp"), "--device", "cpu", "--grid", "2"])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert result["columns"] == list(COLUMNS)
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"discriminative", "semantic", "watershed"}
    for row in rows.values():
        assert list(row) == list(COLUMNS)
        assert row["status"] == OK and row["n_images"] == 6
        for key in ("ap", "ap50", "ap75", "ar50@10", "matching_accuracy"):
            assert 0.0 <= row[key] <= 1.0
        assert row["pq"] is None  # sticks has no stuff classes
        assert row["forward_ms"] > 0 and row["decode_ms"] > 0
    assert rows["watershed"]["params"] == 0 and rows["watershed"]["train_minutes"] is None
    assert rows["discriminative"]["params"] > rows["semantic"]["params"] > 0  # a second (semantic) UNet
    assert rows["discriminative"]["train_minutes"] > 0
    assert "discriminative" in out and "wrote" in out

    report = (tmp_path / "cmp" / "report.html").read_text()
    embedded = json.loads(re.search(r'id="compare-data">(.*?)</script>', report, re.S).group(1).replace("<\\/", "</"))
    assert embedded == result
    assert report.count("* plotly.js v") == 1
    assert report.count("Plotly.newPlot") == 2
    assert 'id="prediction-grid"' in report and "data:image/png;base64," in report
    assert not [s for s in re.findall(r"<script[^>]*src=[\"']?([^\"' >]+)", report) if re.match(r"(https?:)?//", s)]


def test_metrics_match_evaluate_on_the_same_predictions(runs, monkeypatch):
    from labkit.evaluation import evaluate
    from labkit.train import load_checkpoint

    _synthetic_test(monkeypatch)
    row = compare([runs["discriminative"]], "synthetic:sticks", device="cpu", progress=False)["rows"][0]
    method, model, _ = load_checkpoint(runs["discriminative"])
    reference = evaluate(method, model, SyntheticScenes("sticks", split="test", num_samples=6), batch_size=1,
                         progress=False)
    for key in METRICS:
        if reference.get(key) is not None:
            assert math.isclose(row[key], reference[key], abs_tol=1e-4), key


def test_panoptic_data_gets_pq(monkeypatch):
    _synthetic_test(monkeypatch, n=3)
    row = compare(["components"], "synthetic:panoptic", device="cpu", progress=False)["rows"][0]
    assert row["status"] == OK
    # components predicts no semantic map, so PQ is not computed; the column is still there
    assert "pq" in row


def test_a_run_for_other_data_is_not_applicable(runs, monkeypatch):
    _synthetic_test(monkeypatch, n=3)
    rows = compare([runs["digits"], runs["semantic"]], "synthetic:sticks", device="cpu", progress=False)["rows"]
    assert rows[0]["status"] == NOT_APPLICABLE and "channel" in rows[0]["reason"]
    assert all(rows[0][k] is None for k in METRICS)
    assert rows[1]["status"] == OK


def test_a_method_that_says_it_does_not_apply_is_marked(runs, monkeypatch):
    _synthetic_test(monkeypatch, n=3)
    from labkit.methods.baselines import Watershed

    monkeypatch.setattr(Watershed, "applies_to", lambda self, dataset: "needs image-level labels", raising=False)
    rows = compare(["watershed", "components"], "synthetic:sticks", device="cpu", progress=False)["rows"]
    assert rows[0]["status"] == NOT_APPLICABLE and rows[0]["reason"] == "needs image-level labels"
    assert rows[1]["status"] == OK


def test_a_labkit_error_while_decoding_is_not_applicable(runs, monkeypatch):
    _synthetic_test(monkeypatch, n=3)
    from labkit.methods.baselines import Components

    def refuse(self, outputs, **params):
        raise LabkitError("this method needs stuff classes")
    monkeypatch.setattr(Components, "decode", refuse)
    rows = compare(["components", "watershed"], "synthetic:sticks", device="cpu", progress=False)["rows"]
    assert rows[0]["status"] == NOT_APPLICABLE and "stuff" in rows[0]["reason"]
    assert rows[1]["status"] == OK


def test_two_runs_of_one_method_get_distinct_names(runs, monkeypatch):
    _synthetic_test(monkeypatch, n=2)
    rows = compare([runs["semantic"], runs["semantic"] / "model.pt"], "synthetic:sticks", device="cpu",
                   progress=False, grid_images=0)["rows"]
    assert rows[0]["name"] != rows[1]["name"] and rows[0]["ap"] == rows[1]["ap"]


def test_training_minutes_add_later_stages(tmp_path):
    (tmp_path / "stage2").mkdir()
    (tmp_path / "history.json").write_text(json.dumps({"epochs": [{"seconds": 60}, {"seconds": 30}]}))
    (tmp_path / "stage2" / "history.json").write_text(json.dumps({"epochs": [{"seconds": 30}]}))
    assert training_minutes(tmp_path) == pytest.approx(2.0)
    assert training_minutes(tmp_path / "stage2") == pytest.approx(0.5)


@pytest.mark.parametrize("args, message", [
    ([], "at least one"),
    (["no/such/run"], "neither a run folder"),
    (["discriminative"], "must be trained first"),
])
def test_bad_sources(args, message):
    with pytest.raises(LabkitError, match=message):
        compare(args, "synthetic:sticks", device="cpu", progress=False)


def test_cli_reports_bad_input_in_one_line(capsys, tmp_path):
    code = main(["compare", "no/such/run", "--data", "synthetic:sticks", "--out", str(tmp_path)])
    assert code == 2 and "labkit: error:" in capsys.readouterr().err


def test_find_runs_names_method_and_family(runs, tmp_path):
    import shutil

    root = tmp_path / "out"
    shutil.copytree(runs["discriminative"], root / "01_x" / "sticks")
    shutil.copytree(runs["digits"], root / "02_y" / "digits")
    shutil.copytree(runs["semantic"], root / "02_y" / "digits" / "stage2")  # a later stage: not a run of its own
    found = {(r["method"], r["family"]) for r in __import__("labkit.compare", fromlist=["x"]).find_runs(root)}
    assert found == {("discriminative", "sticks"), ("semantic", "digits")}


def test_family_of_reads_class_names_when_the_spec_is_missing():
    from labkit.compare import family_of

    assert family_of({"data": {"spec": "synthetic:panoptic"}}) == "panoptic"
    assert family_of({"data": {"spec": None, "class_names": ["background", "stick"], "in_channels": 3}}) == "sticks"
    assert family_of({"data": {"spec": "my/folder", "class_names": ["background", "cell", "x"]}}) is None


def test_train_for_comparison_marks_a_method_that_does_not_apply(tmp_path, monkeypatch):
    from labkit.compare import train_for_comparison
    from labkit.methods.semantic import SemanticSegmentation

    monkeypatch.setattr(SemanticSegmentation, "applies_to",
                        lambda self, d: None if d.stuff else "needs stuff classes", raising=False)
    run, reason = train_for_comparison("semantic", "sticks", tmp_path / "a", samples=4, epochs=1, device="cpu")
    assert run is None and reason == "needs stuff classes" and not (tmp_path / "a").exists()

    def refuse(self, outputs, batch):
        raise LabkitError("this family has no image-level labels")
    monkeypatch.setattr(SemanticSegmentation, "loss", refuse)
    run, reason = train_for_comparison("semantic", "panoptic", tmp_path / "b", samples=4, epochs=1, device="cpu")
    assert run is None and "image-level labels" in reason


def test_embedding_views_and_figure(runs):
    from labkit.compare import Entry, embedding_view, embeddings_figure
    from labkit.train import load_checkpoint

    sample = SyntheticScenes("sticks", split="test", num_samples=1)[0]
    method, model, _ = load_checkpoint(runs["discriminative"])
    with torch.no_grad():
        head, kind, values = embedding_view(method, model(sample["image"][None]))
    assert (head, kind, values.shape[0]) == ("embedding", "euclidean", 8)
    sem, sem_model, _ = load_checkpoint(runs["semantic"])
    with torch.no_grad():
        assert embedding_view(sem, sem_model(sample["image"][None])) is None
    recurrent = methods.get("recurrent")
    unit = torch.nn.functional.normalize(torch.randn(1, 4, 8, 8), dim=1)
    assert embedding_view(recurrent, {"embedding": unit, "semantic": torch.zeros(1, 2, 8, 8)})[1] == "sphere"
    fig = embeddings_figure({"discriminative": Entry("discriminative", method, model),
                             "semantic": Entry("semantic", sem, sem_model)}, sample, max_points=200)
    assert len(fig.data) == 1 and fig.data[0].type == "scatter3d" and len(fig.data[0].x) == 200


def test_images_larger_than_a_runs_tile_are_predicted_by_sliding_window_as_evaluate_does():
    from labkit.compare import load_entry, timed_predictions
    from labkit.evaluation import predict_tiled

    data = SyntheticScenes("shapes", split="test", num_samples=2)
    entry = load_entry("components", data, torch.device("cpu"))
    tiled, _, forward, decode = timed_predictions(entry.method, entry.model, data, device=torch.device("cpu"),
                                                  decode_params={}, progress=False, tile=32)
    whole, *_ = timed_predictions(entry.method, entry.model, data, device=torch.device("cpu"), decode_params={},
                                  progress=False)
    for k in range(2):
        expected = predict_tiled(entry.method, entry.model, data[k]["image"], 32)
        assert torch.equal(tiled[k]["instances"], expected["instances"])
    assert any(not torch.equal(t["instances"], w["instances"]) for t, w in zip(tiled, whole))  # not the whole-image path
    assert len(forward) == len(decode) == 2


def test_methods_that_could_not_train_get_a_row(monkeypatch):
    _synthetic_test(monkeypatch, n=2)
    rows = compare(["watershed"], "synthetic:sticks", device="cpu", progress=False, grid_images=0,
                   skipped={"irnet": "this family has no image-level labels"})["rows"]
    assert [r["name"] for r in rows] == ["watershed", "irnet"]
    assert rows[1]["status"] == NOT_APPLICABLE and "labels" in rows[1]["reason"] and list(rows[1]) == list(COLUMNS)
    from labkit.compare import table_html

    table = table_html(rows)  # the reason spans the table on a row of its own, under its method's row
    assert table.index(">irnet<") < table.index("this family has no image-level labels</td></tr>")
    assert table.count("<tr") == 4 and 'class="reason" colspan="' in table


def test_train_for_comparison_resumes_its_own_run_and_restarts_a_changed_one(tmp_path):
    from labkit.compare import train_for_comparison

    run, reason = train_for_comparison("semantic", "sticks", tmp_path / "r", samples=4, epochs=1, device="cpu")
    assert reason is None and (tmp_path / "r" / "model.pt").is_file()
    first = (tmp_path / "r" / "model.pt").stat().st_mtime_ns
    run, reason = train_for_comparison("semantic", "sticks", tmp_path / "r", samples=4, epochs=1, device="cpu")
    assert reason is None and (tmp_path / "r" / "model.pt").stat().st_mtime_ns == first  # nothing left to train
    run, reason = train_for_comparison("semantic", "sticks", tmp_path / "r", samples=4, epochs=1, device="cpu",
                                       ignore_index=254)  # other method parameters: not a reason to give up
    assert reason is None and run == str(tmp_path / "r")
    assert (tmp_path / "r" / "model.pt").stat().st_mtime_ns != first
