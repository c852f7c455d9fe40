import math

import pytest
import torch
import torch.nn.functional as F

from loom.functional import distillation_loss


def reference(student, teacher, target_loss, temperature, alpha):
    """Hinton et al.'s loss written out in float64: KL(p || q) = sum p (log p - log q) over
    the classes, averaged over every other position."""
    student, teacher = student.double() / temperature, teacher.double() / temperature
    log_q = student - student.exp().sum(dim=1, keepdim=True).log()
    log_p = teacher - teacher.exp().sum(dim=1, keepdim=True).log()
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return alpha * temperature**2 * kl + (1 - alpha) * target_loss.double()


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 2)], ids=["classification", "per-pixel"])
@pytest.mark.parametrize(("temperature", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.5, 0.3)])
def test_the_loss_is_the_reference(shape, temperature, alpha):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(shape, generator=generator) * 3
    teacher = torch.randn(shape, generator=generator) * 3
    target_loss = torch.tensor(0.7)
    loss = distillation_loss(student, teacher, target_loss, temperature, alpha)
    expected = reference(student, teacher, target_loss, temperature, alpha)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


def test_the_kl_term_of_two_rows_is_batchmean():
    student, teacher = (
        torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
        torch.tensor([[0.0, 2.0], [0.0, 1.0]]),
    )
    loss = distillation_loss(student, teacher, torch.tensor(0.0), temperature=1.0, alpha=1.0)
    # Row 0: p = softmax(0, 2), log p - log q = (-2, 2); row 1: 0. Mean over the two rows.
    p = torch.softmax(torch.tensor([0.0, 2.0]), dim=0)
    expected = (p[0] * -2 + p[1] * 2) / 2
    torch.testing.assert_close(loss, expected)
    assert math.isclose(
        loss.item(),
        F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="batchmean").item(),
        rel_tol=1e-6,
    )


def test_the_kl_term_is_scaled_by_the_temperature_squared():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    zero = torch.tensor(0.0)
    for temperature in (1.0, 2.0, 5.0):
        softened_kl = F.kl_div(
            F.log_softmax(student / temperature, 1),
            F.softmax(teacher / temperature, 1),
            reduction="batchmean",
        )
        loss = distillation_loss(student, teacher, zero, temperature, alpha=1.0)
        torch.testing.assert_close(loss, temperature**2 * softened_kl)


def test_alpha_zero_is_the_target_loss_and_one_is_the_teacher_alone():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    target_loss = torch.tensor(1.25)
    assert distillation_loss(student, teacher, target_loss, 3.0, alpha=0.0).item() == 1.25
    alone = distillation_loss(student, teacher, target_loss, 3.0, alpha=1.0)
    torch.testing.assert_close(
        alone, distillation_loss(student, teacher, torch.tensor(9.0), 3.0, 1.0)
    )
    expected = reference(student, teacher, target_loss, 3.0, 1.0)
    torch.testing.assert_close(alone.double(), expected, rtol=1e-5, atol=1e-6)


def test_a_teacher_that_agrees_with_the_student_adds_nothing():
    logits = torch.randn(5, 7)
    loss = distillation_loss(logits, logits.clone(), torch.tensor(2.0), 4.0, alpha=0.5)
    torch.testing.assert_close(loss, torch.tensor(1.0))


def test_the_gradient_reaches_the_student_and_not_the_teacher():
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])
    loss = distillation_loss(student, teacher, F.cross_entropy(student, labels), 2.0, 0.6)
    loss.backward()
    assert teacher.grad is None
    # The soft term's gradient: alpha * T * (q - p) / N, beside the hard term's.
    q, p = torch.softmax(student.detach() / 2, 1), torch.softmax(teacher.detach() / 2, 1)
    hard = (torch.softmax(student.detach(), 1) - F.one_hot(labels, 3)) / 4
    torch.testing.assert_close(student.grad, 0.6 * 2.0 * (q - p) / 4 + 0.4 * hard)


def test_low_precision_logits_are_taken_in_float32():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    loss = distillation_loss(student.bfloat16(), teacher.bfloat16(), torch.tensor(0.0), 2.0, 1.0)
    assert loss.dtype == torch.float32
    expected = reference(
        student.bfloat16().float(), teacher.bfloat16().float(), torch.tensor(0.0), 2.0, 1.0
    )
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"temperature": 0.0}, ValueError, r"temperature=0\.0 must be a positive, finite number"),
        ({"temperature": -1}, ValueError, r"temperature=-1 must be a positive"),
        ({"temperature": math.inf}, ValueError, r"temperature=inf must be a positive"),
        ({"temperature": math.nan}, ValueError, r"temperature=nan must be a positive"),
        ({"temperature": "4"}, TypeError, r"temperature='4' must be a positive"),
        ({"temperature": True}, TypeError, r"temperature=True must be a positive"),
        ({"alpha": 1.5}, ValueError, r"alpha=1\.5 must lie in \[0, 1\]"),
        ({"alpha": -0.1}, ValueError, r"alpha=-0\.1 must lie in \[0, 1\]"),
        ({"alpha": None}, TypeError, r"alpha=None must be a number in \[0, 1\]"),
        (
            {"teacher_logits": torch.zeros(4, 5)},
            ValueError,
            r"the teacher's logits \(4, 5\) do not have the shape of the student's \(4, 3\)",
        ),
        (
            {"student_logits": torch.zeros(3), "teacher_logits": torch.zeros(3)},
            ValueError,
            r"logits of shape \(3,\) have no class dimension",
        ),
        ({"target_loss": torch.zeros(4)}, ValueError, r"target_loss must be a scalar .* \(4,\)"),
        ({"target_loss": 0.5}, TypeError, r"target_loss must be a scalar tensor, got float"),
    ],
)
def test_bad_inputs_are_named(changes, error, message):
    arguments = {
        "student_logits": torch.zeros(4, 3),
        "teacher_logits": torch.zeros(4, 3),
        "target_loss": torch.tensor(0.0),
        "temperature": 4.0,
        "alpha": 0.9,
        **changes,
    }
    with pytest.raises(error, match=message):
        distillation_loss(**arguments)
