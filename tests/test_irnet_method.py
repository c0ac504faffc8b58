"""The ``irnet`` method end to end on a tiny set: weak-supervision firewall, stages 2-3, decode, bad input."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from labkit import methods
from labkit.data import load_dataset
from labkit.data.weak import ImageLabels
from labkit.errors import DataError, LabkitError
from labkit.train import load_checkpoint, train_method

FAST = dict(width=4, depth=2, cam_scales=(1.0, 0.5), walk_steps=8, refine_steps=10, irn_epochs=1, train_radius=3,
            irn_batch_size=2)


class Tiny(torch.utils.data.Dataset):
    """The first ``n`` shapes training scenes; ``scramble`` replaces their masks by noise (labels kept)."""

    class_names = ["background", "disk", "square", "triangle", "ellipse"]
    num_classes, in_channels, things, stuff, transform = 5, 3, [1, 2, 3, 4], [], None

    def __init__(self, n: int = 4, scramble: bool = False, labels: bool = True) -> None:
        base = load_dataset("synthetic:shapes", split="train")
        self.samples = [base[i] for i in range(n)]
        gen = torch.Generator().manual_seed(123)
        for s in self.samples:
            if scramble:
                s["instances"] = torch.randint(0, 9, s["instances"].shape, generator=gen)
                s["semantic"] = torch.randint(0, 5, s["semantic"].shape, generator=gen)
            if not labels:
                del s["labels"]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return dict(self.samples[i])


def _run(dataset, out: Path):
    method = methods.get("irnet", **FAST)
    torch.manual_seed(0)
    model = method.build_model(in_channels=3, num_classes=5)
    kwargs = dict(epochs=1, batch_size=2, lr=1e-3, device="cpu", seed=0, resume=True, progress=False)
    train_method(method, model, dataset, out_dir=out, **kwargs)  # every stage, as labkit train runs them
    return method, model


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_masks_never_reach_training(tmp_path):
    _, model_a = _run(Tiny(), tmp_path / "a")
    _, model_b = _run(Tiny(scramble=True), tmp_path / "b")
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    pseudo_a, pseudo_b = _digest(tmp_path / "a" / "pseudo_labels"), _digest(tmp_path / "b" / "pseudo_labels")
    assert pseudo_a == pseudo_b and any(k.startswith("masks/") for k in pseudo_a)
    # the weights of both stages changed from their initialisation, so the comparison means something
    method = methods.get("irnet", **FAST)
    torch.manual_seed(0)
    init = method.build_model(in_channels=3, num_classes=5).state_dict()
    assert not torch.equal(init["heads.cam.weight"], state_a["heads.cam.weight"])
    assert not torch.equal(init["heads.displacement.weight"], state_a["heads.displacement.weight"])


def test_run_folder_checkpoint_decodes_and_resumes(tmp_path):
    method, model = _run(Tiny(n=3), tmp_path)
    assert (tmp_path / "irn" / "model.pt").exists()
    pseudo = load_dataset(str(tmp_path / "pseudo_labels"))
    assert len(pseudo) == 3 and pseudo.class_names[1] == "disk"
    loaded_method, loaded, _ = load_checkpoint(tmp_path)
    state = model.state_dict()
    assert all(torch.equal(v, state[k].cpu()) for k, v in loaded.state_dict().items())  # stage-3 weights saved
    image = Tiny(n=3)[0]["image"][None]
    with torch.no_grad():
        outputs = loaded(image)
    assert set(outputs) == {"cam", "displacement", "boundary"}
    for mode in ("cam", "cam_boundary", "irnet"):
        (pred,) = loaded_method.decode(outputs, mode=mode)
        assert pred["instances"].shape == (64, 64)
        assert len(pred["ids"]) == len(pred["classes"]) == len(pred["scores"])
    with pytest.raises(LabkitError, match="unknown irnet decode"):
        loaded_method.decode(outputs, bandwidth=1.0)
    # a second run resumes every stage and changes nothing
    _, again = _run(Tiny(n=3), tmp_path)
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())


def test_data_without_image_labels_is_refused():
    with pytest.raises(DataError, match="image-level 'labels'"):
        ImageLabels(Tiny(n=1, labels=False))
    method = methods.get("irnet")
    outputs = {"cam": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(LabkitError, match="no 'labels'"):
        method.loss(outputs, {"instances": torch.zeros(1, 8, 8, dtype=torch.long)})
    with pytest.raises(LabkitError, match="foreground class"):
        method.heads(1)


def test_labkit_train_sees_the_weak_view():
    method = methods.get("irnet")
    assert set(method.training_view(Tiny(n=3))[0]) <= {"image", "labels", "name"}
    assert methods.get("discriminative").training_view(dataset := Tiny(n=1)) is dataset


def test_images_that_all_have_the_same_labels_are_refused():
    """Scenes 0 and 1 both hold squares, triangles and ellipses only: no image lacks a class that another has."""
    with pytest.raises(DataError, match="same image-level labels .square, triangle, ellipse in every image"):
        methods.get("irnet").check_training_set(Tiny(n=2))
    methods.get("irnet").check_training_set(Tiny(n=3))  # scene 2 lacks the square
    with pytest.raises(DataError, match="same image-level labels"):  # labkit train checks before stage 1
        _run(Tiny(n=2), Path("/nonexistent/never-written"))


def test_weak_view_drops_masks():
    weak = ImageLabels(Tiny(n=1))
    assert set(weak[0]) == {"image", "labels", "name"}
    assert weak.num_classes == 5 and weak.in_channels == 3


def test_relation_set_marks_crop_padding_ignored():
    from labkit.data.transforms import RandomCrop
    from labkit.methods.irnet import RelationSet

    weak = ImageLabels(Tiny(n=1), augment=False)
    rel = torch.zeros(64, 64, dtype=torch.long)
    sample = RelationSet(weak, [rel], transform=RandomCrop(80))[0]
    assert sample["relations"].shape == (80, 80) and sample["image"].shape == (3, 80, 80)
    assert (sample["relations"] == 0).sum() == 64 * 64 and (sample["relations"] == 255).sum() == 80 * 80 - 64 * 64


def test_cli_train_evaluate_predict_on_an_instance_folder(tmp_path, capsys):
    from labkit import cli
    from labkit.methods.irnet import write_pseudo_folder

    tiny = Tiny(n=4)  # scenes 0-1 and 2-3 differ in their labels: whichever one labkit train holds out
    weak = ImageLabels(tiny, augment=False)
    truths = [{"instances": s["instances"], "semantic": s["semantic"] * (s["instances"] > 0), "ids": torch.zeros(0)}
              for s in tiny.samples]
    write_pseudo_folder(tmp_path / "data", weak, truths)  # an ordinary instance folder with semantic masks
    run = tmp_path / "run"
    settings = ["width=4", "depth=2", "walk_steps=8", "refine_steps=5", "irn_epochs=1", "train_radius=3",
                "irn_batch_size=2"]
    assert cli.main(["train", "--method", "irnet", "--data", str(tmp_path / "data"), "--out", str(run),
                     "--epochs", "1", "--batch-size", "2", "--crop", "64", "--device", "cpu", "--set", *settings]) == 0
    assert (run / "pseudo_labels" / "summary.json").exists() and (run / "irn" / "model.pt").exists()
    summary = __import__("json").loads((run / "pseudo_labels" / "summary.json").read_text())
    masks = list((run / "pseudo_labels" / "masks").glob("*.png"))
    assert len(masks) == summary["images"] >= 2  # the training images (labkit train may hold one out for validation)
    report = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(tmp_path / "data"),
                     "--device", "cpu", "--json", str(report)]) == 0
    assert {"ap50", "ap", "n_images"} <= set(__import__("json").loads(report.read_text()))
    assert cli.main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(tmp_path / "data"),
                     "--out", str(tmp_path / "pred"), "--device", "cpu", "--set", "mode=cam_boundary"]) == 0
    assert len(list((tmp_path / "pred").glob("shapes_train_0000?.png"))) == 4


def test_decode_grid_parameters_are_decode_parameters():
    method = methods.get("irnet", walk_steps=4, refine_steps=3)
    torch.manual_seed(0)
    outputs = {"cam": torch.randn(1, 4, 16, 16), "displacement": torch.randn(1, 2, 16, 16) * 0.1,
               "boundary": torch.randn(1, 1, 16, 16)}
    grid = method.decode_grid()
    assert grid and all(len(values) > 1 for values in grid.values())
    for name, values in grid.items():
        for value in values:
            (pred,) = method.decode(outputs, **{name: value})
            assert pred["instances"].shape == (16, 16)
    # a higher background level never labels more pixels
    low, high = method.decode(outputs, mode="cam", bg_level=0.15)[0], method.decode(outputs, mode="cam", bg_level=0.5)[0]
    assert (high["instances"] > 0).sum() <= (low["instances"] > 0).sum()


def test_stage_1_runs_only_the_cam_network(tmp_path):
    from labkit.train import train

    method = methods.get("irnet", **FAST)
    model = method.build_model(in_channels=3, num_classes=5)
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append("irn"))
    model.own_backbones["cam"].register_forward_hook(lambda *args: calls.append("cam"))
    train(method, model, ImageLabels(Tiny(2)), out_dir=tmp_path, epochs=1, batch_size=2, device="cpu",
          progress=False)
    assert calls == ["cam"]  # one step, and stage 3's network was not run for it
    assert method.loss_heads({"relations": torch.zeros(1)}) == ("displacement", "boundary")


def test_labkit_train_takes_stage_one_settings_from_the_method(tmp_path, caplog):
    """Stage 1 trains with irnet's own batch size and schedule, stage 3 with its own batch size; --samples sizes
    a synthetic training set, and a set smaller than FEW_IMAGES is warned about."""
    import json
    import logging

    from labkit import workflows
    from labkit.checkpoint import read_checkpoint
    from labkit.methods.irnet import FEW_IMAGES

    run = tmp_path / "run"
    params = {**FAST, "irn_batch_size": 3, "cam_width": 4, "cam_depth": 2}
    with caplog.at_level(logging.WARNING, logger="labkit.methods.irnet"):
        workflows.train_run("irnet", "synthetic:shapes", run, epochs=1, steps_per_epoch=1, samples=6,
                            method_params=params, device="cpu", progress=False)
    stage1, stage3 = read_checkpoint(run)["training"], read_checkpoint(run / "irn")["training"]
    assert (stage1["batch_size"], stage1["schedule"], stage1["lr"]) == (16, "onecycle", 2e-3)
    assert json.loads((run / "run.json").read_text())["batch_size"] == 16
    assert (stage3["batch_size"], stage3["schedule"]) == (3, "cosine")
    assert json.loads((run / "pseudo_labels" / "summary.json").read_text())["images"] == 6
    assert sum("6 training images" in r.getMessage() for r in caplog.records) == 1 and 6 < FEW_IMAGES  # once
    # explicit settings win over the method's
    workflows.train_run("irnet", "synthetic:shapes", tmp_path / "b", epochs=1, steps_per_epoch=1, samples=4,
                        batch_size=2, schedule="constant", method_params=params, device="cpu", progress=False)
    assert (read_checkpoint(tmp_path / "b")["training"]["batch_size"],
            read_checkpoint(tmp_path / "b")["training"]["schedule"]) == (2, "constant")


def test_samples_needs_synthetic_data(tmp_path):
    from labkit import workflows

    (tmp_path / "folder").mkdir()
    with pytest.raises(LabkitError, match="samples"):
        workflows.train_run("discriminative", tmp_path / "folder", tmp_path / "run", samples=10, device="cpu")
    with pytest.raises(LabkitError, match="samples"):
        workflows.train_run("discriminative", "synthetic:shapes", tmp_path / "run", samples=0, device="cpu")


def test_stage_2_mines_with_the_crf_unless_switched_off():
    from labkit.methods.irnet_cam import mine_relations, mine_relations_crf

    sample = Tiny(1)[0]
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cams = torch.zeros(4, 64, 64)
    cams[0] = torch.exp(-((ys - 30) ** 2 + (xs - 30) ** 2) / 200)
    with_crf = methods.get("irnet").mine(cams, sample["image"])
    without = methods.get("irnet", crf=False).mine(cams, sample["image"])
    assert (with_crf == mine_relations_crf(sample["image"], cams, gaussian_sxy=1.0)).all()
    assert (without == mine_relations(cams[None])[0]).all()
    assert not (with_crf == without).all()
    authors = methods.get("irnet", crf_gaussian_sxy=3.0).mine(cams, sample["image"])
    assert (authors == mine_relations_crf(sample["image"], cams, gaussian_sxy=3.0)).all()
    assert not (authors == with_crf).all()
