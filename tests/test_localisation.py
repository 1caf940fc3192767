"""Localisation metrics on hand-made maps with known answers."""

import numpy as np
import pytest
import torch

from megl.evaluate.localisation import (
    iou_per_sample,
    localisation_metrics,
    minmax,
    pointing_game,
    relevance_mass,
    upsample,
)


def hand_made():
    """Six 4x4 (CAM, GT) pairs: a plain case, a tie (miss and hit), an empty CAM, both empty,
    an empty GT."""
    cams = torch.zeros(6, 4, 4)
    gt = torch.zeros(6, 4, 4)
    # 0: CAM >= 0.5 at the 2x2 top-left block (0.5 itself included), GT (non-binary, 0.2) at
    #    rows 0-1, cols 1-2: |A∩B| = 2, |A∪B| = 6; argmax (0, 0) is outside the GT
    cams[0] = torch.tensor([[0.9, 0.6, 0.1, 0.0], [0.5, 0.7, 0.2, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 0.3]])
    gt[0, 0:2, 1:3] = 0.2
    # 1, 2: two maxima, (0, 3) first in row-major order, then (2, 0)
    cams[1, 0, 3] = cams[1, 2, 0] = 1.0
    cams[2] = cams[1]
    gt[1, 2, 0] = 1.0  # only the second maximum: a miss
    gt[2, 0, 3] = 1.0  # the first maximum: a hit
    # 3: empty (all-zero) CAM, GT contains (0, 0): the all-zero CAM "points" at (0, 0)
    gt[3, 0:2, 0:2] = 1.0
    # 4: both empty; 5: a CAM but an empty GT
    cams[5, 3, 3] = 1.0
    return cams, gt


def test_iou_per_sample():
    cams, gt = hand_made()
    iou = iou_per_sample(cams, gt, 0.5)
    assert iou.shape == (6,)
    torch.testing.assert_close(iou, torch.tensor([1 / 3, 1 / 2, 1 / 2, 0.0, 1.0, 0.0]))


def test_iou_threshold_is_inclusive_and_a_parameter():
    cams, gt = hand_made()
    # at 0.7 the CAM keeps (0,0)=0.9 and (1,1)=0.7: ∩ = {(1,1)}, ∪ = 5
    assert iou_per_sample(cams[:1], gt[:1], 0.7).item() == pytest.approx(1 / 5)
    # just above 0.7, (1,1) drops out: ∩ = 0
    assert iou_per_sample(cams[:1], gt[:1], 0.7001).item() == 0.0


def test_pointing_game_ties_go_to_the_first_pixel_in_row_major_order():
    cams, gt = hand_made()
    hits = pointing_game(cams, gt)
    assert hits.dtype == torch.bool
    assert hits.tolist() == [False, False, True, True, False, False]


def test_relevance_mass():
    cams, gt = hand_made()
    mass = relevance_mass(cams, gt)
    torch.testing.assert_close(mass, torch.tensor([1.6 / 3.3, 0.5, 0.5, 0.0, 0.0, 0.0]))


def test_minmax_is_per_sample():
    maps = torch.tensor([[[2.0, 4.0], [6.0, 3.0]], [[0.0, 0.1], [0.2, 0.05]]])
    out = minmax(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))


@pytest.mark.parametrize("value", [0.0, 0.7, 1.0, 123.4])
def test_upsample_of_a_constant_map_stays_constant(value):
    up = upsample(torch.full((2, 8, 8), value), 64)
    assert up.shape == (2, 64, 64) and up.dtype == torch.float32
    # exactly constant (bilinear rounding noise must not be blown up by the renormalisation);
    # min-max maps a constant to 0
    assert torch.all(up == 0)


def test_upsample_keeps_each_sample_in_unit_range():
    cams = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 5.0, 1e-3]).view(3, 1, 1)
    up = upsample(cams, 64)
    assert torch.all(up.flatten(1).min(1).values == 0)
    torch.testing.assert_close(up.flatten(1).max(1).values, torch.ones(3))


def test_upsample_is_bilinear_then_renormalised():
    # 2x2 -> 4x4, align_corners=False: each axis weights 1, 0.75, 0.25, 0 for the first cell
    cams = torch.tensor([[[3.0, 1.0], [1.0, 1.0]]])  # min-max gives [[1, 0], [0, 0]]
    row = torch.tensor([1.0, 0.75, 0.25, 0.0])
    torch.testing.assert_close(upsample(cams, 4)[0], torch.outer(row, row))
    # same size: interpolation is the identity, only the renormalisation acts
    torch.testing.assert_close(upsample(torch.tensor([[[2.0, 4.0], [6.0, 3.0]]]), 2)[0],
                               torch.tensor([[0.0, 0.5], [1.0, 0.25]]))


def test_localisation_metrics_from_coarse_cams():
    cams = torch.zeros(2, 2, 2)
    cams[0, 0, 0] = 1.0  # upsampled: outer([1, .75, .25, 0]) -> >= 0.5 on the top-left 2x2 block
    cams[1] = 0.4  # constant: no localisation
    gt = torch.zeros(2, 4, 4)
    gt[0, :2, :2] = 1.0
    gt[1, 2:, 2:] = 1.0
    out = localisation_metrics(cams, gt, 4, threshold=0.5)
    assert set(out) == {"miou", "pointing_game", "relevance_mass", "localisation_samples"}
    assert out["localisation_samples"] == 2
    assert out["miou"] == pytest.approx(0.5)
    assert out["pointing_game"] == pytest.approx(0.5)
    assert out["relevance_mass"] == pytest.approx((1 + 0.75 + 0.75 + 0.5625) / 4 / 2)
    assert all(isinstance(out[k], float) for k in ("miou", "pointing_game", "relevance_mass"))
    # numpy inputs give the same answer
    assert localisation_metrics(cams.numpy(), gt.numpy().astype(np.float64), 4) == out


def test_localisation_metrics_empty_batch():
    out = localisation_metrics(torch.zeros(0, 8, 8), torch.zeros(0, 64, 64), 64)
    assert out == {"miou": None, "pointing_game": None, "relevance_mass": None, "localisation_samples": 0}


def test_gt_must_be_at_image_size():
    with pytest.raises(ValueError, match="image size"):
        localisation_metrics(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), 64)


def test_deterministic():
    g = torch.Generator().manual_seed(0)
    cams, gt = torch.rand(4, 8, 8, generator=g), (torch.rand(4, 64, 64, generator=g) > 0.7).float()
    a, b = upsample(cams, 64), upsample(cams, 64)
    assert torch.equal(a, b)
    assert torch.equal(iou_per_sample(a, gt, 0.5), iou_per_sample(b, gt, 0.5))
    assert torch.equal(relevance_mass(a, gt), relevance_mass(b, gt))
    assert localisation_metrics(cams, gt, 64) == localisation_metrics(cams, gt, 64)
