"""The ``recurrent`` method: sphere embedding, Eq. 2 through unrolled mean shift, vMF decoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labkit import methods
from labkit.clustering import recurrent_mean_shift
from labkit.errors import LabkitError
from labkit.losses import recurrent_grouping_loss
from labkit.methods.recurrent import merge_modes, pool_proposals
from labkit.metrics.inputs import contingency


def scene() -> dict[str, torch.Tensor]:
    """A 10x10 image: background, instance 5 (class 1) and instance 9 (class 2)."""
    inst = torch.zeros(1, 10, 10, dtype=torch.int64)
    inst[0, 1:5, 1:6] = 5
    inst[0, 6:9, 2:9] = 9
    sem = torch.zeros_like(inst)
    sem[inst == 5] = 1
    sem[inst == 9] = 2
    return {"image": torch.zeros(1, 1, 10, 10), "instances": inst, "semantic": sem}


def simplex_outputs(batch, dim: int = 3, noise: float = 0.0) -> dict[str, torch.Tensor]:
    """Background and the two instances at three unit vectors 120 degrees apart (calibrated s = 0.25)."""
    inst, sem = batch["instances"][0], batch["semantic"][0]
    angles = {0: 0.0, 5: 2 * math.pi / 3, 9: 4 * math.pi / 3}
    emb = torch.zeros(1, dim, *inst.shape)
    for i, a in angles.items():
        emb[0, 0, inst == i] = math.cos(a)
        emb[0, 1, inst == i] = math.sin(a)
    if noise:
        emb = emb + noise * torch.randn(emb.shape, generator=torch.Generator().manual_seed(0))
    emb = torch.nn.functional.normalize(emb, dim=1)
    logits = torch.full((1, 3, *inst.shape), -4.0)
    logits[0].scatter_(0, sem[None], 4.0)
    return {"embedding": emb, "semantic": logits}


def test_heads_unit_sphere_and_delta_tied_to_margin():
    method = methods.get("recurrent", embedding_dim=3, width=8)
    assert method.heads(4) == {"embedding": 3, "semantic": 4}
    assert method.normalized_heads() == ("embedding",)
    assert method.delta == pytest.approx(6.0)  # 1 / delta = (1 - alpha) / 3 at alpha = 0.5
    assert methods.get("recurrent", alpha=0.4).delta == pytest.approx(5.0)
    out = method.build_model(in_channels=1, num_classes=4)(torch.randn(2, 1, 12, 12))
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2, 12, 12), atol=1e-5)


def test_loss_is_eq2_accumulated_over_the_unrolled_loops():
    method = methods.get("recurrent", iterations=2, max_pixels=1000, semantic_weight=0.5)
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.6)
    terms = method.loss(outputs, batch)
    assert {"grouping", "semantic", "loss", "pos", "neg", "loss_t0", "loss_t1", "loss_t2"} <= set(terms)
    x = outputs["embedding"][0].reshape(3, -1).t()
    ref = recurrent_grouping_loss(recurrent_mean_shift(x, iterations=2, delta=6.0), batch["instances"].reshape(-1))
    assert torch.allclose(terms["grouping"], ref["loss"], atol=1e-6)
    assert torch.allclose(terms["grouping"], terms["loss_t0"] + terms["loss_t1"] + terms["loss_t2"], atol=1e-6)
    ce = torch.nn.functional.cross_entropy(outputs["semantic"], batch["semantic"])
    assert torch.allclose(terms["loss"], ref["loss"] + 0.5 * ce, atol=1e-6)


@pytest.mark.parametrize("weighting", ["paper", "balanced"])
def test_pair_weighting_reaches_the_loss_at_every_loop(weighting):
    method = methods.get("recurrent", iterations=2, max_pixels=1000, pair_weighting=weighting)
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.6)
    terms = method.loss(outputs, batch)
    x = outputs["embedding"][0].reshape(3, -1).t()
    ref = recurrent_grouping_loss(recurrent_mean_shift(x, iterations=2, delta=6.0), batch["instances"].reshape(-1),
                                  weighting=weighting)
    assert torch.allclose(terms["grouping"], ref["loss"], atol=1e-6)
    # Q = 3 groups (background and two instances): balanced = paper x Q for pos, x Q / (Q - 1) for neg.
    if weighting == "balanced":
        paper = methods.get("recurrent", iterations=2, max_pixels=1000).loss(outputs, batch)
        assert torch.allclose(terms["pos"], 3 * paper["pos"], atol=1e-6)
        assert torch.allclose(terms["neg"], 1.5 * paper["neg"], atol=1e-6)


def test_zero_grouping_loss_when_the_margin_holds():
    """Groups 120 degrees apart have s = 0.25 <= alpha; mean shift keeps them apart and tight."""
    method = methods.get("recurrent", iterations=3)
    terms = method.loss(simplex_outputs(scene()), scene())
    assert terms["grouping"].item() == pytest.approx(0.0, abs=1e-6)
    squeezed = methods.get("recurrent", alpha=0.2, iterations=0)  # a margin the simplex violates
    assert squeezed.loss(simplex_outputs(scene()), scene())["grouping"].item() > 0.01


def test_loss_invariant_to_permuting_instance_ids():
    method = methods.get("recurrent", iterations=1)
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.5)
    inst = batch["instances"]
    permuted = dict(batch, instances=torch.where(inst == 5, 2, torch.where(inst == 9, 31, 0)))
    a, b = method.loss(outputs, batch), method.loss(outputs, permuted)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_ignored_pixels_take_no_part():
    method = methods.get("recurrent", iterations=1)
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.5)
    ignored = dict(batch, semantic=batch["semantic"].clone())
    ignored["semantic"][0, :, 0] = 255
    scrambled = {k: v.clone() for k, v in outputs.items()}
    scrambled["embedding"][0, :, :, 0] = torch.nn.functional.normalize(torch.randn(3, 10), dim=0)
    a, b = method.loss(outputs, ignored)["grouping"], method.loss(scrambled, ignored)["grouping"]
    assert torch.allclose(a, b)


def test_pixel_sampling_caps_the_pairs():
    method = methods.get("recurrent", max_pixels=7, iterations=1)
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.5)
    torch.manual_seed(0)
    a = method.loss(outputs, batch)["grouping"]
    torch.manual_seed(1)
    b = method.loss(outputs, batch)["grouping"]
    assert torch.isfinite(a) and not torch.allclose(a, b)  # different samples of 7 pixels


@pytest.mark.parametrize("n_instances", [0, 1])
def test_finite_loss_and_gradient_for_zero_or_one_instance(n_instances):
    method = methods.get("recurrent", iterations=2, embedding_dim=4)
    inst = torch.zeros(2, 6, 6, dtype=torch.int64)
    if n_instances:
        inst[:, 1:4, 1:4] = 3
    batch = {"instances": inst, "semantic": (inst > 0).long()}
    raw = torch.randn(2, 4, 6, 6, requires_grad=True)
    logits = torch.randn(2, 2, 6, 6, requires_grad=True)
    terms = method.loss({"embedding": torch.nn.functional.normalize(raw, dim=1), "semantic": logits}, batch)
    assert all(torch.isfinite(v) for v in terms.values())
    terms["loss"].backward()
    assert torch.isfinite(raw.grad).all() and torch.isfinite(logits.grad).all()
    if n_instances == 0:
        assert terms["neg"].item() == 0.0  # background alone is one group: no negative pairs
    every_pixel_ignored = {"instances": inst, "semantic": torch.full_like(inst, 255)}
    terms = method.loss({"embedding": torch.nn.functional.normalize(raw, dim=1), "semantic": logits},
                        every_pixel_ignored)
    assert terms["loss"].item() == 0.0


def test_gradcheck_through_the_mean_shift_loops():
    method = methods.get("recurrent", iterations=2)
    inst = torch.tensor([[[0, 0, 1, 1, 2], [0, 1, 1, 2, 2]]])
    raw = torch.randn(1, 3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    logits = torch.randn(1, 3, 2, 5, dtype=torch.float64, requires_grad=True)
    batch = {"instances": inst, "semantic": inst.clone()}

    def total(r, s):
        return method.loss({"embedding": torch.nn.functional.normalize(r, dim=1), "semantic": s}, batch)["loss"]

    assert torch.autograd.gradcheck(total, (raw, logits))


def test_gradient_map_has_one_value_per_pixel_and_changes_with_loops():
    method = methods.get("recurrent")
    batch = scene()
    outputs = simplex_outputs(batch, noise=0.8)
    g0 = method.gradient_map(outputs["embedding"][0], batch["instances"][0], loops=0)
    g1 = method.gradient_map(outputs["embedding"][0], batch["instances"][0], loops=1)
    assert g0.shape == g1.shape == (10, 10)
    assert torch.isfinite(g0).all() and torch.isfinite(g1).all() and not torch.allclose(g0, g1)


def test_decode_recovers_instances_with_classes_and_scores():
    method = methods.get("recurrent")
    batch = scene()
    (pred,) = method.decode(simplex_outputs(batch, noise=0.1), proposal_scales=())  # one grouping
    gt = batch["instances"][0]
    assert len(pred["ids"]) == len(pred["classes"]) == len(pred["scores"]) == 2
    for pid, cls in zip(pred["ids"].tolist(), pred["classes"].tolist()):
        mask = pred["instances"] == pid
        (gid,) = gt[mask].unique().tolist()
        assert torch.equal(mask, gt == gid) and cls == {5: 1, 9: 2}[gid]
    assert torch.all((pred["scores"] > 0.5) & (pred["scores"] <= 1.0))


def test_decode_subsamples_large_foregrounds_and_scores_loose_clusters_lower():
    method = methods.get("recurrent")
    batch = scene()
    tight = method.decode(simplex_outputs(batch, noise=0.05), decode_pixels=10)[0]
    loose = method.decode(simplex_outputs(batch, noise=0.4), decode_pixels=10)[0]
    assert len(tight["ids"]) == 2
    assert loose["scores"].max() < tight["scores"].min()


def test_decode_without_foreground_and_unknown_parameter():
    method = methods.get("recurrent", embedding_dim=3)
    outputs = simplex_outputs(scene())
    outputs["semantic"][:, 0] = 9.0
    (pred,) = method.decode(outputs)
    assert pred["instances"].sum() == 0 and len(pred["ids"]) == 0
    with pytest.raises(LabkitError, match="iterations"):
        method.decode(outputs, iterations=3)


def test_merge_modes_groups_nearly_equal_vectors():
    points = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [0.05, 0.99], [0.02, 1.0]])
    modes = merge_modes(points, similarity=0.75)
    assert modes.shape == (2, 2)
    assert modes[0, 1] > 0.9 and modes[1, 0] > 0.9  # the three near (0, 1) first: most support



def test_merge_modes_is_the_greedy_grouping_by_support_among_the_remaining_points():
    """The incremental support count gives the modes of the plain definition (recount after every mode)."""

    def by_definition(points, similarity):
        points = torch.nn.functional.normalize(points, dim=1)
        close = points @ points.t() >= 2 * similarity - 1
        remaining, modes = torch.ones(len(points), dtype=torch.bool), []
        while remaining.any():
            support = (close & remaining[None, :]).sum(dim=1).masked_fill(~remaining, -1)
            members = close[int(support.argmax())] & remaining
            modes.append(torch.nn.functional.normalize(points[members].mean(dim=0), dim=0))
            remaining &= ~members
        return torch.stack(modes)

    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        centres = torch.randn(5, 4, generator=gen)
        points = centres[torch.randint(0, 5, (150,), generator=gen)] + 0.3 * torch.randn(150, 4, generator=gen)
        similarity = 0.5 + 0.5 * float(torch.rand(1, generator=gen))
        torch.testing.assert_close(merge_modes(points, similarity), by_definition(points, similarity))

@pytest.mark.slow
def test_short_cpu_training_improves_ap50(tmp_path):
    from embedding_scenes import coloured_squares

    from labkit.evaluation import evaluate
    from labkit.train import train

    train_set, test_set = coloured_squares(16), coloured_squares(8, seed=1)
    method = methods.get("recurrent", embedding_dim=4, width=8, depth=2)
    torch.manual_seed(0)
    model = method.build_model(in_channels=3, num_classes=2)
    before = evaluate(method, model, test_set, progress=False)
    train(method, model, train_set, out_dir=tmp_path, epochs=25, batch_size=4, lr=1e-2, progress=False)
    after = evaluate(method, model, test_set, progress=False)
    assert after["ap50"] > before["ap50"] + 0.5
    assert after["ar50@10"] > 0.8


def test_look_alike_objects_in_different_places_are_split_unless_disabled():
    method = methods.get("recurrent")
    batch = scene()
    outputs = simplex_outputs(batch)
    same = batch["instances"][0] == 9
    outputs["embedding"][0][:, same] = outputs["embedding"][0][:, batch["instances"][0] == 5][:, :1]
    outputs["semantic"][0][:, same] = outputs["semantic"][0][:, batch["instances"][0] == 5][:, :1]
    assert len(method.decode(outputs)[0]["ids"]) == 2
    (merged,) = method.decode(outputs, split_components=False)
    assert len(merged["ids"]) == 1 and torch.equal(merged["instances"] > 0, batch["instances"][0] > 0)


def test_split_keeps_crumbs_with_the_main_piece():
    from labkit.methods.embedding import split_components

    labels = torch.zeros(12, 12, dtype=torch.int64)
    labels[1:5, 1:5] = 1  # 16 px
    labels[8:11, 8:11] = 1  # 9 px: >= 0.25 * 16, a piece of its own
    labels[0, 11] = 1  # 1 px crumb: stays with the main piece
    labels[6:8, 0:3] = 2
    out, quality = split_components(labels, torch.tensor([0.9, 0.4]))
    assert quality.tolist() == pytest.approx([0.9, 0.9, 0.4])
    assert out[1, 1] == out[0, 11] != out[9, 9]
    assert len(out.unique()) == 4


def test_foreground_is_background_probability_below_one_half():
    from labkit.methods.embedding import foreground

    logits = torch.zeros(11, 2, 2)
    logits[0] = 1.0  # p(background) = e / (e + 10) = 0.21 < 0.5, yet background is the argmax
    probs, mask = foreground(logits)
    assert probs.argmax(0).eq(0).all() and mask.all()
    _, mask = foreground(logits, things=[3])
    assert not mask.any()  # the best foreground class (1, ties go first) is not a thing


def test_smaller_bandwidths_pool_finer_proposals_after_the_coarse_ones():
    method = methods.get("recurrent")
    batch = scene()
    outputs = simplex_outputs(batch)
    emb, inst = outputs["embedding"][0], batch["instances"][0]
    # instances 5 and 9 20 degrees apart (chord 0.35): within three kernel stds (0.5) at delta = 6, one group;
    # beyond them (0.25) at the concentration x 4 (delta = 12), two
    angle = math.radians(20)
    emb[:, inst == 5] = torch.tensor([0.0, 1.0, 0.0])[:, None]
    emb[:, inst == 9] = torch.tensor([0.0, math.cos(angle), math.sin(angle)])[:, None]
    (coarse,) = method.decode(outputs, split_components=False, proposal_scales=())
    assert len(coarse["ids"]) == 1 and "masks" not in coarse
    (pooled,) = method.decode(outputs, split_components=False, proposal_scales=(4, 8))  # delta 12 and 17
    assert torch.equal(pooled["instances"], coarse["instances"])  # the map is the coarsest grouping
    masks = pooled["masks"]
    assert masks.shape == (3, 10, 10)  # the merged pair, then each instance once (delta 17 repeats delta 12)
    assert torch.equal(masks[0], inst > 0)
    assert {frozenset(inst[m].unique().tolist()) for m in masks[1:]} == {frozenset({5}), frozenset({9})}
    assert pooled["scores"][0] > 2 / 3 >= pooled["scores"][1:].max() > 1 / 3  # three levels: coarse first
    from labkit.metrics import average_recall

    truth = {"instances": inst}
    assert average_recall([coarse], [truth])["ar@10"] < 0.5
    assert average_recall([pooled], [truth])["ar@10"] == 1.0


def _pool_mask_by_mask(levels, redundant_iou=0.9):
    """The definition: every proposal against every kept mask of the earlier levels, one mask at a time."""
    kept = []
    for level, pred in enumerate(levels):
        for i in pred["ids"].tolist():
            mask = pred["instances"] == i
            if any(level > lv and (mask & m).sum() / (mask | m).sum() >= redundant_iou for lv, m in kept):
                continue
            kept.append((level, mask))
    return torch.stack([m for _, m in kept])


def test_pool_proposals_drops_the_repeats_the_mask_by_mask_definition_drops():
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, 4, (3, 4), generator=g).repeat_interleave(8, 0).repeat_interleave(8, 1)  # 24 x 32
    fine = coarse * 3 + torch.randint(0, 3, coarse.shape, generator=g)  # every coarse label cut into pieces
    fine[(coarse == 1) & (torch.rand(coarse.shape, generator=g) < 0.95)] = 40  # ~ coarse label 1 again
    same = coarse.clone()  # level 2 repeats level 0 exactly, except one pixel
    same[0, 0] = 7
    levels = []
    for labels in (coarse, fine, same):
        ids = labels.unique()
        ids = ids[ids > 0]
        remap = torch.zeros(int(labels.max()) + 1, dtype=torch.int64)
        remap[ids] = torch.arange(1, len(ids) + 1)
        levels.append({"instances": remap[labels], "ids": torch.arange(1, len(ids) + 1),
                       "classes": torch.ones(len(ids), dtype=torch.int64), "scores": torch.rand(len(ids), generator=g)})
    pooled = pool_proposals(levels)
    assert torch.equal(pooled["masks"], _pool_mask_by_mask(levels))
    assert len(pooled["masks"]) < sum(len(lv["ids"]) for lv in levels)  # something was dropped
    assert contingency(np.array([0, 1, 1, 2]), np.array([1, 1, 0, 1]), 2, 1).tolist() == [[0, 1], [1, 1], [0, 1]]


def test_split_classes_cuts_apart_pieces_of_different_classes_only():
    from labkit.methods.embedding import split_classes

    labels = torch.zeros(10, 12, dtype=torch.int64)
    classes = torch.ones(10, 12, dtype=torch.int64)
    labels[1:4, 1:4] = 1  # cluster 1: a class-2 square and, apart from it, a class-3 square ...
    labels[1:4, 8:11] = 1
    classes[1:4, 1:4], classes[1:4, 8:11] = 2, 3
    classes[1, 1] = 3  # ... with a noisy pixel that stays with its square
    labels[6:9, 1:4] = 2  # cluster 2: two class-1 pieces (a stick cut by a crossing one) stay together
    labels[6:9, 6:9] = 2
    labels[9, 11] = 3  # cluster 3: one pixel
    out, quality = split_classes(labels, classes, torch.tensor([0.8, 0.6, 0.5]))
    assert quality.tolist() == pytest.approx([0.8, 0.8, 0.6, 0.5])
    assert len(out[1:4, 1:4].unique()) == len(out[1:4, 8:11].unique()) == 1 and out[1, 1] != out[1, 8]
    assert out[6, 1] == out[6, 6] and out[9, 11] not in (out[6, 1], out[1, 1], out[1, 8])
    assert out[0, 0] == 0 and sorted(out.unique().tolist()) == [0, 1, 2, 3, 4]


def _regroup_cluster_by_cluster(labels, quality, min_fraction, key):
    """The definition: every cluster labelled on its own, its crumbs to its largest piece, its groups numbered."""
    from scipy import ndimage

    arr = labels.numpy()
    out = np.zeros_like(arr)
    qualities = []
    for k in np.unique(arr[arr > 0]).tolist():
        components, n = ndimage.label(arr == k, structure=np.ones((3, 3)))
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        piece = np.arange(n + 1)
        piece[1:][sizes < min_fraction * sizes.max()] = 1 + int(sizes.argmax())
        inside = components > 0
        values, new = np.unique(key(piece[components[inside]], inside), return_inverse=True)
        out[inside] = len(qualities) + 1 + new.reshape(-1)
        qualities.extend([float(quality[k - 1])] * len(values))
    return torch.from_numpy(out), torch.tensor(qualities)


@pytest.mark.parametrize("min_fraction", [0.0, 0.25, 0.6])
def test_split_components_and_classes_equal_the_cluster_by_cluster_definition(min_fraction):
    from labkit.methods.embedding import split_classes, split_components

    g = torch.Generator().manual_seed(int(min_fraction * 10))
    for _ in range(3):
        labels = torch.randint(0, 6, (6, 8), generator=g).repeat_interleave(3, 0).repeat_interleave(3, 1)
        labels[torch.rand(labels.shape, generator=g) < 0.15] = 0  # ragged pieces and crumbs
        classes = torch.randint(1, 4, labels.shape, generator=g)
        quality = torch.rand(5, generator=g)
        out, q = split_components(labels, quality, min_fraction)
        ref, ref_q = _regroup_cluster_by_cluster(labels, quality, min_fraction, lambda piece, inside: piece)
        assert torch.equal(out, ref) and torch.allclose(q, ref_q)
        cls = classes.numpy()

        def majority(piece, inside):
            votes = np.zeros((piece.max() + 1, int(cls.max()) + 1), dtype=np.int64)
            np.add.at(votes, (piece, cls[inside]), 1)
            return votes.argmax(axis=1)[piece]

        out, q = split_classes(labels, classes, quality, min_fraction)
        ref, ref_q = _regroup_cluster_by_cluster(labels, quality, min_fraction, majority)
        assert torch.equal(out, ref) and torch.allclose(q, ref_q)
    assert split_components(torch.zeros(3, 3, dtype=torch.int64), torch.zeros(0))[1].numel() == 0


def test_decode_grid_sweeps_delta_around_the_tied_value_and_decode_accepts_it():
    method = methods.get("recurrent")
    grid = method.decode_grid()
    assert set(grid) == {"delta", "min_area", "min_radius"} and grid["min_radius"] == [0.0, 4.0]
    assert grid["delta"] == pytest.approx([6 * 0.5**0.5, 6.0, 6 * 2**0.5, 12.0], rel=1e-4)  # concentration x 0.5..4
    assert grid["min_area"] == [8, 32]
    assert methods.get("recurrent", min_area=5).decode_grid()["min_area"] == [5, 20]
    outputs = simplex_outputs(scene(), noise=0.05)
    for delta in grid["delta"]:  # the three groups 120 degrees apart stay separate at every candidate
        (pred,) = method.decode(outputs, delta=delta, proposal_scales=())
        assert len(pred["ids"]) == 2
    (pred,) = method.decode(outputs, min_area=21, proposal_scales=())  # instance 5 has 20 pixels, 9 has 21
    assert len(pred["ids"]) == 1 and int((pred["instances"] > 0).sum()) == 21


def test_tiled_decoding_skips_the_proposal_groupings_and_keeps_the_instance_map():
    from labkit.evaluation import decode_windows, stitch_tiles

    method = methods.get("recurrent")
    outputs = simplex_outputs(scene(), noise=0.05)
    outputs = {k: torch.cat([v, v.flip(-1)]) for k, v in outputs.items()}  # two 10 x 10 tiles, 4 columns shared
    windows = [(0, 0, 10, 10), (0, 6, 10, 10)]
    assert method.map_only({"delta": 6.0}) == {"delta": 6.0, "proposal_scales": ()}
    pooled = method.decode(outputs)
    assert all("masks" in p for p in pooled)  # on its own, decode pools proposals from three groupings
    calls = []
    decode = method.decode
    method.decode = lambda out, **params: calls.append(params) or decode(out, **params)
    tiled = decode_windows(method, outputs, windows)
    assert calls == [{"proposal_scales": ()}]
    expected = stitch_tiles(pooled, windows)
    assert torch.equal(tiled["instances"], expected["instances"])
    # the same ranking: pooling rescaled a first-grouping score s to (s + 2) / 3
    assert torch.allclose((tiled["scores"] + 2) / 3, expected["scores"])
