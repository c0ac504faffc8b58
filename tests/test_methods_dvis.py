"""The ``dvis`` method: model heads, loss terms, decoding, the verification head and its training stage."""
from __future__ import annotations

import json

import pytest
import torch

from labkit import methods
from labkit.errors import LabkitError
from labkit.methods.dvis import candidates_prediction, label_map
from labkit.data import SyntheticScenes
from labkit.methods.dvis_verification import (VerifierTraining, load_verifier, match_candidates, roi_orientations,
                                              train_verifier)
from labkit.models.verification import VerificationHead, random_orientations, verification_scores


def three_plateau_outputs() -> dict[str, torch.Tensor]:
    f = torch.zeros(1, 1, 32, 32)
    f[0, 0, 2:10, 2:10], f[0, 0, 2:10, 20:30], f[0, 0, 18:28, 4:12] = 2.0, 3.0, 4.0
    f[0, 0, 0, 31] = -1.0  # negative raw output: background after the ReLU
    return {"label": f, "features": torch.zeros(1, 16, 32, 32)}


def test_heads_model_outputs_and_identity_features():
    method = methods.get("dvis", width=8, depth=2)
    model = method.build_model(in_channels=3, num_classes=5)
    image = torch.rand(2, 3, 20, 24)
    out = model(image)
    assert out["label"].shape == (2, 1, 20, 24) and out["features"].shape == (2, 8, 20, 24)
    assert torch.allclose(out["features"], model.backbone(image), atol=1e-6)  # the backbone's features, unchanged
    assert not any(p.requires_grad for p in model.heads["features"].parameters())
    assert "dvis" in methods.available()


def test_loss_terms_and_ignore_pixels():
    method = methods.get("dvis", window=9, center=2, dilation=2)
    inst = torch.zeros(1, 16, 16, dtype=torch.int64)
    inst[0, 2:7, 2:7], inst[0, 9:14, 9:14] = 4, 9
    batch = {"instances": inst, "semantic": (inst > 0).long()}
    raw = torch.randn(1, 1, 16, 16, requires_grad=True)
    terms = method.loss({"label": raw}, batch)
    assert set(terms) == {"binary", "pairwise", "mumford_shah", "quantization", "loss"}
    expected = terms["binary"] + terms["pairwise"] + 0.1 * (terms["mumford_shah"] + terms["quantization"])
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    # a foreground pixel whose raw output is negative (0 after the ReLU) is still pulled up
    neg_fg = (inst[0] > 0) & (raw[0, 0] < 0)
    assert neg_fg.any() and (raw.grad[0, 0][neg_fg] < 0).all()
    ignored = dict(batch, semantic=torch.full_like(inst, 255))
    zero = method.loss({"label": raw}, ignored)
    assert zero["binary"].item() == 0.0 and zero["pairwise"].item() == 0.0


@pytest.mark.parametrize("overrides, needle", [
    (dict(m1=-2.0), "m1"),
    (dict(min_visible=1.5), "min_visible"),
    (dict(m2=0.0), "m2"),
    (dict(window=5, center=8), "does not fit"),
    (dict(sampling="grid"), "sampling"),
    (dict(bandwidths=(0.9, -0.4)), "bandwidths"),
    (dict(pairwise_weight=-1.0), "pairwise_weight"),
    (dict(negative_iou=0.5, positive_iou=0.2), "negative_iou"),
    (dict(verifier_augment="rot45"), "verifier_augment"),
    (dict(edge_threshold=0.0), "edge_threshold"),
    (dict(nope=1), "unknown parameter"),
])
def test_bad_parameters(overrides, needle):
    with pytest.raises(LabkitError, match=needle):
        methods.get("dvis", **overrides)


def test_decode_without_verifier_gives_the_plateaus():
    method = methods.get("dvis")
    [pred] = method.decode(three_plateau_outputs())
    assert len(pred["ids"]) == 3 and pred["masks"].shape == (3, 32, 32)
    assert pred["scores"].tolist() == [1.0, 1.0, 1.0] and pred["classes"].tolist() == [1, 1, 1]
    assert sorted(pred["masks"].flatten(1).sum(1).tolist()) == [64, 80, 80]
    assert set(pred["instances"].unique().tolist()) == {0, 1, 2, 3}
    assert label_map(three_plateau_outputs()).min() == 0.0
    with pytest.raises(LabkitError, match="unknown decoding"):
        method.decode(three_plateau_outputs(), bandwidth=0.5)
    assert set(method.decode_grid()) <= set(method.DECODE_KEYS)


def test_decode_cuts_touching_plateaus_at_the_edge_threshold():
    f = torch.zeros(1, 1, 20, 40)
    f[..., 5:15, 2:15], f[..., 5:15, 15:30] = 2.0, 2.2  # touching, 0.2 apart: one mean-shift cluster
    outputs = {"label": f}
    assert len(methods.get("dvis").decode(outputs)[0]["ids"]) == 1
    assert len(methods.get("dvis").decode(outputs, edge_threshold=0.15)[0]["ids"]) == 2
    assert len(methods.get("dvis", edge_threshold=0.15).decode(outputs)[0]["ids"]) == 2
    assert methods.get("dvis", edge_threshold=0.15).decode(outputs, edge_threshold=None)[0]["ids"].numel() == 1
    assert None in methods.get("dvis").decode_grid()["edge_threshold"]


def test_candidates_prediction_paints_the_best_on_top():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, :3] = True, True
    pred = candidates_prediction(masks, torch.tensor([1, 2]), torch.tensor([0.2, 0.9]))
    assert pred["scores"].tolist() == pytest.approx([0.9, 0.2]) and pred["classes"].tolist() == [2, 1]
    assert (pred["instances"][:3] == 1).all() and (pred["instances"][3] == 0).all()
    # a candidate that a better one mostly covers leaves no fragment in the map (but stays among the masks)
    masks[0, :4] = True  # rows 0-3; the better candidate covers rows 0-2: 1/4 of it is free
    for min_visible, row_3 in [(0.0, 2), (0.25, 2), (0.3, 0)]:
        pred = candidates_prediction(masks, torch.tensor([1, 2]), torch.tensor([0.2, 0.9]), min_visible)
        assert (pred["instances"][:3] == 1).all() and (pred["instances"][3] == row_3).all()
        assert pred["masks"].shape[0] == 2
    for bad in (-0.1, 1.5, float("nan")):  # as a decode parameter too (--set min_visible=...)
        with pytest.raises(LabkitError, match="min_visible"):
            candidates_prediction(masks, torch.tensor([1, 2]), torch.tensor([0.2, 0.9]), bad)


def test_match_candidates_iou_and_class():
    inst = torch.zeros(1, 8, 8, dtype=torch.int64)
    inst[0, :4, :4] = 7
    sem = torch.zeros_like(inst)
    sem[0, :4, :4] = 3
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # exact
    masks[1, :4, :2] = True  # half
    masks[2, 6:, 6:] = True  # background
    iou, cls = match_candidates(masks, torch.zeros(3, dtype=torch.int64), inst, sem)
    assert iou.tolist() == pytest.approx([1.0, 0.5, 0.0]) and cls.tolist() == [3, 3, 0]


def test_verification_head_shapes_and_scores():
    head = VerificationHead(feature_channels=4, num_classes=3, size=8, convs=2, width=8, hidden=16)
    masks = torch.zeros(5, 20, 20, dtype=torch.bool)
    masks[:, 3:9, 4:12] = True
    boxes = torch.tensor([[4.0, 3.0, 12.0, 9.0]]).repeat(5, 1)
    out = head(torch.rand(2, 4, 20, 20), torch.rand(2, 20, 20), masks, boxes, torch.tensor([0, 1, 0, 1, 1]),
               torch.rand(5))
    assert out["class_logits"].shape == (5, 3) and out["iou"].shape == (5,)
    assert ((out["iou"] >= 0) & (out["iou"] <= 1)).all()
    score, cls, conf, iou = verification_scores(out, class_weight=0.25)
    assert torch.allclose(score, 0.25 * conf + 0.75 * iou) and ((cls >= 1) & (cls <= 2)).all()
    empty = head(torch.rand(1, 4, 20, 20), torch.rand(1, 20, 20), masks[:0], boxes[:0],
                 torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    assert empty["class_logits"].shape == (0, 3)
    with pytest.raises(LabkitError, match="num_classes"):
        VerificationHead(4, 1)


class Plateaus(torch.nn.Module):
    """A frozen FCN for the second stage: label plateaus 2 and 3 from the image's first two channels (the ground
    truth of :func:`_tiny_samples`), features from ``fcn``."""

    def __init__(self, fcn):
        super().__init__()
        self.fcn, self.config = fcn, fcn.config

    def forward(self, image):
        out = self.fcn(image)
        return {"label": 2 * image[:, :1] + 3 * image[:, 1:2], "features": out["features"]}


def _symmetries(roi: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``roi [C,S,S]`` under the symmetries of the square."""
    return [torch.rot90(r, k, dims=(-2, -1)) for r in (roi, roi.flip(-1)) for k in range(4)]


def test_random_orientations_give_each_roi_a_symmetry_of_its_own():
    rois = torch.arange(200 * 2 * 3 * 3, dtype=torch.float32).reshape(200, 2, 3, 3)  # no symmetric RoI
    gen = torch.Generator().manual_seed(0)
    assert random_orientations(rois, "none") is rois
    for kind, count in (("flip", 2), ("dihedral", 8)):
        out = random_orientations(rois, kind, generator=gen)
        assert out.shape == rois.shape
        seen = set()
        for roi, turned in zip(rois, out):
            options = _symmetries(roi)[:: 4 if kind == "flip" else 1]  # flip: itself or its mirror image
            which = [i for i, o in enumerate(options) if torch.equal(o, turned)]
            assert len(which) == 1, f"{kind}: an output is not one of the RoI's {count} allowed images"
            seen.add(which[0])
        assert len(seen) == count, f"{kind}: only {len(seen)} of {count} orientations drawn in 200 RoIs"
    assert random_orientations(rois[:0], "dihedral").shape == (0, 2, 3, 3)
    with pytest.raises(LabkitError, match="orientations"):
        random_orientations(rois, "rot45")


def test_roi_orientations_auto_keeps_the_handedness_of_digits():
    assert roi_orientations("auto", SyntheticScenes("shapes", split="val", num_samples=1)) == "dihedral"
    assert roi_orientations("auto", SyntheticScenes("digits", split="val", num_samples=1)) == "none"
    assert roi_orientations("auto", _tiny_samples()) == "dihedral"  # a folder has no family: no handedness known
    assert roi_orientations("flip", SyntheticScenes("digits", split="val", num_samples=1)) == "flip"


def test_verifier_stage_turns_the_rois_in_training_only():
    method = methods.get("dvis", width=8, depth=2, min_area=4)
    fcn = method.build_model(in_channels=3, num_classes=3)

    torch.manual_seed(0)
    head = VerificationHead(8, 3, size=6, convs=1, width=4, hidden=8)
    stage = VerifierTraining(Plateaus(fcn), head, method.discretize_options(), augment="dihedral")
    image = torch.stack([s["image"] for s in _tiny_samples(2)])
    stage.eval()
    plain = stage(image)["class_logits"]
    assert torch.equal(stage(image)["class_logits"], plain)
    stage.train()
    torch.manual_seed(1)
    turned = [stage(image)["class_logits"] for _ in range(4)]
    assert turned[0].shape == plain.shape and any(not torch.allclose(t, plain) for t in turned)


def _perturbed_candidates(gen: torch.Generator, n: int = 48, size: int = 24):
    """Disks on a 24x24 image; candidates are shifted / cropped / grown versions with known IoU."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    truth = ((yy - 12) ** 2 + (xx - 12) ** 2 <= 36)
    masks, boxes = [], []
    for _ in range(n):
        dy, dx = torch.randint(-6, 7, (2,), generator=gen).tolist()
        r = 3 + 5 * torch.rand(1, generator=gen).item()
        m = (yy - 12 - dy) ** 2 + (xx - 12 - dx) ** 2 <= r * r
        ys, xs = m.nonzero(as_tuple=True)
        masks.append(m)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    masks = torch.stack(masks)
    inter = (masks & truth).flatten(1).sum(1).float()
    union = (masks | truth).flatten(1).sum(1).float()
    features = truth.float()[None, None].repeat(1, 2, 1, 1)  # features that show the object
    return features, masks, torch.tensor(boxes, dtype=torch.float32), inter / union


def test_iou_head_learns_a_positive_rank_correlation():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    head = VerificationHead(feature_channels=2, num_classes=2, size=8, convs=2, width=8, hidden=32)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(150):
        features, masks, boxes, iou = _perturbed_candidates(gen)
        out = head(features, features[:, 0], masks, boxes, torch.zeros(len(masks), dtype=torch.int64),
                   torch.ones(len(masks)))
        loss = torch.nn.functional.huber_loss(out["iou"], iou, delta=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    features, masks, boxes, iou = _perturbed_candidates(torch.Generator().manual_seed(99), n=64)
    with torch.no_grad():
        pred = head(features, features[:, 0], masks, boxes, torch.zeros(64, dtype=torch.int64), torch.ones(64))["iou"]
    rank = lambda v: torch.argsort(torch.argsort(v)).float()  # noqa: E731
    rho = torch.corrcoef(torch.stack([rank(pred), rank(iou)]))[0, 1].item()
    assert rho > 0.5, f"Spearman correlation of predicted and true IoU only {rho:.2f}"


def _tiny_samples(n: int = 4):
    samples = []
    for i in range(n):
        inst = torch.zeros(24, 24, dtype=torch.int64)
        inst[2:10, 2 + i:10 + i] = 1
        inst[13:21, 12:22] = 2
        sem = inst.clone()
        image = torch.stack([(inst == 1).float(), (inst == 2).float(), torch.zeros(24, 24)])
        samples.append({"image": image, "instances": inst, "semantic": sem})
    return samples


def test_two_stage_training_resumes_and_verifies(tmp_path):
    method = methods.get("dvis", width=8, depth=2, window=9, center=2, dilation=2, verifier_epochs=2,
                         verifier_convs=1, verifier_width=8, verifier_hidden=16, roi_size=6, min_area=4)
    data = _tiny_samples()
    model = method.build_model(in_channels=3, num_classes=3)
    with torch.no_grad():  # an FCN that already outputs the plateaus 2 and 3: candidates to verify
        model.heads["label"].weight.zero_()
        model.heads["label"].bias.fill_(0.0)
    from labkit.train import train

    kwargs = dict(epochs=1, batch_size=2, lr=0.0, device="cpu", seed=0, resume=True, progress=False)
    train(method, model, data, out_dir=tmp_path, **kwargs)

    fcn = Plateaus(model)
    history = train_verifier(method, fcn, data, out_dir=tmp_path / "verification", train_kwargs=kwargs)
    assert len(history["epochs"]) == 2 and history["epochs"][0]["candidates"] > 0
    again = train_verifier(method, fcn, data, out_dir=tmp_path / "verification", train_kwargs=kwargs)
    assert again["epochs"] == history["epochs"]  # resumed: nothing left to train
    head = load_verifier(tmp_path / "verification")
    outputs = fcn(torch.stack([s["image"] for s in data[:2]]))
    preds = method.decode(outputs, verifier=head, verify_threshold=0.0)
    assert all(len(p["ids"]) == 2 and set(p["classes"].tolist()) <= {1, 2} for p in preds)
    assert all(((p["scores"] >= 0) & (p["scores"] <= 1)).all() for p in preds)
    unverified = method.decode(outputs, verifier=head, verify=False)
    assert all(p["scores"].tolist() == [1.0, 1.0] for p in unverified)
    rejected = method.decode(outputs, verifier=head, verify_threshold=1.01)
    assert all(len(p["ids"]) == 0 for p in rejected)
    with pytest.raises(LabkitError, match="not a DVIS verification"):
        load_verifier(tmp_path)
