"""The dense CRF (Krähenbühl & Koltun 2011) and IRNet's CRF-refined relation mining."""
from __future__ import annotations

import math

import pytest
import torch

from labkit.clustering.dense_crf import crf_inference_label, dense_crf, unary_from_labels
from labkit.errors import LabkitError
from labkit.methods.irnet_cam import mine_relations, mine_relations_crf

SETTINGS = dict(gaussian_sxy=3.0, gaussian_weight=3.0, bilateral_sxy=50.0, bilateral_srgb=5.0, bilateral_weight=10.0)


def reference_crf(image, unary, iterations, gaussian_sxy, gaussian_weight, bilateral_sxy, bilateral_srgb,
                  bilateral_weight):
    """Mean field written pixel pair by pixel pair, float64."""
    labels, height, width = unary.shape
    pix = [(y, x) for y in range(height) for x in range(width)]
    col = image.double().flatten(1).T * 255
    k = torch.zeros(len(pix), len(pix), dtype=torch.float64)
    for i, (yi, xi) in enumerate(pix):
        for j, (yj, xj) in enumerate(pix):
            if i != j:
                d = (yi - yj) ** 2 + (xi - xj) ** 2
                k[i, j] = (gaussian_weight * math.exp(-d / (2 * gaussian_sxy**2))
                           + bilateral_weight * math.exp(-d / (2 * bilateral_sxy**2)
                                                         - float(((col[i] - col[j]) ** 2).sum()) / (2 * bilateral_srgb**2)))
    u = unary.double().flatten(1)
    q = torch.softmax(-u, 0)
    for _ in range(iterations):
        q = torch.softmax(-u + q @ k, 0)
    return q.view(labels, height, width)


def test_unary_from_labels_values():
    unary = unary_from_labels(torch.tensor([[0, 2]]), 3, gt_prob=0.7)
    assert unary.shape == (3, 1, 2)
    assert torch.allclose(unary[:, 0, 0], torch.tensor([-math.log(0.7), -math.log(0.15), -math.log(0.15)]))
    assert torch.allclose(unary[:, 0, 1], torch.tensor([-math.log(0.15), -math.log(0.15), -math.log(0.7)]))


def test_one_mean_field_step_by_hand():
    # two pixels, same colour, one pixel apart: k = 3 exp(-1/18) + 10 exp(-1/5000)
    image = torch.zeros(3, 1, 2)
    unary = unary_from_labels(torch.tensor([[0, 1]]), 2, gt_prob=0.7)
    k = 3 * math.exp(-1 / 18) + 10 * math.exp(-1 / 5000)
    q = dense_crf(image, unary, iterations=1, **SETTINGS)
    # pixel 0: -U = log(0.7), log(0.3); message from pixel 1 (Q = 0.3, 0.7) times k
    logit = torch.tensor([math.log(0.7) + 0.3 * k, math.log(0.3) + 0.7 * k])
    assert torch.allclose(q[:, 0, 0], torch.softmax(logit, 0), atol=1e-6)
    assert torch.allclose(dense_crf(image, unary, iterations=0), torch.softmax(-unary, 0))


def test_dense_crf_equals_pairwise_reference():
    torch.manual_seed(0)
    image = torch.rand(3, 4, 5)
    unary = torch.rand(3, 4, 5) * 2
    settings = dict(SETTINGS, bilateral_srgb=40.0, bilateral_weight=2.0, gaussian_weight=1.0)
    got = dense_crf(image, unary, iterations=5, **settings)
    want = reference_crf(image, unary, 5, **settings)
    assert torch.allclose(got.double(), want, atol=1e-5)
    batched = dense_crf(image, torch.stack([unary, unary.flip(0)]), iterations=5, **settings)
    assert torch.allclose(batched[0], got) and torch.allclose(batched[1], dense_crf(image, unary.flip(0), iterations=5, **settings))


def test_label_permutation_permutes_the_marginals():
    torch.manual_seed(1)
    image, unary = torch.rand(3, 6, 6), torch.rand(4, 6, 6)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(dense_crf(image, unary[perm]), dense_crf(image, unary)[perm], atol=1e-6)


def test_crf_snaps_labels_to_colour_edges():
    # left half red, right half blue; the labelling says "1" on a blob that spills 3 columns into the red side
    image = torch.zeros(3, 16, 16)
    image[0, :, :8] = 1.0
    image[2, :, 8:] = 1.0
    labels = torch.zeros(16, 16, dtype=torch.long)
    labels[:, 5:] = 1
    out = crf_inference_label(image, labels, 2)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 1).all()


def test_reduced_resolution_path():
    torch.manual_seed(2)
    image = torch.zeros(3, 40, 40)
    image[1, :, 20:] = 1.0
    labels = torch.zeros(40, 40, dtype=torch.long)
    labels[:, 16:] = 1
    q = dense_crf(image, unary_from_labels(labels, 2), max_pixels=400)  # solved at 20 x 20
    assert q.shape == (2, 40, 40) and torch.allclose(q.sum(0), torch.ones(40, 40))
    out = q.argmax(0)
    assert (out[:, :18] == 0).all() and (out[:, 22:] == 1).all()


def test_dense_crf_bad_input():
    image = torch.rand(3, 4, 4)
    with pytest.raises(LabkitError, match="NaN"):
        dense_crf(image.masked_fill(image > 0.5, float("nan")), torch.rand(2, 4, 4))
    with pytest.raises(LabkitError, match="unary"):
        dense_crf(image, torch.rand(2, 5, 4))
    with pytest.raises(LabkitError, match=r"\[C,H,W\]"):
        dense_crf(image[0], torch.rand(2, 4, 4))
    with pytest.raises(LabkitError, match="integer"):
        unary_from_labels(torch.zeros(4, 4), 2)
    with pytest.raises(LabkitError, match="0..1"):
        unary_from_labels(torch.full((4, 4), 2), 2)
    with pytest.raises(LabkitError, match="gt_prob"):
        unary_from_labels(torch.zeros(4, 4, dtype=torch.long), 2, gt_prob=1.0)


# -- IRNet's relation mining with the CRF (authors' cam_to_ir_label) ----------------------------
def _square_scene():
    """A red 8 x 8 square on grey, and a CAM of its class that is a blob twice its size."""
    image = torch.full((3, 32, 32), 0.5)
    image[:, 12:20, 12:20] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = torch.exp(-((ys - 15.5) ** 2 + (xs - 15.5) ** 2) / (2 * 5.0**2))
    cams = torch.zeros(3, 32, 32)
    cams[1] = blob / blob.max()
    return image, cams


def test_crf_relations_follow_the_object_not_the_blob():
    image, cams = _square_scene()
    plain = mine_relations(cams[None])[0]
    refined = mine_relations_crf(image, cams)
    square = torch.zeros(32, 32, dtype=torch.bool)
    square[12:20, 12:20] = True
    assert (plain == 2).sum() > 2 * square.sum()  # without the CRF the blob is far larger than the square
    assert ((refined == 2) == square).all()  # with it, exactly the square is class 2
    assert (refined[0] == 0).all() and set(refined.unique().tolist()) <= {0, 2, 255}
    # only the classes present take part: a zero CAM of another class changes nothing
    assert (mine_relations_crf(image, cams[[1, 0, 2]]) == torch.where(refined == 2, 1, refined)).all()


def test_crf_relations_edge_cases():
    image, cams = _square_scene()
    assert (mine_relations_crf(image, torch.zeros_like(cams)) == 0).all()  # no class present: all background
    with pytest.raises(LabkitError, match="one size"):
        mine_relations_crf(image[:, :16], cams)
    with pytest.raises(LabkitError):
        mine_relations_crf(image, cams, fg_threshold=0.05, bg_threshold=0.3)
