"""The ``discriminative`` method: heads, loss terms, decoding into scored instances, training."""
from __future__ import annotations

import pytest
import torch

from labkit import methods
from labkit.errors import LabkitError
from labkit.losses import discriminative_loss
from labkit.methods.discriminative import cluster_embeddings


def two_square_batch() -> dict[str, torch.Tensor]:
    """One 12x12 image: instance 3 (class 1) at top-left, instance 8 (class 2) at bottom-right."""
    inst = torch.zeros(1, 12, 12, dtype=torch.int64)
    inst[0, 1:5, 1:5] = 3
    inst[0, 6:11, 6:11] = 8
    sem = torch.zeros_like(inst)
    sem[inst == 3] = 1
    sem[inst == 8] = 2
    return {"image": torch.zeros(1, 3, 12, 12), "instances": inst, "semantic": sem}


def perfect_outputs(batch, *, dim: int = 2, spread: float = 0.0, num_classes: int = 3) -> dict[str, torch.Tensor]:
    """Embeddings at one point per instance (plus ``spread`` jitter) and confident semantic logits."""
    inst, sem = batch["instances"][0], batch["semantic"][0]
    emb = torch.zeros(1, dim, *inst.shape)
    centres = {3: torch.tensor([2.0, 0.0]), 8: torch.tensor([-2.0, 0.0])}
    gen = torch.Generator().manual_seed(0)
    for i, c in centres.items():
        mask = inst == i
        emb[0, :2, mask] = c[:, None] + spread * torch.randn(2, int(mask.sum()), generator=gen)
    logits = torch.full((1, num_classes, *inst.shape), -5.0)
    logits[0].scatter_(0, sem[None], 5.0)
    return {"embedding": emb, "semantic": logits}


def test_heads_and_model_outputs():
    method = methods.get("discriminative", embedding_dim=4, width=8)
    assert method.heads(5) == {"embedding": 4, "semantic": 5}
    assert method.normalized_heads() == ()
    model = method.build_model(in_channels=1, num_classes=3)
    out = model(torch.zeros(2, 1, 20, 24))
    assert out["embedding"].shape == (2, 4, 20, 24) and out["semantic"].shape == (2, 3, 20, 24)


def test_semantic_network_is_separate_by_default_and_can_be_shared():
    separate = methods.get("discriminative", width=8, depth=2).build_model(in_channels=1, num_classes=3)
    shared = methods.get("discriminative", width=8, depth=2, separate_semantic=False).build_model(1, 3)
    assert list(separate.own_backbones) == ["semantic"] and len(shared.own_backbones) == 0
    assert separate.config["separate"] == ("semantic",) and "separate" not in shared.config
    size = [sum(p.numel() for p in net.parameters()) for net in (separate.backbone, separate.own_backbones)]
    assert size[0] == size[1]  # a second backbone of the same size
    coords = methods.get("discriminative", width=8, depth=2, coords=True).build_model(1, 3)
    assert coords.config["coords"] is True


def test_loss_terms_are_the_paper_terms_plus_cross_entropy():
    method = methods.get("discriminative", gamma=0.01, semantic_weight=0.5, instance_class_weight=0.25)
    batch = two_square_batch()
    outputs = perfect_outputs(batch, spread=0.7)
    outputs["semantic"] = torch.randn(outputs["semantic"].shape, generator=torch.Generator().manual_seed(1))
    terms = method.loss(outputs, batch)
    assert set(terms) == {"var", "dist", "reg", "semantic", "instance_class", "loss"}
    ref = discriminative_loss(outputs["embedding"], batch["instances"], batch["semantic"], gamma=0.01)
    for name in ("var", "dist", "reg"):
        assert torch.allclose(terms[name], ref[name])
    ce = torch.nn.functional.cross_entropy(outputs["semantic"], batch["semantic"])
    assert torch.allclose(terms["semantic"], ce)
    logits, inst = outputs["semantic"][0], batch["instances"][0]
    pooled = torch.stack([logits[:, inst == 3].mean(dim=1), logits[:, inst == 8].mean(dim=1)])
    instance_ce = torch.nn.functional.cross_entropy(pooled, torch.tensor([1, 2]))
    assert torch.allclose(terms["instance_class"], instance_ce)
    assert torch.allclose(terms["loss"], ref["loss"] + 0.5 * ce + 0.25 * instance_ce)


def test_loss_hand_computed_and_zero_when_margins_hold():
    """Two clusters of one class: 4 pixels each; the paper's terms by hand."""
    method = methods.get("discriminative", per_class=True, semantic_weight=0.0, instance_class_weight=0.0)
    inst = torch.tensor([[[1, 1, 2, 2], [1, 1, 2, 2]]])
    sem = (inst > 0).long()
    emb = torch.zeros(1, 1, 2, 4)
    emb[0, 0] = torch.tensor([[0.0, 2.0, 3.0, 3.0], [0.0, 2.0, 3.0, 3.0]])  # cluster 1: mean 1, cluster 2: mean 3
    logits = torch.zeros(1, 2, 2, 4)
    terms = method.loss({"embedding": emb, "semantic": logits}, {"instances": inst, "semantic": sem})
    # var: cluster 1 distances 1 -> (1 - 0.5)^2 = 0.25 each; cluster 2 at its mean -> 0; mean over clusters
    assert terms["var"].item() == pytest.approx(0.125)
    # dist: centres 2 apart, [2 * 1.5 - 2]^2 = 1 for both ordered pairs, divided by C(C-1) = 2
    assert terms["dist"].item() == pytest.approx(1.0)
    assert terms["reg"].item() == pytest.approx(2.0)
    assert terms["loss"].item() == pytest.approx(0.125 + 1.0 + 0.001 * 2.0)
    # margins satisfied: every pixel within delta_v, centres 2 delta_d apart -> var = dist = 0
    emb[0, 0] = torch.tensor([[0.0, 0.4, 3.3, 3.5], [0.2, 0.2, 3.4, 3.4]])  # centres 0.2 and 3.4
    terms = method.loss({"embedding": emb, "semantic": logits}, {"instances": inst, "semantic": sem})
    assert terms["var"].item() == 0.0 and terms["dist"].item() == 0.0


def test_loss_invariant_to_permuting_instance_ids():
    method = methods.get("discriminative")
    batch = two_square_batch()
    outputs = perfect_outputs(batch, spread=0.8)
    permuted = dict(batch, instances=torch.where(batch["instances"] == 3, 17, torch.where(batch["instances"] == 8, 2, 0)))
    a, b = method.loss(outputs, batch), method.loss(outputs, permuted)
    for name in a:
        assert torch.allclose(a[name], b[name])


@pytest.mark.parametrize("n_instances", [0, 1])
def test_loss_finite_with_gradient_for_zero_or_one_instance(n_instances):
    method = methods.get("discriminative")
    inst = torch.zeros(2, 8, 8, dtype=torch.int64)
    if n_instances:
        inst[:, 2:5, 2:5] = 4
    batch = {"instances": inst, "semantic": (inst > 0).long()}
    emb = torch.randn(2, 8, 8, 8, requires_grad=True)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    terms = method.loss({"embedding": emb, "semantic": logits}, batch)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(logits.grad).all()
    assert terms["dist"].item() == 0.0


def test_gradcheck_of_the_method_loss():
    method = methods.get("discriminative", embedding_dim=2)
    batch = two_square_batch()
    batch = {k: v[..., :7, :7] for k, v in batch.items() if k != "image"}
    batch["instances"][0, 5:7, 5:7] = 8
    batch["semantic"][0, 5:7, 5:7] = 2
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(1, 2, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    logits = torch.randn(1, 3, 7, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda e, s: method.loss({"embedding": e, "semantic": s}, batch)["loss"], (emb, logits)
    )


def test_decode_recovers_instances_with_classes_and_scores():
    method = methods.get("discriminative")
    batch = two_square_batch()
    (pred,) = method.decode(perfect_outputs(batch))
    inst = pred["instances"]
    assert inst.dtype == torch.int64 and inst.shape == (12, 12)
    assert set(pred["ids"].tolist()) == set(inst.unique().tolist()) - {0} and len(pred["ids"]) == 2
    gt = batch["instances"][0]
    for pid, cls in zip(pred["ids"].tolist(), pred["classes"].tolist()):
        mask = inst == pid
        (gid,) = gt[mask].unique().tolist()
        assert torch.equal(mask, gt == gid)
        assert cls == {3: 1, 8: 2}[gid]
    assert torch.all((pred["scores"] > 0.9) & (pred["scores"] <= 1.0))


def test_decode_scores_rank_an_uncertain_instance_below_a_confident_one():
    method = methods.get("discriminative")
    batch = two_square_batch()
    outputs = perfect_outputs(batch)
    unsure = batch["instances"][0] == 8
    outputs["semantic"][0][:, unsure] = torch.tensor([0.0, -5.0, 1.0])[:, None]  # p(foreground) = 0.73
    pred = method.decode(outputs)[0]
    scores = {int(batch["instances"][0][pred["instances"] == pid].mode().values): s
              for pid, s in zip(pred["ids"].tolist(), pred["scores"].tolist())}
    p_background, p_class1, p_class2 = torch.softmax(torch.tensor([0.0, -5.0, 1.0]), 0).tolist()
    # foreground confidence x share of it for the instance's class (class 2) x compactness (1)
    assert scores[3] > 0.99 and scores[8] == pytest.approx((1 - p_background) * p_class2 / (p_class1 + p_class2))
    assert pred["scores"].tolist() == sorted(pred["scores"].tolist(), reverse=True)


def test_decode_without_foreground_is_empty_and_unknown_parameter_is_an_error():
    method = methods.get("discriminative")
    outputs = {"embedding": torch.randn(2, 8, 6, 6), "semantic": torch.zeros(2, 2, 6, 6)}
    outputs["semantic"][:, 0] = 3.0
    preds = method.decode(outputs)
    assert len(preds) == 2
    assert all(p["instances"].sum() == 0 and len(p["ids"]) == len(p["scores"]) == 0 for p in preds)
    with pytest.raises(LabkitError, match="bandwith"):
        method.decode(outputs, bandwith=0.3)


def test_cluster_embeddings_quality_and_assign_radius():
    """Eight points at 0, four at 0.45, one at 0.7 (1-D, bandwidth 0.5): one mode near 0.15-0.19.

    The point at 0.7 lies outside the mode's ball; it joins the mode within
    ``assign_radius`` (quality 12/13) and stays unlabelled beyond it.
    """
    points = torch.tensor([0.0] * 8 + [0.45] * 4 + [0.7])[:, None]
    assignment, quality = cluster_embeddings(points, bandwidth=0.5, assign_radius=1.5)
    assert assignment.tolist() == [0] * 13
    assert quality.tolist() == pytest.approx([12 / 13])
    assignment, quality = cluster_embeddings(points, bandwidth=0.5, assign_radius=0.5)
    assert assignment.tolist() == [0] * 12 + [-1]
    assert quality.tolist() == pytest.approx([1.0])


def test_cluster_embeddings_merges_fragments_within_merge_radius():
    """A 30-point cluster at 0 and a 5-point fragment at 1.0: two modes, merged at radius 1.5."""
    points = torch.tensor([0.0] * 30 + [1.0] * 5)[:, None]
    assignment, _ = cluster_embeddings(points, bandwidth=0.5, assign_radius=1.5, merge_radius=0.0)
    assert len(set(assignment.tolist())) == 2
    assignment, quality = cluster_embeddings(points, bandwidth=0.5, assign_radius=1.5, merge_radius=1.5)
    assert assignment.tolist() == [0] * 35
    assert quality.tolist() == pytest.approx([30 / 35])


@pytest.mark.slow
def test_short_cpu_training_improves_ap50(tmp_path):
    from embedding_scenes import coloured_squares

    from labkit.evaluation import evaluate
    from labkit.train import train

    train_set, test_set = coloured_squares(16), coloured_squares(8, seed=1)
    method = methods.get("discriminative", width=8, depth=2)
    torch.manual_seed(0)
    model = method.build_model(in_channels=3, num_classes=2)
    before = evaluate(method, model, test_set, progress=False)["ap50"]
    train(method, model, train_set, out_dir=tmp_path, epochs=25, batch_size=4, lr=1e-2, progress=False)
    after = evaluate(method, model, test_set, progress=False)["ap50"]
    assert after > before + 0.5
    assert after > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("key", ["discriminative", "recurrent"])
def test_cli_train_evaluate_predict_on_a_16bit_instance_folder(key, tmp_path, capsys):
    """A user's folder of 16-bit grayscale images with instance masks, no code change."""
    import json

    import numpy as np
    from embedding_scenes import microscopy_folder
    from PIL import Image

    from labkit.cli import main

    folder = microscopy_folder(tmp_path / "cells")
    run = tmp_path / "run"
    assert main(["train", "--method", key, "--data", str(folder), "--out", str(run), "--epochs", "2",
                 "--crop", "32", "--batch-size", "2", "--device", "cpu", "--set", "width=8", "depth=2"]) == 0
    assert main(["evaluate", "--checkpoint", str(run / "model.pt"), "--data", str(folder),
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["method"] == key and results["n_images"] == 3 and 0.0 <= results["ap50"] <= 1.0
    # the 40x40 images exceed the 32-pixel crop, so predict tiles them by default; tiles keep one
    # stitched instance map, so overlapping proposals need whole-image prediction (--tile 0)
    assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(folder),
                 "--out", str(tmp_path / "pred"), "--tile", "0"]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "cell0.png"))
    assert mask.dtype == np.uint16 and mask.shape == (40, 40)
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text())["images"]
    assert set(index) == {"cell0", "cell1", "cell2"}
    entry = index["cell0"]
    assert len(entry["ids"]) == len(entry["classes"]) == len(entry["scores"])
    assert set(entry["ids"]) == set(np.unique(mask[mask > 0]).tolist())
    if key == "recurrent":  # pooled proposals, overlapping: every one of them beside the PNG
        proposals = np.load(tmp_path / "pred" / "cell0.proposals.npz")
        assert proposals["masks"].shape == (entry["proposals"], 40, 40) and proposals["masks"].dtype == bool
        assert len(proposals["scores"]) == entry["proposals"] >= len(entry["ids"])
        assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(folder),
                     "--out", str(tmp_path / "tiled")]) == 0
        assert not (tmp_path / "tiled" / "cell0.proposals.npz").exists()
        assert np.asarray(Image.open(tmp_path / "tiled" / "cell0.png")).shape == (40, 40)
    capsys.readouterr()


def test_instance_class_is_the_highest_mean_log_probability_not_the_pixel_majority():
    from labkit.methods.embedding import build_prediction

    labels = torch.ones(1, 3, dtype=torch.int64)
    # two pixels lean weakly to class 1, one is sure of class 2 (background 0.1 everywhere)
    probs = torch.tensor([[0.1, 0.1, 0.1], [0.46, 0.46, 0.02], [0.44, 0.44, 0.88]]).reshape(3, 1, 3)
    pred = build_prediction(labels, probs)
    assert pred["classes"].tolist() == [2]
    # share of the foreground probability for class 2, averaged over the pixels
    assert pred["scores"].item() == pytest.approx(0.9 * (0.44 / 0.9 + 0.44 / 0.9 + 0.88 / 0.9) / 3, rel=1e-5)


def test_split_components_keeps_every_piece_of_min_area_unless_piece_fraction_asks_more():
    """Look-alike objects far apart share one embedding; splitting must free the small ones too."""
    method = methods.get("discriminative", per_class=False)
    semantic = torch.full((1, 2, 24, 24), -4.0)
    semantic[0, 0] = 4.0
    for y0, y1, x0, x1 in ((1, 11, 1, 11), (15, 19, 15, 19)):  # a 100-pixel and a 16-pixel object
        semantic[0, 0, y0:y1, x0:x1], semantic[0, 1, y0:y1, x0:x1] = -4.0, 4.0
    outputs = {"embedding": torch.zeros(1, 8, 24, 24), "semantic": semantic}  # one embedding for both
    (whole,) = method.decode(outputs)
    (split,) = method.decode(outputs, split_components=True)
    (crumbs,) = method.decode(outputs, split_components=True, piece_fraction=0.25)
    assert len(whole["ids"]) == 1 and len(crumbs["ids"]) == 1  # 16 < 0.25 x 100: joins the large piece
    assert len(split["ids"]) == 2 and sorted((split["instances"] == i).sum().item() for i in split["ids"]) == [16, 100]
    (dropped,) = method.decode(outputs, split_components=True, min_area=20)
    assert len(dropped["ids"]) == 1 and (dropped["instances"] > 0).sum() == 100
