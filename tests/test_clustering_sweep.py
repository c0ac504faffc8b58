"""Embedding map -> instances -> scores, bandwidth sweeps, and the demo map."""
import numpy as np
import pytest

from labkit.clustering import bandwidth_sweep, best_bandwidth, cluster_map, score_instances
from labkit.clustering.demo import synthetic_embedding_map
from labkit.errors import DataError


@pytest.fixture(scope="module")
def scene():
    return synthetic_embedding_map(size=48, n_objects=4, seed=1)


def test_demo_map_is_deterministic_and_well_formed(scene):
    again = synthetic_embedding_map(size=48, n_objects=4, seed=1)
    for key in scene:
        np.testing.assert_array_equal(scene[key], again[key])
    assert scene["embedding"].shape == (8, 48, 48) and scene["embedding"].dtype == np.float32
    assert scene["image"].shape == (1, 48, 48) and scene["instances"].dtype == np.int64
    np.testing.assert_array_equal(scene["foreground"], scene["instances"] > 0)
    assert len(np.unique(scene["instances"])) == 5
    assert not np.array_equal(synthetic_embedding_map(size=48, n_objects=4, seed=2)["embedding"], scene["embedding"])


def test_cluster_map_is_a_prediction(scene):
    pred = cluster_map(scene["embedding"], 0.3, foreground=scene["foreground"])
    assert pred["instances"].shape == (48, 48) and (pred["instances"][~scene["foreground"]] == 0).all()
    np.testing.assert_array_equal(pred["ids"], np.unique(pred["instances"][pred["instances"] > 0]))
    assert pred["n_clusters"] == len(pred["ids"]) == len(pred["scores"]) == len(pred["classes"])
    assert pred["scores"].max() <= 1.0 and pred["seconds"] > 0


def test_sweep_rows_and_trends(scene):
    rows = bandwidth_sweep(scene["embedding"], scene["instances"], [0.05, 0.3, 3.0], foreground=scene["foreground"])
    assert [r["bandwidth"] for r in rows] == [0.05, 0.3, 3.0]
    assert set(rows[0]) == {"bandwidth", "n_clusters", "ari", "matching_accuracy", "ap50", "seconds"}
    assert rows[0]["n_clusters"] > rows[1]["n_clusters"] > rows[2]["n_clusters"] == 1
    assert rows[1]["n_clusters"] == 4 and rows[1]["ari"] == pytest.approx(1.0) and rows[1]["ap50"] == 1.0
    assert best_bandwidth(rows)["bandwidth"] == 0.3
    gaussian = bandwidth_sweep(scene["embedding"], scene["instances"], [0.2], kernel="gaussian",
                               foreground=scene["foreground"], scores=False)
    assert gaussian[0]["ap50"] is None and gaussian[0]["matching_accuracy"] == 1.0


def test_score_instances_with_a_score_map():
    gt = np.zeros((6, 6), dtype=np.int64)
    gt[:3, :3], gt[3:, 3:] = 1, 2
    pred = {"instances": gt * 5, "ids": np.array([5, 10]), "scores": np.array([1.0, 1.0])}
    out = score_instances(pred, gt, scores=np.ones((6, 6)))
    assert out == {"ari": 1.0, "matching_accuracy": 1.0, "ap50": 1.0}
    assert score_instances(pred, gt, scores=False)["ap50"] is None
    with pytest.raises(DataError, match="shape"):
        score_instances(pred, gt[:5])
