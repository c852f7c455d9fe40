import math
import random

import pytest
import torch

from loom.functional import box_weight, cutmix, cutmix_box, mix_targets, sample_cutmix_box


def reference_box(height, width, weight, row, column):
    """The authors' rand_bbox (clovaai/CutMix-PyTorch), written out: half of each cut
    side either way from the centre, clipped to the image."""
    cut = math.sqrt(1.0 - weight)
    cut_h, cut_w = int(height * cut), int(width * cut)

    def clip(value, high):
        return min(max(value, 0), high)

    return (
        clip(row - cut_h // 2, height),
        clip(row + cut_h // 2, height),
        clip(column - cut_w // 2, width),
        clip(column + cut_w // 2, width),
    )


@pytest.mark.parametrize(("height", "width"), [(8, 8), (5, 13), (32, 32), (1, 7)])
def test_the_box_is_the_authors_box_for_any_image_size(height, width):
    draw = random.Random(0)
    for _ in range(200):
        weight = draw.random()
        row, column = draw.randrange(height), draw.randrange(width)
        box = cutmix_box(height, width, weight, (row, column))
        assert box == reference_box(height, width, weight, row, column)
        top, bottom, left, right = box
        assert 0 <= top <= bottom <= height
        assert 0 <= left <= right <= width


def test_the_target_weight_is_the_share_of_the_image_left_uncovered():
    # Clipped at a corner, the box covers less than 1 - weight of the image; the
    # targets' weight follows the box, as timm's correct_lam does.
    box = cutmix_box(10, 10, 0.36, center=(0, 0))  # an 8x8 cut, clipped to 4x4
    assert box == (0, 4, 0, 4)
    assert box_weight(box, 10, 10) == pytest.approx(1 - 16 / 100)
    assert box_weight(cutmix_box(10, 10, 1.0, (5, 5)), 10, 10) == 1.0  # nothing cut
    assert box_weight((0, 10, 0, 10), 10, 10) == 0.0


def test_cutmix_pastes_the_box_of_the_paired_image_and_leaves_the_rest():
    images = torch.randn(4, 3, 6, 7)
    permutation = torch.tensor([2, 0, 3, 1])
    box = (1, 4, 2, 6)
    mixed = cutmix(images, permutation, box)
    inside = torch.zeros(6, 7, dtype=torch.bool)
    inside[1:4, 2:6] = True
    for i in range(4):
        torch.testing.assert_close(mixed[i][:, inside], images[permutation[i]][:, inside])
        torch.testing.assert_close(mixed[i][:, ~inside], images[i][:, ~inside])
    assert not torch.equal(mixed, images)  # a new tensor: the batch is not edited


def test_the_mixed_targets_weigh_each_label_by_its_pixels():
    images = torch.stack([torch.full((1, 4, 4), 0.0), torch.full((1, 4, 4), 1.0)])
    permutation = torch.tensor([1, 0])
    box = (0, 2, 0, 4)  # the top half
    mixed = cutmix(images, permutation, box)
    weight = box_weight(box, 4, 4)
    targets = mix_targets(torch.zeros(2, 3), torch.tensor([0, 2]), permutation, weight)
    # Image 0 is half image 1 now: its target is half class 0, half class 2.
    assert mixed[0].mean().item() == pytest.approx(0.5)
    torch.testing.assert_close(targets, torch.tensor([[0.5, 0.0, 0.5], [0.5, 0.0, 0.5]]))


def test_sampled_boxes_follow_the_beta_draw():
    draw, check = random.Random(3), random.Random(3)
    box = sample_cutmix_box(0.5, 16, 9, draw)
    weight = check.betavariate(0.5, 0.5)
    center = (check.randrange(16), check.randrange(9))
    assert box == reference_box(16, 9, weight, *center)
    # Uniform areas (alpha=1): the mean weight of many boxes is near 1/2 less the clipping.
    weights = [box_weight(sample_cutmix_box(1.0, 32, 32, draw), 32, 32) for _ in range(2000)]
    assert 0.5 < sum(weights) / len(weights) < 0.75


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"weight=1\.5 must be in \[0, 1\]"):
        cutmix_box(4, 4, 1.5, (0, 0))
    with pytest.raises(ValueError, match=r"center=\(4, 0\) must lie in the 4x4 image"):
        cutmix_box(4, 4, 0.5, (4, 0))
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\), got inputs \(8, 5\)"):
        cutmix(torch.zeros(8, 5), torch.arange(8), (0, 1, 0, 1))
