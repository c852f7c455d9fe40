import pytest
import torch
import torch.nn.functional as F

from loom.functional import cross_entropy, soft_cross_entropy


def reference_soft_cross_entropy(logits, targets):
    """-sum(targets * log_softmax) per position, mean over positions with a non-zero target."""
    per_position = -(targets * logits.log_softmax(dim=1)).sum(dim=1)
    kept = targets.abs().sum(dim=1) > 0
    return per_position[kept].mean()


@pytest.mark.parametrize("shape", [(16, 10), (4, 5, 3, 3)])
def test_soft_cross_entropy_matches_the_reference_values_and_gradients(shape):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=generator, requires_grad=True)
    targets = torch.rand(shape, generator=generator).softmax(dim=1)
    targets[1] = 0  # an ignored sample
    loss = soft_cross_entropy(logits, targets)
    (gradient,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().clone().requires_grad_()
    reference = reference_soft_cross_entropy(reference_logits, targets)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(gradient, reference_logits.grad)


def test_one_hot_targets_equal_class_index_cross_entropy():
    logits = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(labels, 5).float()), F.cross_entropy(logits, labels)
    )


def test_cross_entropy_dispatches_on_the_target_dtype():
    logits = torch.randn(8, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, -100, 0, 1])
    torch.testing.assert_close(cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    dense = torch.rand(8, 5)
    torch.testing.assert_close(cross_entropy(logits, dense), soft_cross_entropy(logits, dense))


def test_soft_cross_entropy_computes_in_float32_under_bf16():
    logits = torch.randn(8, 5).bfloat16()
    targets = torch.rand(8, 5).softmax(dim=1)
    loss = soft_cross_entropy(logits, targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, soft_cross_entropy(logits.float(), targets))


def test_shape_mismatch_says_what_was_expected():
    with pytest.raises(
        ValueError,
        match=r"shape of the logits \(8, 5\), got \(8, 4\); pass class indices of shape \(8,\)",
    ):
        soft_cross_entropy(torch.randn(8, 5), torch.rand(8, 4))


@pytest.mark.parametrize(
    ("logits", "targets", "message"),
    [
        (torch.zeros(2, 3), torch.tensor([0, 9]), r"class index 9 at position \(1,\)"),
        (torch.zeros(2, 3), torch.tensor([-5, 0]), r"class index -5 at position \(0,\)"),
        (
            torch.zeros(1, 3, 2, 2),
            torch.tensor([[[0, 1], [3, 2]]]),
            r"index 3 at position \(0, 1, 0\)",
        ),
    ],
    ids=["too large", "negative", "segmentation"],
)
def test_an_index_out_of_range_is_named_not_torchs_index_error(logits, targets, message):
    with pytest.raises(ValueError, match=message + r"; expected 0 <= index < 3") as raised:
        cross_entropy(logits, targets)
    assert raised.value.__suppress_context__


def test_ignored_positions_are_not_out_of_range_and_other_errors_are_torchs():
    targets = torch.tensor([0, -100, 2])
    torch.testing.assert_close(
        cross_entropy(torch.zeros(3, 3), targets), F.cross_entropy(torch.zeros(3, 3), targets)
    )
    with pytest.raises(ValueError, match=r"Expected input batch_size \(2\) to match target"):
        cross_entropy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


def test_per_sample_losses_under_vmap_including_an_ignored_one():
    """torch.func.vmap, as for per-sample gradients: no value can be read inside it."""
    from torch.func import vmap

    logits, labels = torch.randn(4, 5), torch.tensor([0, -100, 2, 4])
    per_sample = vmap(lambda x, y: cross_entropy(x[None], y[None]))(logits, labels)
    expected = F.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(per_sample, expected)
