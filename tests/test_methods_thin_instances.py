"""Thin instances (a band between two touching objects) join their neighbours: the function and both decoders."""
from __future__ import annotations

import torch

import pytest

from labkit import methods
from labkit.clustering import absorb_thin_instances, instance_radii
from labkit.errors import LabkitError
from labkit.methods.embedding import build_prediction


def band_between_blocks(width: int = 3) -> torch.Tensor:
    """``[12, 20]``: block 1 (cols 1-7), a band 2 ``width`` columns wide, block 3 after it (8 columns)."""
    labels = torch.zeros(12, 20, dtype=torch.int64)
    labels[2:10, 1:8] = 1
    labels[2:10, 8:8 + width] = 2
    labels[2:10, 8 + width:16 + width] = 3
    return labels


def test_a_band_between_two_blocks_is_shared_out_by_distance():
    labels = band_between_blocks(3)
    out = absorb_thin_instances(labels, 3)
    assert set(out.unique().tolist()) == {0, 1, 3}
    assert torch.equal(out[labels != 2], labels[labels != 2])  # nothing else moves
    assert (out[2:10, 8] == 1).all() and (out[2:10, 10] == 3).all()  # each side goes to its nearer block
    assert (out[labels == 2] > 0).all()


def test_radius_is_the_depth_of_the_deepest_pixel_plus_one():
    ids, radii = instance_radii(band_between_blocks(3).numpy())
    assert ids.tolist() == [1, 2, 3] and radii.tolist() == [4.0, 2.0, 4.0]
    # a band 2r - 1 wide has radius r: kept at min_radius r, absorbed above it
    for width, radius in ((1, 1), (3, 2), (5, 3)):
        labels = band_between_blocks(width)
        assert torch.equal(absorb_thin_instances(labels, radius), labels)
        assert 2 not in absorb_thin_instances(labels, radius + 0.5).unique().tolist()
    # the 8 x 7 block (radius 4) survives what removes every band
    assert 1 in absorb_thin_instances(band_between_blocks(5), 4).unique().tolist()


def test_a_thin_piece_with_no_neighbour_within_reach_becomes_background_and_off_means_unchanged():
    labels = torch.zeros(30, 30, dtype=torch.int64)
    labels[2:8, 2:8] = 1
    labels[20, 5:25] = 2  # a one-pixel line 12 rows from the block
    out = absorb_thin_instances(labels, 3)
    assert (out[20] == 0).all() and torch.equal(out[labels == 1], labels[labels == 1])
    assert absorb_thin_instances(labels, 0) is labels
    assert torch.equal(absorb_thin_instances(torch.zeros(5, 5, dtype=torch.int64), 3), torch.zeros(5, 5))
    with pytest.raises(LabkitError, match="min_radius"):
        absorb_thin_instances(labels, -1)


def test_the_image_border_is_not_an_outline():
    # a 3-row strip cut by the top border is measured from its inner outline only: radius 3, not 2
    labels = torch.zeros(12, 12, dtype=torch.int64)
    labels[0:3, 2:10] = 1
    assert torch.equal(absorb_thin_instances(labels, 3), labels)
    inside = torch.zeros(12, 12, dtype=torch.int64)
    inside[4:7, 2:10] = 1
    assert inside.equal(absorb_thin_instances(inside, 2)) and not absorb_thin_instances(inside, 3).any()


def test_build_prediction_drops_the_absorbed_cluster():
    labels = band_between_blocks(3)
    probs = torch.zeros(2, *labels.shape)
    probs[1], probs[0] = (labels > 0).float(), (labels == 0).float()
    assert len(build_prediction(labels, probs)["ids"]) == 3
    pred = build_prediction(labels, probs, min_radius=3)
    assert len(pred["ids"]) == 2 and torch.equal(pred["instances"] > 0, labels > 0)


def _band_outputs(directions: dict[int, list[float]]) -> dict[str, torch.Tensor]:
    """Embeddings constant per region of ``band_between_blocks(3)``; confident foreground there."""
    labels = band_between_blocks(3)
    dim = len(next(iter(directions.values())))
    emb = torch.zeros(1, dim, *labels.shape)
    for k, v in directions.items():
        emb[0, :, labels == k] = torch.tensor(v)[:, None]
    logits = torch.full((1, 2, *labels.shape), -5.0)
    logits[0, 0][labels == 0] = 5.0
    logits[0, 1][labels > 0] = 5.0
    return {"embedding": emb, "semantic": logits}


def test_discriminative_and_recurrent_decode_take_min_radius():
    cases = [
        (methods.get("discriminative", embedding_dim=2), {1: [2.0, 0.0], 2: [0.0, 2.0], 3: [-2.0, 0.0]}, {}),
        (methods.get("recurrent", embedding_dim=3), {1: [1.0, 0, 0], 2: [0, 1.0, 0], 3: [0, 0, 1.0]},
         {"proposal_scales": ()}),
    ]
    for method, directions, extra in cases:
        outputs = _band_outputs(directions)
        (plain,) = method.decode(outputs, **extra)
        (cleaned,) = method.decode(outputs, min_radius=3, **extra)
        assert len(plain["ids"]) == 3, method.key
        assert len(cleaned["ids"]) == 2 and torch.equal(cleaned["instances"] > 0, plain["instances"] > 0), method.key
        with pytest.raises(LabkitError, match="min_radius"):
            method.decode(outputs, min_radius=-1, **extra)
