import io

import pytest
import torch
import torch.multiprocessing as mp

from loom.functional import OnlineLabelSmoothingLoss


class ReferenceOnlineLabelSmoothing:
    """Written out from the method's description, with plain loops and masks."""

    def __init__(self, alpha, num_classes, smoothing):
        self.alpha, self.num_classes = alpha, num_classes
        self.matrix = torch.full(
            (num_classes, num_classes), smoothing / (num_classes - 1), dtype=torch.float64
        )
        self.matrix.fill_diagonal_(1 - smoothing)
        self.sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
        self.counts = [0] * num_classes

    def loss(self, logits, labels):
        log_probs = logits.double().log_softmax(dim=1)
        hard = -log_probs[torch.arange(len(labels)), labels].mean()
        soft = -(self.matrix[:, labels].t() * log_probs).sum(dim=1).mean()
        return self.alpha * hard + (1 - self.alpha) * soft

    def observe(self, logits, labels):
        probabilities = logits.double().softmax(dim=1)
        for row, label in zip(probabilities, labels.tolist(), strict=True):
            if row.argmax().item() == label:
                self.sums[:, label] += row
                self.counts[label] += 1

    def next_epoch(self):
        for c in range(self.num_classes):
            if self.counts[c]:
                self.matrix[:, c] = self.sums[:, c] / self.counts[c]
        self.sums.zero_()
        self.counts = [0] * self.num_classes


def seeded_batches(epochs=3, batches=4, size=64, num_classes=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        epoch = []
        for _ in range(batches):
            labels = torch.randint(0, num_classes, (size,), generator=generator)
            logits = torch.randn(size, num_classes, generator=generator) * 2
            logits[torch.arange(size), labels] += 1.5  # most, not all, predictions correct
            epoch.append((logits, labels))
        yield epoch


def test_losses_and_matrices_follow_the_reference_over_three_epochs():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5, smoothing=0.1)
    reference = ReferenceOnlineLabelSmoothing(alpha=0.5, num_classes=5, smoothing=0.1)
    for epoch in seeded_batches():
        for logits, labels in epoch:
            expected = reference.loss(logits, labels)
            reference.observe(logits, labels)
            torch.testing.assert_close(
                criterion(logits, labels).double(), expected, rtol=1e-5, atol=1e-6
            )
        criterion.next_epoch()
        reference.next_epoch()
        torch.testing.assert_close(
            criterion.matrix.double(), reference.matrix, rtol=1e-5, atol=1e-7
        )
    assert criterion.epoch.item() == 3
    torch.testing.assert_close(
        criterion.matrix.sum(dim=0), torch.ones(5)
    )  # columns are distributions


def test_eval_mode_leaves_the_statistics_alone():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5).eval()
    logits, labels = next(seeded_batches())[0]
    criterion(logits, labels)
    assert criterion.counts.sum() == 0
    assert criterion.accumulator.abs().sum() == 0


def test_a_class_without_correct_predictions_keeps_its_column_and_empty_epochs_change_nothing():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3, smoothing=0.3)
    initial = criterion.matrix.clone()
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    criterion(logits, torch.tensor([0, 2]))  # class 0 right; class 2 wrong; class 1 unseen
    criterion.next_epoch()
    torch.testing.assert_close(criterion.matrix[:, 0], logits[0].softmax(dim=0))
    torch.testing.assert_close(criterion.matrix[:, 1:], initial[:, 1:])
    learned = criterion.matrix.clone()
    criterion.next_epoch()
    torch.testing.assert_close(criterion.matrix, learned)


def test_bf16_autocast_keeps_float32_statistics():
    logits, labels = next(seeded_batches())[0]
    exact = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
    exact(logits.bfloat16().float(), labels)
    mixed = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = mixed(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32
    assert mixed.accumulator.dtype == torch.float32
    torch.testing.assert_close(mixed.accumulator, exact.accumulator)
    torch.testing.assert_close(mixed.counts, exact.counts)


def test_positions_and_ignored_targets():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 3, generator=generator) * 3
    labels = torch.randint(0, 4, (2, 3, 3), generator=generator)
    labels[0, 0, :] = -100
    per_position = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=4)
    loss = per_position(logits, labels)
    flat_logits = logits.movedim(1, -1).reshape(-1, 4)
    flat_labels = labels.reshape(-1)
    kept = flat_labels != -100
    flat = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=4)
    torch.testing.assert_close(loss, flat(flat_logits[kept], flat_labels[kept]))
    torch.testing.assert_close(per_position.accumulator, flat.accumulator)
    torch.testing.assert_close(per_position.counts, flat.counts)


def test_state_dict_round_trip_mid_epoch():
    batches = next(seeded_batches())
    original = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
    original(*batches[0])
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    restored = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for module in (original, restored):
        module(*batches[1])
        module.next_epoch()
    torch.testing.assert_close(restored.matrix, original.matrix, rtol=0, atol=0)
    assert set(original.state_dict()) == {"matrix", "accumulator", "counts", "epoch"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5, "n_classes": 3}, r"alpha=1.5 must lie in \[0, 1\]"),
        ({"alpha": -0.1, "n_classes": 3}, r"alpha=-0.1 must lie in \[0, 1\]"),
        ({"n_classes": 1}, r"n_classes=1 must be an int >= 2"),
        ({}, r"n_classes=None must be an int >= 2"),
        ({"n_classes": 3, "smoothing": 2.0}, r"smoothing=2.0 must lie in \[0, 1\]"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnlineLabelSmoothingLoss(**kwargs)


def test_bad_inputs_say_what_was_expected():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3)
    with pytest.raises(
        ValueError, match=r"class index 3 at position \(1,\); expected 0 <= index < 3"
    ):
        criterion(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(
        ValueError, match=r"logits of shape \(2, 4\) do not have n_classes=3 classes"
    ):
        criterion(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(
        ValueError, match=r"target must be integer class indices of shape \(2,\), got torch.float32"
    ):
        criterion(torch.zeros(2, 3), torch.zeros(2))


def _train_shard(rank, world_size, init_file, batches, results):
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),  # a lost peer fails the test, never hangs it
    )  # fmt: skip
    try:
        criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
        for logits, labels in batches:
            criterion(logits[rank::world_size], labels[rank::world_size])  # this rank's shard
        criterion.next_epoch()
        results[rank] = criterion.matrix.clone()
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_hold_the_matrix_one_process_would(tmp_path):
    batches = next(seeded_batches())
    single = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5)
    for logits, labels in batches:
        single(logits, labels)
    single.next_epoch()
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(
            _train_shard, args=(2, tmp_path / "rendezvous", batches, results), nprocs=2, join=True
        )
        matrices = [results[0], results[1]]
    assert torch.equal(matrices[0], matrices[1])
    torch.testing.assert_close(matrices[0], single.matrix)


def test_soft_targets_follow_every_change_of_the_matrix():
    criterion = OnlineLabelSmoothingLoss(alpha=0.25, n_classes=3)
    labels = torch.tensor([0, 2])
    criterion.soft_targets(torch.zeros(2, 3), labels)  # builds the cached class targets
    learned = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.8]])
    criterion.load_state_dict({**criterion.state_dict(), "matrix": learned})
    expected = 0.25 * torch.eye(3)[labels] + 0.75 * learned[:, labels].t()
    torch.testing.assert_close(criterion.soft_targets(torch.zeros(2, 3), labels), expected)
    criterion.matrix.fill_(1 / 3)  # an edit in place is seen too
    expected = 0.25 * torch.eye(3)[labels] + 0.75 / 3
    torch.testing.assert_close(criterion.soft_targets(torch.zeros(2, 3), labels), expected)


def test_targets_changed_in_place_are_checked_again():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=3)
    labels = torch.tensor([0, 1])
    criterion.accumulate(torch.zeros(2, 3), labels)
    labels[1] = 7
    with pytest.raises(ValueError, match=r"class index 7 at position \(1,\)"):
        criterion.accumulate(torch.zeros(2, 3), labels)


def test_accumulate_alone_gathers_what_the_reference_observes():
    """The path the OnlineLabelSmoothing algorithm takes: soft targets, then accumulate."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5, smoothing=0.1)
    reference = ReferenceOnlineLabelSmoothing(alpha=0.5, num_classes=5, smoothing=0.1)
    for epoch in seeded_batches(epochs=2):
        for logits, labels in epoch:
            criterion.accumulate(logits, labels)
            reference.observe(logits, labels)
        torch.testing.assert_close(
            criterion.accumulator.double(), reference.sums, rtol=1e-5, atol=1e-6
        )
        assert criterion.counts.tolist() == reference.counts
        criterion.next_epoch()
        reference.next_epoch()
        torch.testing.assert_close(
            criterion.matrix.double(), reference.matrix, rtol=1e-5, atol=1e-7
        )


def test_large_batches_take_the_maxima_count_and_the_workspace_and_follow_the_reference():
    """2048 x 40 logits: above COUNT_MAXIMA_FROM, so correctness is counted, not argmax'd."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40, smoothing=0.1)
    reference = ReferenceOnlineLabelSmoothing(alpha=0.5, num_classes=40, smoothing=0.1)
    for epoch in seeded_batches(epochs=2, batches=2, size=2048, num_classes=40):
        for logits, labels in epoch:
            expected = reference.loss(logits, labels)
            reference.observe(logits, labels)
            torch.testing.assert_close(
                criterion(logits, labels).double(), expected, rtol=1e-5, atol=1e-6
            )
        assert criterion._scratch is not None
        assert criterion.counts.tolist() == reference.counts
        criterion.next_epoch()
        reference.next_epoch()
        torch.testing.assert_close(
            criterion.matrix.double(), reference.matrix, rtol=1e-5, atol=1e-7
        )
