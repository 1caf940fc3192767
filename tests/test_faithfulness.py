"""Faithfulness metrics with toy `predict` functions whose probability is a known function of
the image."""

import pytest
import torch

from megl.evaluate.faithfulness import (
    average_drop_increase,
    deletion_insertion_auc,
    deletion_insertion_curves,
    faithfulness_metrics,
    gaussian_blur,
)


def two_class(p: torch.Tensor) -> torch.Tensor:
    return torch.stack([1 - p, p], dim=1)


def region_predict(x: torch.Tensor) -> torch.Tensor:
    """p(class 1) = mean intensity of the top-left 2x2 region R (all channels)."""
    return two_class(x[:, :, :2, :2].mean(dim=(1, 2, 3)))


def mean_predict(x: torch.Tensor) -> torch.Tensor:
    return two_class(x.mean(dim=(1, 2, 3)))


def region_setup():
    images = torch.zeros(1, 3, 8, 8)
    images[:, :, :2, :2] = 1.0  # R is bright, the rest black
    on_r = torch.zeros(1, 8, 8)
    on_r[:, :2, :2] = 1.0
    return images, on_r, 1 - on_r, torch.tensor([1])


def test_a_map_on_the_evidence_beats_a_map_elsewhere():
    images, good, bad, target = region_setup()
    # steps=16 on 64 pixels: 4 pixels (= |R|) per step
    del_good, ins_good = deletion_insertion_auc(region_predict, images, good, target, steps=16)
    del_bad, ins_bad = deletion_insertion_auc(region_predict, images, bad, target, steps=16)
    assert del_good.item() < del_bad.item() and ins_good.item() > ins_bad.item()
    # deletion, good: 1 then 0 from the first step on; bad: R is deleted in the last step
    assert del_good.item() == pytest.approx(1 / 32)
    assert del_bad.item() == pytest.approx(15 / 16 + 1 / 32)
    # insertion starts from the blurred image, where R is darker than 1
    p0 = region_predict(gaussian_blur(images))[0, 1].item()
    assert 0 < p0 < 1
    assert ins_good.item() == pytest.approx((p0 + 1) / 32 + 15 / 16)
    assert ins_bad.item() == pytest.approx(15 / 16 * p0 + (p0 + 1) / 32)


def test_auc_of_a_constant_probability_is_that_probability_exactly():
    p = torch.tensor(0.3)

    def constant(x):
        return two_class(p.expand(x.shape[0]))

    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    saliency = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    for steps in (20, 7, 64, 100):  # even and uneven increments, more steps than pixels
        deletion, insertion = deletion_insertion_auc(constant, images, saliency, torch.ones(3, dtype=torch.long), steps)
        expected = torch.full((3,), p.item(), dtype=torch.float64)
        assert torch.equal(deletion, expected) and torch.equal(insertion, expected)


def test_trapezoid_on_a_hand_example_with_two_steps():
    images = torch.tensor([[1.0, 0.5], [0.25, 0.0]]).expand(1, 3, 2, 2).contiguous()
    saliency = torch.tensor([[[0.9, 0.1], [0.5, 0.3]]])  # order: pixels 0, 2, 3, 1
    target = torch.tensor([1])
    fractions, deletion, insertion = deletion_insertion_curves(mean_predict, images, saliency, target, steps=2)
    torch.testing.assert_close(fractions, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    # k = 0: the image; k = 2: pixels 0 and 2 black -> (0.5 + 0) / 4; k = 4: all black
    torch.testing.assert_close(deletion, torch.tensor([[0.4375, 0.125, 0.0]], dtype=torch.float64))
    blurred = gaussian_blur(images)
    half = blurred.clone()
    half[:, :, 0, 0], half[:, :, 1, 0] = images[:, :, 0, 0], images[:, :, 1, 0]
    expected_ins = [blurred.mean().item(), half.mean().item(), 0.4375]
    torch.testing.assert_close(insertion, torch.tensor([expected_ins], dtype=torch.float64))

    del_auc, ins_auc = deletion_insertion_auc(mean_predict, images, saliency, target, steps=2)
    # 0.5 * (0.4375 + 0.125) / 2 + 0.5 * (0.125 + 0) / 2
    assert del_auc.item() == pytest.approx(0.171875, abs=1e-7)
    p0, p1, p2 = expected_ins
    assert ins_auc.item() == pytest.approx(0.25 * (p0 + p1) + 0.25 * (p1 + p2), abs=1e-7)


def test_ties_are_broken_by_pixel_index():
    def pixel5(x):  # p = intensity of pixel 5 (row 1, col 1) of channel 0
        return two_class(x[:, 0].flatten(1)[:, 5])

    images = torch.ones(1, 3, 4, 4)
    _, deletion, _ = deletion_insertion_curves(pixel5, images, torch.full((1, 4, 4), 0.5), torch.tensor([1]), steps=16)
    # flat saliency: pixels leave in index order 0, 1, ..., so pixel 5 is gone from k = 6 on
    assert deletion[0].tolist() == [1.0] * 6 + [0.0] * 11


def test_blur_is_a_normalised_gaussian():
    flat = torch.full((2, 3, 16, 16), 0.6)
    torch.testing.assert_close(gaussian_blur(flat), flat)  # replicate padding: no dark border
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(images)
    assert blurred.shape == images.shape and blurred.std() < images.std()
    with pytest.raises(ValueError):
        gaussian_blur(images, kernel_size=10)


def test_chunks_respect_batch_size_and_do_not_change_the_answer():
    seen = []

    def recording(x):
        seen.append(x.shape[0])
        return region_predict(x)

    g = torch.Generator().manual_seed(0)
    images, saliency = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 8, 8, generator=g)
    target = torch.tensor([1, 0, 1])
    small = deletion_insertion_auc(recording, images, saliency, target, steps=5, batch_size=4)
    assert max(seen) <= 4 and sum(seen) == 2 * 3 * 6
    large = deletion_insertion_auc(region_predict, images, saliency, target, steps=5, batch_size=64)
    assert torch.equal(small[0], large[0]) and torch.equal(small[1], large[1])


def test_average_drop_and_increase_in_confidence_by_hand():
    def bump(x):  # p = 4 m (1 - m), m = mean intensity: maximal at m = 0.5
        m = x.mean(dim=(1, 2, 3))
        return two_class(4 * m * (1 - m))

    levels = torch.tensor([0.5, 0.2, 0.8, 0.5])
    images = levels.view(4, 1, 1, 1).expand(4, 3, 4, 4).contiguous()
    saliency = torch.tensor([0.5, 0.5, 0.5, 1.0]).view(4, 1, 1).expand(4, 4, 4).contiguous()
    # Y = 1, 0.64, 0.64, 1; O = 0.75, 0.36, 0.96, 1
    # drops = 0.25, 0.4375, 0 (O > Y), 0 (O == Y, no increase either)
    drop, increase = average_drop_increase(bump, images, saliency, torch.ones(4, dtype=torch.long))
    assert drop == pytest.approx((25 + 43.75) / 4)  # percent
    assert increase == pytest.approx(25.0)


def test_average_drop_with_a_zero_probability_and_bad_saliency():
    images = torch.zeros(1, 3, 4, 4)  # Y = mean = 0
    drop, increase = average_drop_increase(mean_predict, images, torch.ones(1, 4, 4), torch.tensor([1]))
    assert drop == 0.0 and increase == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_drop_increase(mean_predict, images, torch.full((1, 4, 4), 3.0), torch.tensor([1]))


def test_faithfulness_metrics_dict_and_empty_batch():
    images, good, _, target = region_setup()
    out = faithfulness_metrics(region_predict, images, good, target, steps=16, batch_size=8)
    assert set(out) == {"deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence",
                        "faithfulness_samples"}
    assert out["faithfulness_samples"] == 1
    assert out["deletion_auc"] == pytest.approx(1 / 32)
    assert out["average_drop"] == 0.0 and out["increase_in_confidence"] == 0.0  # R kept intact
    empty = faithfulness_metrics(region_predict, torch.zeros(0, 3, 8, 8), torch.zeros(0, 8, 8), torch.zeros(0))
    assert empty == {"deletion_auc": None, "insertion_auc": None, "average_drop": None,
                     "increase_in_confidence": None, "faithfulness_samples": 0}


def test_deterministic():
    g = torch.Generator().manual_seed(0)
    images, saliency = torch.rand(4, 3, 16, 16, generator=g), torch.rand(4, 16, 16, generator=g)
    saliency[:, :4] = 0.5  # ties
    target = torch.tensor([0, 1, 1, 0])
    a = deletion_insertion_auc(region_predict, images, saliency, target, steps=10, batch_size=7)
    b = deletion_insertion_auc(region_predict, images, saliency, target, steps=10, batch_size=7)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert average_drop_increase(region_predict, images, saliency, target) == average_drop_increase(
        region_predict, images, saliency, target
    )
