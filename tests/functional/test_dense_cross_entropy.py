"""The one-pass kernels behind soft_cross_entropy and OnlineLabelSmoothingLoss."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F

import loom.functional.dense_cross_entropy as dense_cross_entropy_module
from loom.functional import OnlineLabelSmoothingLoss, smooth_labels, soft_cross_entropy
from loom.functional.dense_cross_entropy import (
    COUNT_MAXIMA_FROM,
    ONE_PASS_FROM,
    class_target_cross_entropy,
    dense_cross_entropy,
    label_is_prediction,
)
from loom.functional.label_smoothing import fused_form

# Rows of 40 classes: the first takes autograd's path, the second the one-pass kernel.
ROWS = pytest.mark.parametrize("rows", [64, 2048])
assert 64 * 40 < ONE_PASS_FROM <= 2048 * 40


def float64_loss_and_gradient(logits, targets):
    """-sum(t * log_softmax) per row, mean over rows with a non-zero target, in float64."""
    logits = logits.detach().double().requires_grad_()
    targets = targets.double()
    kept = targets.abs().sum(dim=1) > 0
    per_row = -(targets * logits.log_softmax(dim=1)).sum(dim=1)
    loss = per_row[kept].sum() / kept.sum()
    loss.backward()
    return loss.detach(), logits.grad


def random_problem(rows=64, classes=40, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = (torch.randn(rows, classes, generator=generator) * scale).requires_grad_()
    targets = torch.rand(rows, classes, generator=generator).softmax(dim=1)
    return logits, targets


@pytest.mark.parametrize("scale", [1.0, 30.0])  # large logits: the log-softmax must stay exact
@ROWS
def test_dense_loss_and_gradient_follow_the_float64_reference(rows, scale):
    logits, targets = random_problem(rows, scale=scale)
    targets[3] = 0  # an ignored row
    loss = dense_cross_entropy(logits, targets)
    (gradient,) = torch.autograd.grad(loss, logits)
    expected_loss, expected_gradient = float64_loss_and_gradient(logits, targets)
    torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-5, atol=1e-7)
    assert gradient[3].abs().sum() == 0


@ROWS
def test_targets_that_do_not_sum_to_one_get_the_gradient_of_their_mass(rows):
    logits, targets = random_problem(rows)
    targets = targets * 2.5  # mass 2.5 a row: the gradient is 2.5 p - t
    (gradient,) = torch.autograd.grad(dense_cross_entropy(logits, targets), logits)
    _, expected = float64_loss_and_gradient(logits, targets)
    torch.testing.assert_close(gradient.double(), expected, rtol=1e-5, atol=1e-7)


@ROWS
def test_a_batch_with_every_row_ignored_has_loss_zero_and_torchs_zero_gradient(rows):
    # torch's mean is NaN (0/0) there; loom's is 0, so one empty segmentation crop
    # does not stop the finite-loss check. The gradient is torch's: zero.
    logits = torch.randn(rows, 40, requires_grad=True)
    torch_loss = F.cross_entropy(logits, torch.full((rows,), -100))
    (torch_gradient,) = torch.autograd.grad(torch_loss, logits)
    assert torch_loss.isnan()
    labels = torch.zeros(rows, dtype=torch.long)
    kept = torch.zeros(rows, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        losses = {
            "dense": dense_cross_entropy(logits, torch.zeros(rows, 40), reduction),
            "class targets": class_target_cross_entropy(
                logits, labels, kept, torch.eye(40), reduction=reduction
            ),
        }
        for name, loss in losses.items():
            (gradient,) = torch.autograd.grad(loss, logits)
            assert loss.item() == 0, (name, reduction)
            assert torch.equal(gradient, torch_gradient), (name, reduction)
            assert torch.equal(gradient, torch.zeros(rows, 40))


def test_a_second_backward_through_the_same_loss_is_refused():
    logits, targets = random_problem(rows=2048)
    loss = dense_cross_entropy(logits, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match=r"backward through the same loss twice"):
        loss.backward()


@ROWS
def test_targets_that_require_a_gradient_get_it(rows):
    logits, targets = random_problem(rows)
    targets.requires_grad_()
    loss = dense_cross_entropy(logits, targets)
    logits_gradient, targets_gradient = torch.autograd.grad(loss, (logits, targets))
    reference_targets = targets.detach().clone().requires_grad_()
    reference_logits = logits.detach().clone().requires_grad_()
    reference = -(reference_targets * reference_logits.log_softmax(dim=1)).sum(dim=1).mean()
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(logits_gradient, reference_logits.grad)
    torch.testing.assert_close(targets_gradient, reference_targets.grad)


@ROWS
def test_without_a_gradient_the_loss_is_the_same(rows):
    logits, targets = random_problem(rows)
    with torch.no_grad():
        quiet = dense_cross_entropy(logits, targets)
    assert not quiet.requires_grad
    assert torch.equal(quiet, dense_cross_entropy(logits, targets).detach())


def test_class_targets_of_a_table_equal_the_dense_loss_whichever_way_the_mass_is_summed():
    table = torch.rand(3, 3).softmax(dim=1) * 1.5
    for rows in (2, 12):  # fewer and more rows than classes
        logits = torch.randn(rows, 3, requires_grad=True)
        labels = torch.randint(0, 3, (rows,))
        loss = class_target_cross_entropy(logits, labels, None, table)
        (gradient,) = torch.autograd.grad(loss, logits)
        expected_loss, expected_gradient = float64_loss_and_gradient(logits, table[labels])
        torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "probabilities",
    [
        torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.7, 0.2], [0.3, 0.3, 0.4]]),  # a tie
        torch.full((3, 3), 1 / 3),  # every class tied: argmax says class 0
        torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]]),  # no tie
        torch.tensor([[float("nan"), 0.3, 0.2], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]]),
    ],
)
@pytest.mark.parametrize("count_from", [COUNT_MAXIMA_FROM, 0])  # argmax; the count first
def test_label_is_prediction_means_the_label_is_the_first_argmax(
    probabilities, count_from, monkeypatch
):
    monkeypatch.setattr(dense_cross_entropy_module, "COUNT_MAXIMA_FROM", count_from)
    largest = probabilities.amax(dim=1, keepdim=True)
    for labels in torch.cartesian_prod(*[torch.arange(3)] * 3):
        expected = probabilities.argmax(dim=1) == labels
        assert torch.equal(label_is_prediction(probabilities, labels, largest), expected)


@pytest.mark.parametrize("rows", [64, 2048])  # by argmax; by counting the maxima
@pytest.mark.parametrize("with_tie", [False, True])
def test_label_is_prediction_on_random_batches(rows, with_tie, monkeypatch):
    assert 64 * 10 < COUNT_MAXIMA_FROM <= 2048 * 10
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.randn(rows, 10, generator=generator).softmax(dim=1)
    labels = torch.randint(0, 10, (rows,), generator=generator)
    if with_tie:
        probabilities[5, :2] = probabilities[5].amax()  # two maxima: argmax says class 0
        labels[5] = 1
    largest = probabilities.amax(dim=1, keepdim=True)
    scratch = torch.empty_like(probabilities)
    expected = probabilities.argmax(dim=1) == labels
    if rows * 10 >= COUNT_MAXIMA_FROM and not with_tie:  # the count alone must decide
        monkeypatch.setattr(torch.Tensor, "argmax", lambda *args, **kwargs: 1 / 0)
    assert torch.equal(label_is_prediction(probabilities, labels, largest, scratch), expected)


def test_the_criterion_gradient_follows_the_float64_reference_and_its_workspace_is_reused():
    criterion = OnlineLabelSmoothingLoss(alpha=0.4, n_classes=6, smoothing=0.2)
    table = (0.4 * torch.eye(6) + 0.6 * criterion.matrix.t()).double()
    generator = torch.Generator().manual_seed(1)
    for rows in (8, 3, 8):  # a new shape gets a new workspace; an old one, correct again
        logits = (torch.randn(rows, 6, generator=generator) * 2).requires_grad_()
        labels = torch.randint(0, 6, (rows,), generator=generator)
        loss = criterion(logits, labels)
        (gradient,) = torch.autograd.grad(loss, logits)
        expected_loss, expected_gradient = float64_loss_and_gradient(logits, table[labels])
        torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-5, atol=1e-7)


def test_float64_logits_train_float32_statistics():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3)
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]], dtype=torch.float64)
    loss = criterion(logits, torch.tensor([0, 2]))
    assert loss.dtype == torch.float64
    assert criterion.accumulator.dtype == torch.float32
    torch.testing.assert_close(criterion.accumulator[:, 0], logits[0].softmax(dim=0).float())


def test_a_state_dict_with_a_contiguous_accumulator_loads_into_the_row_layout():
    """Checkpoints written before the accumulator was stored class by class."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3)
    sums = torch.tensor([[0.8, 0.0, 0.1], [0.1, 0.0, 0.1], [0.1, 0.0, 0.8]])
    saved = {**criterion.state_dict(), "accumulator": sums.contiguous()}
    saved["counts"] = torch.tensor([1.0, 0.0, 1.0])
    criterion.load_state_dict(saved)
    criterion(torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([1]))  # class 1: one sample
    criterion.next_epoch()
    torch.testing.assert_close(criterion.matrix[:, 0], sums[:, 0])
    torch.testing.assert_close(criterion.matrix[:, 2], sums[:, 2])
    torch.testing.assert_close(criterion.matrix[:, 1], torch.tensor([0.0, 5.0, 0.0]).softmax(0))


@ROWS
def test_smoothed_index_targets_take_the_fused_kernel_until_they_are_edited(rows):
    logits = torch.randn(rows, 40, requires_grad=True)
    labels = torch.randint(0, 40, (rows,))
    labels[2] = -100
    targets = smooth_labels(logits, labels, smoothing=0.2)
    indices, smoothing, ignore_index = fused_form(targets)
    assert indices is labels
    assert (smoothing, ignore_index) == (0.2, -100)
    loss = soft_cross_entropy(logits, targets)
    (gradient,) = torch.autograd.grad(loss, logits)
    expected_loss, expected_gradient = float64_loss_and_gradient(logits, targets)
    torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gradient.double(), expected_gradient, rtol=1e-5, atol=1e-7)
    if logits.numel() >= ONE_PASS_FROM:  # large logits: torch's fused kernel, to the bit
        fused = F.cross_entropy(logits, labels, label_smoothing=0.2)
        (fused_gradient,) = torch.autograd.grad(fused, logits)
        assert torch.equal(loss, fused)
        assert torch.equal(gradient, fused_gradient)
    targets[0] = 0.0
    targets[0, 0] = 1.0  # edited in place: not smoothing any more
    assert fused_form(targets) is None
    expected_loss, _ = float64_loss_and_gradient(logits, targets)
    torch.testing.assert_close(
        soft_cross_entropy(logits, targets).double(), expected_loss, rtol=1e-6, atol=1e-6
    )


def test_editing_the_indices_or_copying_the_targets_leaves_the_fused_kernel():
    logits = torch.randn(2048, 40)
    assert logits.numel() >= ONE_PASS_FROM  # where the fused kernel would be taken
    labels = torch.randint(0, 40, (2048,))
    targets = smooth_labels(logits, labels, smoothing=0.1)
    assert fused_form(targets.clone()) is None
    assert fused_form(targets[:2]) is None
    assert fused_form(copy.deepcopy(targets)) is None
    buffer = io.BytesIO()
    torch.save(targets, buffer)  # no note travels with the tensor, so it pickles
    buffer.seek(0)
    assert fused_form(torch.load(buffer, weights_only=True)) is None
    labels[0] = (labels[0] + 1) % 40
    assert fused_form(targets) is None
    expected_loss, _ = float64_loss_and_gradient(logits, targets)
    torch.testing.assert_close(
        soft_cross_entropy(logits, targets).double(), expected_loss, rtol=1e-6, atol=1e-6
    )
    assert fused_form(smooth_labels(logits, torch.eye(40)[labels], smoothing=0.1)) is None


def test_targets_that_require_a_gradient_leave_the_fused_kernel_and_get_it():
    logits = torch.randn(2048, 40, requires_grad=True)
    targets = smooth_labels(logits, torch.randint(0, 40, (2048,)), 0.1).requires_grad_()
    assert fused_form(targets) is None
    (gradient,) = torch.autograd.grad(soft_cross_entropy(logits, targets), targets)
    torch.testing.assert_close(gradient, -logits.detach().log_softmax(dim=1) / 2048)


def test_the_callers_indices_may_change_between_forward_and_backward():
    logits = torch.randn(2048, 40, requires_grad=True)
    labels = torch.randint(0, 40, (2048,))
    loss = soft_cross_entropy(logits, smooth_labels(logits, labels, 0.1))
    labels.zero_()  # e.g. a loader reusing its label buffer
    loss.backward()
    assert logits.grad is not None


def test_under_inference_mode_nothing_is_noted_and_both_losses_work():
    logits = torch.randn(2048, 40)
    labels = torch.randint(0, 40, (2048,))
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40).eval()
    with torch.inference_mode():
        targets = smooth_labels(logits, labels, 0.1)
        assert fused_form(targets) is None
        torch.testing.assert_close(soft_cross_entropy(logits, targets), expected)
        assert criterion(logits, labels).isfinite()


@pytest.mark.parametrize("loss", ["dense", "online label smoothing"])
def test_a_second_derivative_is_refused_not_wrong(loss):
    logits = torch.randn(2048, 40, requires_grad=True)
    if loss == "dense":
        value = soft_cross_entropy(logits, torch.rand(2048, 40).softmax(dim=1))
    else:
        value = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40)(
            logits, torch.randint(0, 40, (2048,))
        )
    with pytest.raises(RuntimeError, match=r"no second derivative.*create_graph=True"):
        torch.autograd.grad(value, logits, create_graph=True)


def test_the_workspace_is_scratch_no_copy_or_move_carries_it():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40)
    criterion(torch.randn(2048, 40), torch.randint(0, 40, (2048,)))
    assert criterion._scratch is not None
    assert copy.deepcopy(criterion)._scratch is None
    assert criterion.to(torch.float64)._scratch is None


@ROWS
def test_under_bf16_autocast_both_losses_are_computed_in_float32(rows):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, 40, generator=generator).bfloat16()
    labels = torch.randint(0, 40, (rows,), generator=generator)
    targets = torch.rand(rows, 40, generator=generator).softmax(dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dense = soft_cross_entropy(logits, targets)
        smoothed = soft_cross_entropy(logits, smooth_labels(logits, labels, 0.1))
    assert dense.dtype == smoothed.dtype == torch.float32
    torch.testing.assert_close(dense, soft_cross_entropy(logits.float(), targets))
    expected = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
    torch.testing.assert_close(smoothed, expected)


def test_positions_of_image_shaped_logits_take_the_one_pass_kernel_too():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 40, 16, 16, generator=generator, requires_grad=True)
    assert logits.numel() >= ONE_PASS_FROM
    targets = torch.rand(8, 40, 16, 16, generator=generator).softmax(dim=1)
    targets[0, :, 0, 0] = 0  # an ignored position
    loss = soft_cross_entropy(logits, targets)
    (gradient,) = torch.autograd.grad(loss, logits)
    flat = lambda values: values.movedim(1, -1).reshape(-1, 40)  # noqa: E731
    expected_loss, expected_gradient = float64_loss_and_gradient(flat(logits), flat(targets))
    torch.testing.assert_close(loss.double(), expected_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(flat(gradient).double(), expected_gradient, rtol=1e-5, atol=1e-7)


@pytest.mark.gpu
def test_on_cuda_both_kernels_give_the_cpus_losses_gradients_and_statistics():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2048, 40, generator=generator) * 2
    labels = torch.randint(0, 40, (2048,), generator=generator)
    targets = torch.rand(2048, 40, generator=generator).softmax(dim=1)
    results = {}
    for device in ("cpu", "cuda"):
        on_device = logits.to(device).requires_grad_()
        criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40).to(device)
        losses = (
            soft_cross_entropy(on_device, targets.to(device)),
            soft_cross_entropy(on_device, smooth_labels(on_device, labels.to(device), 0.1)),
            criterion(on_device, labels.to(device)),
        )
        gradients = [torch.autograd.grad(loss, on_device)[0].cpu() for loss in losses]
        results[device] = ([loss.detach().cpu() for loss in losses], gradients, criterion)
    for cpu, cuda in zip(results["cpu"][:2], results["cuda"][:2], strict=True):
        torch.testing.assert_close(cuda, cpu, rtol=1e-5, atol=1e-6)
    cpu_criterion, cuda_criterion = results["cpu"][2], results["cuda"][2]
    assert cuda_criterion.accumulator.stride() == cpu_criterion.accumulator.stride()
    torch.testing.assert_close(cuda_criterion.accumulator.cpu(), cpu_criterion.accumulator)
    torch.testing.assert_close(cuda_criterion.counts.cpu(), cpu_criterion.counts)
