"""The live explorer on a trained model (labkit.viz.explorer), without a browser.

The checkpoint (tests/explorer_checkpoint.py) is an untrained small
discriminative model whose semantic head calls every pixel foreground, so the
decoder has something to cluster and the number of instances depends on the
bandwidth.
"""
import json

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from PIL import Image

from labkit import methods
from labkit.data.synthetic import SyntheticScenes
from labkit.errors import DataError, LabkitError
from labkit.methods.discriminative import Discriminative
from labkit.train import load_checkpoint
from labkit.tuning import read_decode_json, write_decode_json
from explorer_checkpoint import write_checkpoint
from labkit.viz.explorer import (
    ModelExplorer,
    check_grid,
    decode_control,
    embedding_figure,
    initial_decode_params,
    open_images,
    paste_windows,
    training_images,
)

GRID = {"bandwidth": [0.25, 0.5, 1.0, 2.0], "min_area": [2, 8, 32]}


@pytest.fixture
def grid(monkeypatch):
    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: {k: list(v) for k, v in GRID.items()})
    return GRID


@pytest.fixture(scope="module")
def images():
    return SyntheticScenes("shapes", split="val", num_samples=3, size=32)


@pytest.fixture
def run_dir(tmp_path, images):
    return write_checkpoint(tmp_path / "run", in_channels=images.in_channels)


def direct_decode(run, image, **params):
    method, model, _ = load_checkpoint(run, device="cpu")
    with torch.no_grad():
        return method.decode(model(image[None]), **params)[0]


def test_slider_moves_redecode_with_the_methods_decoder(grid, run_dir, images):
    explorer = ModelExplorer(run_dir, images, device="cpu")
    assert set(explorer.controls) == {"bandwidth", "min_area"}
    assert isinstance(explorer.controls["bandwidth"], widgets.FloatSlider)
    assert isinstance(explorer.controls["min_area"], widgets.IntSlider)
    # no decode.json: the decoding in use, bandwidth None resolved to delta_v 0.5; min_area's default is 2
    assert explorer.params() == {"bandwidth": 0.5, "min_area": 2}
    first = explorer.history[-1]
    image = images[0]["image"]
    expected = direct_decode(run_dir, image, **explorer.params())
    assert torch.equal(explorer.prediction["instances"], expected["instances"])

    explorer.controls["bandwidth"].value = 0.25
    small = explorer.history[-1]
    explorer.controls["bandwidth"].value = 2.0
    large = explorer.history[-1]
    assert len(explorer.history) == 3 and (small["bandwidth"], large["bandwidth"]) == (0.25, 2.0)
    assert small["n_instances"] != first["n_instances"] > large["n_instances"] >= 1
    assert len(explorer.figure.data) == large["n_instances"]  # one 3D trace per decoded instance
    expected = direct_decode(run_dir, image, bandwidth=2.0, min_area=2)
    assert torch.equal(explorer.prediction["instances"], expected["instances"])
    assert f"<b>{large['n_instances']}</b> instances" == explorer.count.value
    assert "matching accuracy" in explorer.metrics.value and "ARI" in explorer.metrics.value
    assert bytes(explorer.picture.value).startswith(b"\x89PNG")
    assert "labkit-model-explorer" in explorer.widget._dom_classes


def test_save_writes_decode_json_and_a_new_explorer_starts_from_it(grid, run_dir, images):
    explorer = ModelExplorer(run_dir / "model.pt", images, device="cpu")
    explorer.controls["bandwidth"].value = 0.5
    explorer.controls["min_area"].value = 8
    path = explorer.save()
    assert path == run_dir / "decode.json"
    assert read_decode_json(run_dir) == {"bandwidth": 0.5, "min_area": 8}
    assert "saved" in explorer.save_status.value and "decode.json" in explorer.save_status.value

    again = ModelExplorer(run_dir, images, device="cpu")
    assert again.params() == {"bandwidth": 0.5, "min_area": 8}
    assert again.controls["bandwidth"].value == 0.5 and again.controls["min_area"].value == 8

    explorer.save_button.click()  # the button calls save() too
    assert json.loads((run_dir / "decode.json").read_text()) == {"bandwidth": 0.5, "min_area": 8}


def test_decode_json_keys_without_a_control_are_kept_and_used(grid, run_dir, images):
    write_decode_json(run_dir, {"bandwidth": 0.5, "merge_radius": 0.1})
    explorer = ModelExplorer(run_dir, images, device="cpu")
    assert explorer.params() == {"merge_radius": 0.1, "bandwidth": 0.5, "min_area": 2}
    expected = direct_decode(run_dir, images[0]["image"], bandwidth=0.5, min_area=2, merge_radius=0.1)
    assert torch.equal(explorer.prediction["instances"], expected["instances"])
    explorer.controls["bandwidth"].value = 1.0
    explorer.save()
    assert read_decode_json(run_dir) == {"merge_radius": 0.1, "bandwidth": 1.0, "min_area": 2}


def test_saved_value_outside_the_grid_widens_the_slider(grid, run_dir, images):
    write_decode_json(run_dir, {"bandwidth": 3.5})
    explorer = ModelExplorer(run_dir, images, device="cpu")
    slider = explorer.controls["bandwidth"]
    assert (slider.min, slider.max, slider.value) == (0.25, 3.5, 3.5)


def test_choosing_another_image_runs_the_model_on_it(grid, run_dir, images):
    explorer = ModelExplorer(run_dir, images, device="cpu")
    explorer.image_menu.value = 2
    assert explorer.history[-1]["image"] == 2
    expected = direct_decode(run_dir, images[2]["image"], **explorer.params())
    assert torch.equal(explorer.prediction["instances"], expected["instances"])
    assert [label for label, _ in explorer.image_menu.options] == [images.name(i) for i in range(3)]
    assert explorer.select(1)["image"] == 1  # called from code, not the menu


def test_images_without_masks_show_no_scores(grid, run_dir, tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(folder / "a.png")
    dataset = open_images(folder)
    assert len(dataset) == 1
    explorer = ModelExplorer(run_dir, folder, device="cpu")
    assert "ARI" not in explorer.metrics.value and explorer.metrics.value.startswith("decode")
    assert explorer.prediction["instances"].shape == (24, 20)
    assert explorer.image_menu.options[0][0] == "a"


def test_a_method_without_a_grid_has_no_controls(run_dir, images, monkeypatch):
    monkeypatch.setattr(Discriminative, "decode_grid", lambda self: {})
    explorer = ModelExplorer(run_dir, images, device="cpu")
    assert explorer.controls == {} and explorer.params() == {}
    assert explorer.save() == run_dir / "decode.json" and read_decode_json(run_dir) == {}


def test_bad_explorer_inputs_raise_labkit_errors(grid, run_dir, images, tmp_path):
    with pytest.raises(LabkitError, match="index 5"):
        ModelExplorer(run_dir, images, device="cpu", index=5)
    with pytest.raises(LabkitError, match="empty"):
        ModelExplorer(run_dir, SyntheticScenes("shapes", split="val", num_samples=0, size=32), device="cpu")
    with pytest.raises(LabkitError, match="no checkpoint"):
        ModelExplorer(tmp_path / "nothing", images, device="cpu")
    with pytest.raises(LabkitError, match="dataset"):
        open_images(42)
    (run_dir / "decode.json").write_text("[1, 2]")
    with pytest.raises(LabkitError, match="JSON object"):
        ModelExplorer(run_dir, images, device="cpu")


def test_initial_params_prefer_saved_then_default_then_middle():
    method = methods.get("discriminative", min_area=5)
    grid = {"bandwidth": [0.1, 1.0, 0.5], "min_area": [2, 8], "per_class": [False, True], "split_components": [True]}
    assert initial_decode_params(method, grid) == {
        "bandwidth": 0.5, "min_area": 5, "per_class": True, "split_components": False,
    }
    assert initial_decode_params(method, grid, {"bandwidth": 0.1})["bandwidth"] == 0.1
    # a None default opens at the value decoding uses (the pull margin delta_v), not the middle candidate
    assert method.bandwidth == 0.5
    assert initial_decode_params(method, {"bandwidth": [0.1, 1.0, 2.0]}) == {"bandwidth": 0.5}
    assert initial_decode_params(methods.get("recurrent"), {"delta": [4.0, 8.0, 12.0]}) == {"delta": 6.0}
    assert initial_decode_params(method, {"unknown_thing": ["a", "b", "c"]}) == {"unknown_thing": "b"}


def test_decode_controls_by_candidate_type():
    floats = decode_control("bandwidth", [0.2, 0.4, 1.2], 0.4)
    assert isinstance(floats, widgets.FloatSlider)
    assert (floats.min, floats.max, floats.value, floats.step) == (0.2, 1.2, 0.4, 0.01)
    ints = decode_control("min_area", [4, 16, 64], 100)
    assert isinstance(ints, widgets.IntSlider) and (ints.min, ints.max, ints.value) == (4, 100, 100)
    flags = decode_control("split_components", [False, True], True)
    assert isinstance(flags, widgets.Dropdown) and flags.value is True
    tuples = decode_control("proposal_scales", [(), (2.0, 4.0)], (8.0,))
    assert isinstance(tuples, widgets.Dropdown) and tuples.value == (8.0,) and len(tuples.options) == 3


def test_check_grid_rejects_malformed_grids():
    assert check_grid({"h": (0.1, 0.2)}) == {"h": [0.1, 0.2]}
    for bad in ({"h": []}, {"h": "abc"}, {"h": 0.5}):
        with pytest.raises(LabkitError, match="'h'"):
            check_grid(bad)
    with pytest.raises(LabkitError, match="map parameter names"):
        check_grid([("h", [1])])


def test_embedding_figure_shows_only_instance_pixels():
    embedding = torch.randn(5, 6, 7, generator=torch.Generator().manual_seed(0))
    instances = torch.zeros(6, 7, dtype=torch.int64)
    instances[:2, :3], instances[4:, 4:] = 4, 9
    fig = embedding_figure(embedding, instances, title="t")
    assert isinstance(fig, go.Figure) and fig.layout.title.text == "t"
    assert [t.name for t in fig.data] == ["instance 4", "instance 9"]
    assert [len(t.x) for t in fig.data] == [6, 6]
    assert len(embedding_figure(embedding.numpy(), instances.numpy(), sphere=True).data) == 3  # plus the sphere
    assert len(embedding_figure(embedding, torch.zeros(6, 7, dtype=torch.int64)).data) == 0
    with pytest.raises(DataError, match="embedding"):
        embedding_figure(embedding, instances[:5])


def test_images_default_to_the_validation_split_of_the_training_data(grid, run_dir, images):
    assert training_images("synthetic:shapes:train") == training_images("synthetic:shapes") == "synthetic:shapes:val"
    assert training_images("/data/cells") == "/data/cells"
    folder = run_dir.parent / "cells"
    for split in ("train", "val"):
        (folder / split / "images").mkdir(parents=True)
    assert training_images(str(folder / "train")) == str(folder / "val")  # the images labkit train validated on
    assert training_images(str(folder)) == str(folder / "val")
    with pytest.raises(LabkitError, match="images="):
        training_images(None)
    explorer = ModelExplorer(run_dir, device="cpu", max_images=4)
    assert explorer.dataset.split == "val" and explorer.dataset.family.name == "shapes"
    assert len(explorer.image_menu.options) == 4


def test_large_images_are_run_and_decoded_by_tiles_as_predict_does(grid, run_dir, images):
    from labkit.evaluation import predict_tiled

    explorer = ModelExplorer(run_dir, images, device="cpu", tile=16)
    assert len(explorer.windows) == 9  # 32 px in tiles of 16 overlapping by 4: 3 x 3
    method, model, _ = load_checkpoint(run_dir, device="cpu")
    expected = predict_tiled(method, model, images[0]["image"], 16, **explorer.params())
    assert torch.equal(explorer.prediction["instances"], expected["instances"])
    assert explorer.figure is not None and sum(len(t.x) for t in explorer.figure.data) > 0
    (run_dir / "run.json").write_text(json.dumps({"tile": 16}))  # what labkit train records for a folder
    assert len(ModelExplorer(run_dir, images, device="cpu").windows) == 9
    assert len(ModelExplorer(run_dir, images, device="cpu", tile=0).windows) == 1


def test_paste_windows_rebuilds_a_map_from_its_tiles():
    full = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    windows = [(0, 0, 3, 4), (0, 3, 3, 4), (2, 0, 3, 4), (2, 3, 3, 4)]
    tiles = torch.stack([full[:, y:y + h, x:x + w] for y, x, h, w in windows])
    assert torch.equal(paste_windows(tiles, windows, (5, 7)), full)
    with pytest.raises(DataError, match="windows"):
        paste_windows(tiles[:3], windows, (5, 7))
