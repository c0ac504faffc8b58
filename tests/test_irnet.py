"""IRNet pieces: CAM normalisation, pair offsets, Eq. 7 affinity, Eq. 5/6/8 losses, refinement, random walk."""
from __future__ import annotations

import math

import pytest
import torch

from labkit.clustering.displacement import detect_centroids, instance_map, nearest_centroid, refine_displacement
from labkit.clustering.random_walk import (
    affinity_graph, dense_random_walk, propagate, random_walk, transition_matrix,
)
from labkit.errors import LabkitError
from labkit.losses.irnet import (
    IRNetLoss, boundary_loss, displacement_losses, irnet_loss, line_offsets, pair_affinity, pair_labels,
    pair_offsets, valid_pairs,
)
from labkit.methods.irnet_cam import cam_from_features, mine_relations, normalize_cams
from labkit.methods.irnet_synthesis import synthesize, walk_stride


# -- Eq. 1 -----------------------------------------------------------------
def test_cam_normalisation_on_hand_built_features():
    features = torch.tensor([[[[1.0, 2.0], [0.0, 4.0]], [[3.0, -1.0], [1.0, 1.0]]]])  # [1, 2, 2, 2]
    weights = torch.tensor([[1.0, 0.0], [1.0, -1.0]])  # class A reads channel 0, class B channel 0 - channel 1
    cams = cam_from_features(features, weights, labels=torch.tensor([[1.0, 1.0]]))
    # class A: [[1,2],[0,4]] / 4 ; class B: [[-2,3],[-1,3]] -> ReLU -> [[0,3],[0,3]] / 3
    assert torch.allclose(cams[0, 0], torch.tensor([[0.25, 0.5], [0.0, 1.0]]))
    assert torch.allclose(cams[0, 1], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    absent = cam_from_features(features, weights, labels=torch.tensor([[1.0, 0.0]]))
    assert absent[0, 1].abs().sum() == 0 and torch.allclose(absent[0, 0], cams[0, 0])


def test_cam_normalisation_all_negative_map_stays_zero_and_bad_input():
    cams = normalize_cams(-torch.ones(1, 1, 3, 3))
    assert cams.abs().sum() == 0
    with pytest.raises(LabkitError, match="NaN"):
        normalize_cams(torch.full((1, 1, 2, 2), float("nan")))
    with pytest.raises(LabkitError, match=r"\[B,K,H,W\]"):
        normalize_cams(torch.ones(2, 2))


# -- Eq. 2 -----------------------------------------------------------------
@pytest.mark.parametrize("radius, count", [(5, 34), (10, 152)])
def test_pair_offsets_count_and_each_unordered_pair_once(radius, count):
    offsets = pair_offsets(radius)
    assert len(offsets) == count
    pairs = {tuple(o) for o in offsets.tolist()}
    assert len(pairs) == count and (0, 0) not in pairs
    assert not pairs & {(-dy, -dx) for dy, dx in pairs}  # never both directions
    disc = {(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if 0 < dy * dy + dx * dx < radius**2}
    assert pairs | {(-dy, -dx) for dy, dx in pairs} == disc


def test_pair_offsets_bad_radius():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(LabkitError, match="radius"):
            pair_offsets(bad)


# -- Eq. 7 -----------------------------------------------------------------
def test_affinity_is_one_minus_max_boundary_on_the_line():
    boundary = torch.zeros(1, 4, 5)
    boundary[0, 0, 2] = 0.8
    boundary[0, 2, 1] = 0.3
    offsets = torch.tensor([[0, 1], [0, 3], [2, 0], [2, 2], [1, -1]])
    a = pair_affinity(boundary, offsets)
    assert a.shape == (1, 5, 4, 5)
    assert a[0, 0, 0, 0] == 1.0  # (0,0)-(0,1): no boundary
    assert math.isclose(a[0, 0, 0, 1], 0.2, abs_tol=1e-6)  # (0,1)-(0,2): end point on the boundary
    assert math.isclose(a[0, 1, 0, 0], 0.2, abs_tol=1e-6)  # (0,0)-(0,3) crosses (0,2)
    assert math.isclose(a[0, 2, 0, 1], 0.7, abs_tol=1e-6)  # (0,1)-(2,1) ends on 0.3
    assert math.isclose(a[0, 3, 0, 0], 1.0, abs_tol=1e-6)  # (0,0)-(1,1)-(2,2) misses both
    assert math.isclose(a[0, 4, 1, 2], 0.7, abs_tol=1e-6)  # (1,2)-(2,1)
    assert line_offsets(0, 3) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    valid = valid_pairs(4, 5, offsets)
    assert not valid[1, 0, 2] and valid[1, 0, 1] and not valid[4, 0, 0]


# -- Eq. 3-6, 8, 9 -------------------------------------------------------------
def _tiny():
    """A 1x3 image, radius 2 (only the horizontal offset (0,1) is inside): pairs (0,1) fg+, (1,2) negative."""
    labels = torch.tensor([[[1, 1, 0]]])
    disp = torch.tensor([[[[0.5, -1.0, 2.0]], [[3.0, 1.0, 0.0]]]])  # dy, dx per pixel
    boundary = torch.tensor([[[0.1, 0.4, 0.2]]])
    return labels, disp, boundary


def test_losses_on_a_hand_computed_case():
    labels, disp, boundary = _tiny()
    offsets = pair_offsets(2)
    pos_fg, pos_bg, neg = pair_labels(labels, offsets)
    assert pos_fg.sum() == 1 and pos_bg.sum() == 0 and neg.sum() == 1
    fg, bg = displacement_losses(disp, pos_fg, pos_bg, offsets)
    # pair (0,1): delta = D(0) - D(1) = (1.5, 2.0); delta_hat = (0, 1) -> |1.5| + |1.0|
    assert math.isclose(fg.item(), 2.5, abs_tol=1e-6)
    assert bg.item() == 0.0
    b = boundary_loss(boundary, pos_fg, pos_bg, neg, offsets)
    # a(0,1) = 1 - max(0.1, 0.4) = 0.6 ; a(1,2) = 1 - max(0.4, 0.2) = 0.6
    expected = -math.log(0.6) / 2 - math.log(1 - 0.6)
    assert math.isclose(b.item(), expected, rel_tol=1e-5)
    terms = irnet_loss(disp, torch.logit(boundary)[:, None], labels, radius=2)
    assert math.isclose(terms["loss"].item(), 2.5 + expected, rel_tol=1e-5)
    assert set(terms) == {"disp_fg", "disp_bg", "boundary", "loss"}


def test_background_pairs_eq6():
    labels = torch.tensor([[[0, 0, 0]]])
    disp = torch.tensor([[[[0.0, 1.0, 1.0]], [[0.0, -2.0, 0.0]]]])
    offsets = pair_offsets(2)
    pos_fg, pos_bg, _ = pair_labels(labels, offsets)
    fg, bg = displacement_losses(disp, pos_fg, pos_bg, offsets)
    # pairs (0,1): |(-1, 2)| = 3 ; (1,2): |(0, -2)| = 2 -> mean 2.5
    assert fg.item() == 0 and math.isclose(bg.item(), 2.5)


def test_gradcheck_displacement_and_boundary_losses():
    torch.manual_seed(0)
    labels = torch.tensor([[[1, 1, 0, 2], [1, 255, 0, 0], [2, 2, 0, 1]]])
    offsets = pair_offsets(2)
    pos_fg, pos_bg, neg = pair_labels(labels, offsets)
    disp = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: displacement_losses(d, pos_fg, pos_bg, offsets), (disp,))
    boundary = torch.rand(1, 3, 4, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_()
    assert torch.autograd.gradcheck(lambda b: boundary_loss(b, pos_fg, pos_bg, neg, offsets), (boundary,))


def test_loss_invariant_to_permuting_class_ids():
    torch.manual_seed(1)
    labels = torch.randint(0, 4, (2, 6, 6))
    labels[0, 0, :3] = 255
    disp, logits = torch.randn(2, 2, 6, 6), torch.randn(2, 1, 6, 6)
    perm = torch.tensor([0, 3, 1, 2])
    permuted = torch.where(labels == 255, labels, perm[labels.clamp(max=3)])
    a, b = irnet_loss(disp, logits, labels, 3), irnet_loss(disp, logits, permuted, 3)
    for key in a:
        assert torch.allclose(a[key], b[key])


def test_edge_cases_no_instance_one_instance_ignore_and_empty_items():
    disp, logits = torch.randn(1, 2, 5, 5), torch.randn(1, 1, 5, 5)
    ignored = torch.full((1, 5, 5), 255)
    terms = irnet_loss(disp, logits, ignored, 3)
    assert all(v.item() == 0 for v in terms.values())  # nothing confident: no pairs at all
    background = torch.zeros(1, 5, 5, dtype=torch.int64)
    t = irnet_loss(disp, logits, background, 3)
    assert t["disp_fg"] == 0 and t["disp_bg"] > 0 and t["boundary"] > 0
    one = torch.ones(1, 5, 5, dtype=torch.int64)
    t = irnet_loss(disp, logits, one, 3)
    assert t["disp_bg"] == 0 and t["disp_fg"] > 0
    # an empty (all-ignored) image in the batch changes nothing
    pair = irnet_loss(torch.cat([disp, torch.randn(1, 2, 5, 5)]), torch.cat([logits, torch.randn(1, 1, 5, 5)]),
                      torch.cat([one, ignored]), 3)
    assert torch.allclose(pair["loss"], t["loss"])
    # ignore pixels take part in no pair
    partly = one.clone()
    partly[0, 2, 2] = 255
    pos_fg, _, _ = pair_labels(partly, pair_offsets(3))
    assert not pos_fg[0, :, 2, 2].any()


def test_loss_bad_input():
    disp, logits = torch.randn(1, 2, 4, 4), torch.randn(1, 1, 4, 4)
    with pytest.raises(LabkitError, match="integer"):
        irnet_loss(disp, logits, torch.zeros(1, 4, 4), 3)
    with pytest.raises(LabkitError, match="NaN"):
        irnet_loss(torch.full((1, 2, 4, 4), float("nan")), logits, torch.zeros(1, 4, 4, dtype=torch.long), 3)
    with pytest.raises(LabkitError, match="disagree"):
        irnet_loss(disp, logits, torch.zeros(1, 5, 5, dtype=torch.long), 3)
    with pytest.raises(LabkitError, match="outside"):
        irnet_loss(disp, logits, torch.full((1, 4, 4), 300), 3)
    with pytest.raises(LabkitError, match=r"\[B,1,H,W\]"):
        IRNetLoss(3)(disp, torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


# -- relation mining ---------------------------------------------------------------
def test_mine_relations_thresholds():
    cams = torch.tensor([[[[0.5, 0.2, 0.01, 0.0]], [[0.1, 0.04, 0.02, 0.35]]]])  # [1, 2, 1, 4]
    out = mine_relations(cams, 0.30, 0.05)
    assert out.tolist() == [[[1, 255, 0, 2]]]
    with pytest.raises(LabkitError):
        mine_relations(cams, 0.05, 0.30)


# -- Eq. 10 and centroids ---------------------------------------------------------
def _two_centroid_field(shrink: float = 0.5):
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(40.0), indexing="ij")
    cx = torch.where(xs < 20, torch.tensor(9.0), torch.tensor(30.0))
    cy = torch.where(xs < 20, torch.tensor(11.0), torch.tensor(6.0))
    return shrink * torch.stack([cy - ys, cx - xs]), (cy, cx, ys, xs)


def test_refinement_converges_to_the_centroids():
    field, (cy, cx, ys, xs) = _two_centroid_field()
    refined = refine_displacement(field, 100)
    assert (ys + refined[0] - cy).abs().max() <= 0.5 and (xs + refined[1] - cx).abs().max() <= 0.5
    assert (refine_displacement(field, 0) == field).all()
    inst, centroids, _ = instance_map(field, 100, threshold=1.0)
    assert sorted(map(tuple, centroids.round().tolist())) == [(6.0, 30.0), (11.0, 9.0)]
    assert inst.unique().tolist() == [1, 2]
    assert (inst[:, :20] == inst[0, 0]).all() and (inst[:, 20:] == inst[0, 39]).all()
    labels = detect_centroids(field, 1.0)
    assert labels.max() == 2
    with pytest.raises(LabkitError, match=r"\[2,H,W\]"):
        refine_displacement(torch.zeros(3, 4, 4))
    with pytest.raises(LabkitError, match="NaN"):
        refine_displacement(torch.full((2, 4, 4), float("nan")))


def test_nearest_centroid_in_chunks_equals_the_full_distance_matrix():
    torch.manual_seed(0)
    points, centroids = torch.rand(1000, 2) * 50, torch.rand(37, 2) * 50
    full = torch.cdist(points, centroids).argmin(dim=1)
    assert torch.equal(nearest_centroid(points, centroids, max_elements=100), full)  # chunks of 2 points
    assert torch.equal(nearest_centroid(points, centroids, max_elements=10), full)  # fewer than K: one point
    assert nearest_centroid(points[:0], centroids).shape == (0,)


# -- Eq. 12-13 ----------------------------------------------------------------
def test_sparse_walk_equals_dense_power():
    torch.manual_seed(0)
    boundary = torch.rand(9, 7, dtype=torch.float64) ** 3
    transition = transition_matrix(boundary, radius=3, beta=10.0)
    assert transition.layout == torch.sparse_csr
    dense = transition.to_dense()
    assert torch.allclose(dense.sum(dim=1), torch.ones(63, dtype=torch.float64))
    scores = torch.rand(3, 9, 7, dtype=torch.float64)
    sparse = random_walk(transition, scores, 256)
    reference = dense_random_walk(transition, scores, 8)
    assert (sparse - reference).abs().max() < 1e-5
    assert (random_walk(transition, scores, 3) - torch.linalg.matrix_power(dense, 3).matmul(
        scores.reshape(3, -1).T).T.reshape(3, 9, 7)).abs().max() < 1e-10


def test_affinity_graph_is_sparse_and_symmetric():
    boundary = torch.rand(6, 6)
    rows, cols, values = affinity_graph(boundary, radius=5)
    n = 36
    assert len(rows) <= n * (2 * 34 + 1)
    a = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n)).to_dense()
    assert torch.allclose(a, a.T) and torch.all(a.diagonal() == 1)
    with pytest.raises(LabkitError, match=r"\[H,W\]"):
        affinity_graph(torch.rand(1, 6, 6))


def test_propagation_stops_at_a_boundary():
    boundary = torch.zeros(8, 8)
    boundary[:, 4] = 1.0  # a wall
    scores = torch.zeros(1, 8, 8)
    scores[0, 3, 1] = 1.0
    out = propagate(scores, boundary, radius=3, beta=10.0, steps=64)[0]
    assert out[:, :4].sum() > 100 * out[:, 5:].sum()


# -- Sec. 5 ---------------------------------------------------------------------
def test_synthesize_splits_touching_instances_of_one_class():
    field, (cy, cx, ys, xs) = _two_centroid_field()
    cams = torch.zeros(2, 24, 40)
    cams[0, 2:20, 4:36] = 1.0  # one class-1 blob covering both instances
    boundary = torch.zeros(24, 40)
    cam_only = synthesize(cams, mode="cam", min_area_fraction=0.0)
    assert cam_only["classes"].tolist() == [1]
    full = synthesize(cams, boundary, field, mode="irnet", radius=3, steps=32, refine_steps=50,
                      centroid_threshold=1.0, min_area_fraction=0.0)
    assert full["classes"].tolist() == [1, 1]
    left, right = full["instances"][10, 10], full["instances"][10, 30]
    assert left != right and left > 0 and right > 0
    assert ((full["semantic"] > 0) == (full["instances"] > 0)).all()
    empty = synthesize(torch.zeros(2, 24, 40), boundary, field, mode="irnet")
    assert len(empty["ids"]) == 0 and empty["instances"].max() == 0
    with pytest.raises(LabkitError, match="mode"):
        synthesize(cams, mode="nope")
    with pytest.raises(LabkitError, match="boundary"):
        synthesize(cams, mode="cam_boundary")


def test_cam_pooling():
    from labkit.methods.irnet import pool_cam

    cam = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
    assert pool_cam(cam, "gap").item() == 2.0
    assert pool_cam(cam, "max").item() == 5.0
    expected = math.log((1 + math.exp(2) + math.exp(4) + math.exp(10)) / 4) / 2
    assert math.isclose(pool_cam(cam, "lse", 2.0).item(), expected, rel_tol=1e-6)
    assert pool_cam(cam, "gap") <= pool_cam(cam, "lse", 2.0) <= pool_cam(cam, "max")
    with pytest.raises(LabkitError, match="pooling"):
        pool_cam(cam, "median")


def test_walk_stride_is_chosen_by_image_size_and_checked():
    assert walk_stride(64, 64) == 1 and walk_stride(128, 256) == 1
    assert walk_stride(129, 256) == 2 and walk_stride(256, 256) == 2 and walk_stride(512, 1024) == 4
    cams = torch.zeros(2, 24, 40)
    with pytest.raises(LabkitError, match="stride"):
        synthesize(cams, mode="cam", stride=0)


def test_synthesis_at_stride_2_finds_the_same_instances_as_at_full_resolution(monkeypatch):
    from labkit.methods import irnet_synthesis

    walked = []
    real = irnet_synthesis.propagate
    monkeypatch.setattr(irnet_synthesis, "propagate", lambda s, b, **kw: walked.append((s.shape, kw)) or real(s, b, **kw))
    field, _ = _two_centroid_field()
    cams = torch.zeros(2, 24, 40)
    cams[0, 2:20, 4:36] = 1.0
    boundary = torch.zeros(24, 40)
    boundary[:, 19] = 1.0  # a one-pixel boundary between the two instances: max pooling keeps it
    kwargs = dict(mode="irnet", radius=3, steps=32, refine_steps=50, centroid_threshold=1.0, min_area_fraction=0.0)
    full = synthesize(cams, boundary, field, stride=1, **kwargs)
    coarse = synthesize(cams, boundary, field, stride=2, **kwargs)
    assert [(tuple(shape[1:]), kw["radius"]) for shape, kw in walked] == [((24, 40), 3), ((12, 20), 2)]
    assert coarse["instances"].shape == (24, 40)
    assert coarse["classes"].tolist() == full["classes"].tolist() == [1, 1]
    for k in full["ids"].tolist():
        mask = full["instances"] == k
        best = max((((coarse["instances"] == j) & mask).sum() / ((coarse["instances"] == j) | mask).sum()).item()
                   for j in coarse["ids"].tolist())
        assert best > 0.85, f"instance {k}: best IoU {best:.2f} at stride 2"
