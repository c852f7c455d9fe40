import math

import pytest
import torch
import torch.nn.functional as F

from loom.functional import cross_entropy, smooth_labels, soft_cross_entropy

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
def test_dense_targets_follow_composers_formula_whatever_their_rows_sum_to(smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, 2, generator=generator)
    dense = torch.rand(6, 5, 2, generator=generator) * 2  # rows summing to anything
    dense[2] = 0  # an ignored sample stays ignored
    dense[4, :, 1] = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])  # a multi-label row, sum 2
    expected = (1 - smoothing) * dense.double() + smoothing / 5  # Composer's, in float64
    expected[2] = 0
    torch.testing.assert_close(smooth_labels(logits, dense, smoothing).double(), expected)
    labels = torch.randint(0, 5, (6, 2), generator=generator)
    onehot = F.one_hot(labels, 5).movedim(-1, 1).float()
    torch.testing.assert_close(
        smooth_labels(logits, onehot, smoothing), smooth_labels(logits, labels, smoothing)
    )


def test_the_issues_example_of_a_row_that_does_not_sum_to_one():
    smoothed = smooth_labels(torch.zeros(1, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]]), 0.2)
    torch.testing.assert_close(smoothed, torch.tensor([[0.85, 0.85, 0.05, 0.05]]))


REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize(
    "shape",
    [(32, 10), (4, 6, 5, 5), (64, 1100)],  # the last takes the paths for large logits
)
@pytest.mark.parametrize("ignored", ["none", "some", "all"])
def test_every_reduction_equals_torchs_label_smoothing(shape, reduction, ignore_index, ignored):
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(shape, generator=generator, requires_grad=True)
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    if ignore_index != -100:
        labels[labels == ignore_index] = 0
    if ignored == "some":
        labels.view(-1)[::3] = ignore_index
    elif ignored == "all":
        labels.fill_(ignore_index)
    fused = F.cross_entropy(
        logits, labels, label_smoothing=0.1, ignore_index=ignore_index, reduction=reduction
    )
    (fused_gradient,) = torch.autograd.grad(fused.sum(), logits)
    targets = smooth_labels(logits, labels, 0.1, ignore_index=ignore_index)
    # The targets as smooth_labels made them (noted, so the fused path may take them),
    # and a copy (the general dense path).
    for form in (targets, targets.clone()):
        ours = soft_cross_entropy(logits, form, reduction=reduction)
        (our_gradient,) = torch.autograd.grad(ours.sum(), logits)
        if reduction == "mean" and ignored == "all":
            assert fused.isnan()  # torch's 0/0; loom's is 0, with torch's zero gradient
            assert ours.item() == 0
        else:
            assert ours.shape == fused.shape
            torch.testing.assert_close(ours, fused, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(our_gradient, fused_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_of_class_indices_reduces_as_torch_and_is_zero_when_all_ignored(reduction):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, 3, generator=generator, requires_grad=True)
    labels = torch.randint(0, 5, (4, 3), generator=generator)
    labels[0] = -100
    expected = F.cross_entropy(logits, labels, reduction=reduction)
    torch.testing.assert_close(cross_entropy(logits, labels, reduction), expected)
    nothing = torch.full_like(labels, -100)
    loss = cross_entropy(logits, nothing, reduction)
    (gradient,) = torch.autograd.grad(loss.sum(), logits)
    assert loss.abs().sum().item() == 0
    assert gradient.abs().sum().item() == 0


def test_a_diverged_model_still_has_a_nan_loss():
    logits = torch.full((2, 3), float("nan"))
    assert cross_entropy(logits, torch.tensor([0, -100])).isnan()
    assert soft_cross_entropy(logits, torch.eye(3)[:2]).isnan()


def test_an_unknown_reduction_is_named():
    for loss in (cross_entropy, soft_cross_entropy):
        with pytest.raises(ValueError, match=r"reduction='avg' must be one of 'mean', 'sum'"):
            loss(torch.zeros(2, 3), torch.eye(3)[:2], reduction="avg")
    with pytest.raises(ValueError, match=r"reduction='avg' must be"):
        cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), reduction="avg")


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
