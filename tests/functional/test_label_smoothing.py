import math

import pytest
import torch
import torch.nn.functional as F

from loom.functional import smooth_labels, soft_cross_entropy

SMOOTHINGS = [0.0, 0.1, 0.5, 1.0]


def reference(num_classes: int, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """(1 - s) * onehot + s / C, class dimension second, ignored (-100) rows all zero."""
    kept = labels != -100
    onehot = F.one_hot(labels.clamp(min=0), num_classes).double()
    smoothed = (1 - smoothing) * onehot + smoothing / num_classes
    smoothed = smoothed * kept.unsqueeze(-1)
    return smoothed.movedim(-1, 1)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize(
    ("logit_shape", "num_classes"), [((16, 10), 10), ((4, 7, 3, 5), 7), ((8, 1000), 1000)]
)
def test_index_targets_match_the_formula(logit_shape, num_classes, smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(logit_shape, generator=generator)
    labels = torch.randint(0, num_classes, (logit_shape[0], *logit_shape[2:]), generator=generator)
    labels.view(-1)[::5] = -100
    result = smooth_labels(logits, labels, smoothing)
    assert result.shape == logits.shape
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), reference(num_classes, labels, smoothing))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_dense_targets_get_the_same_convex_combination(smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 2, generator=generator)
    soft = torch.rand(6, 5, 2, generator=generator).softmax(dim=1)
    soft[2] = 0  # an ignored sample stays ignored
    expected = (1 - smoothing) * soft + smoothing / 5
    expected[2] = 0
    torch.testing.assert_close(smooth_labels(logits, soft, smoothing), expected)
    labels = torch.randint(0, 5, (6, 2), generator=generator)
    onehot = F.one_hot(labels, 5).movedim(-1, 1).float()
    torch.testing.assert_close(
        smooth_labels(logits, onehot, smoothing), smooth_labels(logits, labels, smoothing)
    )


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
@pytest.mark.parametrize("shape", [(32, 10), (4, 6, 5, 5)])
@pytest.mark.parametrize("with_ignored", [False, True])
def test_loss_and_gradient_equal_fused_cross_entropy(shape, smoothing, with_ignored):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(shape, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    if with_ignored:
        labels.view(-1)[::3] = -100
    ours = soft_cross_entropy(logits, smooth_labels(logits, labels, smoothing))
    (our_gradient,) = torch.autograd.grad(ours, logits)
    fused = F.cross_entropy(logits, labels, label_smoothing=smoothing, ignore_index=-100)
    (fused_gradient,) = torch.autograd.grad(fused, logits)
    torch.testing.assert_close(ours, fused)
    torch.testing.assert_close(our_gradient, fused_gradient)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_any_integer_index_dtype(index_dtype):
    labels = torch.tensor([0, 3, 2])
    torch.testing.assert_close(
        smooth_labels(torch.zeros(3, 4), labels.to(index_dtype), 0.2),
        smooth_labels(torch.zeros(3, 4), labels, 0.2),
    )


def test_dtype_follows_the_logits_but_never_below_float32():
    labels = torch.tensor([1, 0])
    assert smooth_labels(torch.zeros(2, 3, dtype=torch.bfloat16), labels).dtype == torch.float32
    assert smooth_labels(torch.zeros(2, 3, dtype=torch.float16), labels).dtype == torch.float32
    assert smooth_labels(torch.zeros(2, 3, dtype=torch.float64), labels).dtype == torch.float64


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, math.nan, math.inf])
def test_smoothing_outside_the_unit_interval(smoothing):
    with pytest.raises(ValueError, match=rf"smoothing={smoothing!r} must lie in \[0, 1\]"):
        smooth_labels(torch.zeros(2, 3), torch.tensor([0, 1]), smoothing)


@pytest.mark.parametrize("smoothing", ["0.1", None, True])
def test_smoothing_that_is_not_a_number(smoothing):
    with pytest.raises(TypeError, match=r"smoothing=.* must be a number in \[0, 1\]"):
        smooth_labels(torch.zeros(2, 3), torch.tensor([0, 1]), smoothing)


def test_class_index_out_of_range_names_value_position_and_range():
    with pytest.raises(
        ValueError, match=r"class index 3 at position \(1,\); expected 0 <= index < 3"
    ):
        smooth_labels(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(
        ValueError, match=r"class index -1 at position \(0, 1\).*or ignore_index=-100"
    ):
        smooth_labels(torch.zeros(1, 3, 2), torch.tensor([[0, -1]]))


def test_float_indices_and_wrong_shapes_say_what_was_expected():
    with pytest.raises(
        ValueError,
        match=r"class indices must be an integer tensor, got torch.float32; .*target.long\(\)",
    ):
        smooth_labels(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(
        ValueError,
        match=r"target of shape \(2, 4\) fits neither class indices of shape \(2,\) "
        r"nor dense targets of the logits' shape \(2, 3\)",
    ):
        smooth_labels(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"target of shape \(2, 1\) fits neither"):
        smooth_labels(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C, ...\), got \(3,\)"):
        smooth_labels(torch.zeros(3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match=r"takes tensors, got logits Tensor and target list"):
        smooth_labels(torch.zeros(2, 3), [0, 1])


def test_an_ignore_index_inside_the_class_range_is_still_ignored():
    labels = torch.tensor([0, 2, 1])
    result = smooth_labels(torch.zeros(3, 3), labels, 0.3, ignore_index=2)
    torch.testing.assert_close(result[1], torch.zeros(3))
    torch.testing.assert_close(result[0], torch.tensor([0.8, 0.1, 0.1]))


def test_no_index_at_all():
    assert smooth_labels(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).shape == (0, 3)


def test_the_output_lives_on_the_logits_device_whatever_the_default_device():
    torch.set_default_device("meta")  # anything but the logits' device
    try:
        logits, labels = torch.zeros(2, 3, device="cpu"), torch.tensor([0, 2], device="cpu")
        assert smooth_labels(logits, labels).device.type == "cpu"
    finally:
        torch.set_default_device(None)
