import io

import pytest
import torch
import torch.multiprocessing as mp

from loom.functional import OnlineLabelSmoothingLoss


class ReferenceOnlineLabelSmoothing:
    """Written out in float64 from the codes each variant follows, with plain loops.

    The defaults are the reference criterion's (ankandrew/online-label-smoothing-pt);
    ``first_epoch`` and ``empty_column`` are the variants of the paper authors' code
    (zhangchbin/OnlineLabelSmoothing), and ``"keep"`` loom's own.
    """

    def __init__(
        self,
        alpha,
        num_classes,
        smoothing,
        warmup=0,
        ls_as_hard=False,
        first_epoch="label_smoothing",
        empty_column="zero",
        freeze_at=None,
    ):
        self.alpha, self.num_classes, self.smoothing = alpha, num_classes, smoothing
        self.freeze_at = freeze_at
        self.warmup, self.ls_as_hard, self.empty_column = warmup, ls_as_hard, empty_column
        size = (num_classes, num_classes)
        if first_epoch == "label_smoothing":
            self.matrix = self.label_smoothing_matrix()
        elif first_epoch == "zero":  # the CIFAR script: epoch 1 is alpha * CE alone
            self.matrix = torch.zeros(size, dtype=torch.float64)
        else:  # the fine-grained script
            self.matrix = torch.full(size, 1 / num_classes, dtype=torch.float64)
        self.sums = torch.zeros(size, dtype=torch.float64)
        self.counts = [0] * num_classes
        self.epoch = 0

    def label_smoothing_matrix(self):
        classes, s = self.num_classes, self.smoothing
        matrix = torch.full((classes, classes), s / (classes - 1), dtype=torch.float64)
        return matrix.fill_diagonal_(1 - s)

    def per_position_losses(self, logits, labels):
        log_probs = logits.double().log_softmax(dim=1)
        if self.ls_as_hard:  # the reference's LabelSmoothingLoss: s / (C - 1) off the label
            hard = -(self.label_smoothing_matrix()[:, labels].t() * log_probs).sum(dim=1)
        else:
            hard = -log_probs[torch.arange(len(labels)), labels]
        soft = -(self.matrix[:, labels].t() * log_probs).sum(dim=1)
        return self.alpha * hard + (1 - self.alpha) * soft

    def loss(self, logits, labels):
        return self.per_position_losses(logits, labels).mean()

    def observe(self, logits, labels):
        if self.epoch < self.warmup:
            return
        probabilities = logits.double().softmax(dim=1)
        for row, label in zip(probabilities, labels.tolist(), strict=True):
            if row.argmax().item() == label:
                self.sums[:, label] += row
                self.counts[label] += 1

    def next_epoch(self):
        if self.epoch >= self.warmup:
            for c in range(self.num_classes):
                if self.counts[c]:
                    # The fine-grained code's restriction: a confident column stays.
                    if self.freeze_at is None or self.matrix[:, c].max() < self.freeze_at:
                        self.matrix[:, c] = self.sums[:, c] / self.counts[c]
                elif self.empty_column == "zero":
                    self.matrix[:, c] = 0
                elif self.empty_column == "uniform":
                    self.matrix[:, c] = 1 / self.num_classes
            self.sums.zero_()
            self.counts = [0] * self.num_classes
        self.epoch += 1


def seeded_batches(epochs=3, batches=4, size=64, num_classes=5, seed=0, never_right=None):
    """Batches of logits and labels, most predictions correct. ``never_right``:
    ``(epoch, class)``, a class with no correct prediction in that epoch."""
    generator = torch.Generator().manual_seed(seed)
    for epoch_index in range(epochs):
        epoch = []
        for _ in range(batches):
            labels = torch.randint(0, num_classes, (size,), generator=generator)
            logits = torch.randn(size, num_classes, generator=generator) * 2
            logits[torch.arange(size), labels] += 1.5  # most, not all, predictions correct
            if never_right is not None and never_right[0] == epoch_index:
                wrong = labels == never_right[1]
                logits[wrong, never_right[1]] = -10.0
            epoch.append((logits, labels))
        yield epoch


def assert_follows_the_reference(criterion, reference, epochs, at_epoch_end=None):
    """Every batch's loss and every epoch's matrix, the criterion's against the reference's;
    ``at_epoch_end()`` runs before each ``next_epoch``, for checks of its own."""
    for epoch in epochs:
        for logits, labels in epoch:
            expected = reference.loss(logits, labels)
            reference.observe(logits, labels)
            torch.testing.assert_close(
                criterion(logits, labels).double(), expected, rtol=1e-5, atol=1e-6
            )
        if at_epoch_end is not None:
            at_epoch_end()
        assert_the_next_matrices_agree(criterion, reference)


def assert_the_next_matrices_agree(criterion, reference):
    """Both advance an epoch; the criterion's matrix is the reference's."""
    criterion.next_epoch()
    reference.next_epoch()
    torch.testing.assert_close(criterion.matrix.double(), reference.matrix, rtol=1e-5, atol=1e-7)


def test_losses_and_matrices_follow_the_reference_over_three_epochs():
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=5, smoothing=0.1)
    reference = ReferenceOnlineLabelSmoothing(alpha=0.5, num_classes=5, smoothing=0.1)
    assert_follows_the_reference(criterion, reference, seeded_batches())
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


VARIANTS = {
    "the reference criterion": {},
    "its warmup": {"warmup": 1},
    "its label smoothing as the hard loss": {"ls_as_hard": True},
    "the authors' CIFAR code": {"first_epoch": "zero", "empty_column": "uniform"},
    "the authors' fine-grained code": {
        "first_epoch": "uniform",
        "empty_column": "uniform",
        "freeze_at": 0.88,
    },
    "columns frozen early": {"empty_column": "uniform", "freeze_at": 0.5},
    "loom's kept column": {"empty_column": "keep"},
}


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=list(VARIANTS))
def test_every_variant_follows_its_float64_reference(variant):
    # Class 3 has no correct prediction in the second epoch, so the empty-column rule acts.
    criterion = OnlineLabelSmoothingLoss(0.4, 5, 0.2, **variant)
    reference = ReferenceOnlineLabelSmoothing(0.4, 5, 0.2, **variant)
    assert_follows_the_reference(criterion, reference, seeded_batches(never_right=(1, 3)))


@pytest.mark.parametrize(
    ("empty_column", "expected"),
    [("zero", torch.zeros(3)), ("uniform", torch.full((3,), 1 / 3)), ("keep", None)],
)
def test_a_class_without_correct_predictions_gets_its_empty_column(empty_column, expected):
    criterion = OnlineLabelSmoothingLoss(0.5, 3, 0.3, empty_column=empty_column)
    initial = criterion.matrix.clone()
    logits = torch.tensor([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    criterion(logits, torch.tensor([0, 2]))  # class 0 right; class 2 wrong; class 1 unseen
    criterion.next_epoch()
    torch.testing.assert_close(criterion.matrix[:, 0], logits[0].softmax(dim=0))
    for unlearned in (1, 2):
        wanted = initial[:, unlearned] if expected is None else expected
        torch.testing.assert_close(criterion.matrix[:, unlearned], wanted)


def test_with_kept_columns_an_epoch_with_nothing_gathered_changes_nothing():
    criterion = OnlineLabelSmoothingLoss(0.5, 3, 0.3, empty_column="keep")
    criterion(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]))
    criterion.next_epoch()
    learned = criterion.matrix.clone()
    criterion.next_epoch()
    torch.testing.assert_close(criterion.matrix, learned, rtol=0, atol=0)


def test_warmup_epochs_gather_nothing_and_keep_the_first_matrix():
    criterion = OnlineLabelSmoothingLoss(0.5, 3, 0.3, warmup=2)
    initial = criterion.matrix.clone()
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    labels = torch.tensor([0, 1, 2])
    for _ in range(2):
        criterion(logits, labels)
        criterion.accumulate(logits, labels)  # the algorithm's path, too
        assert criterion.counts.sum() == 0
        criterion.next_epoch()
        torch.testing.assert_close(criterion.matrix, initial, rtol=0, atol=0)
    criterion(logits, labels)  # the third epoch gathers
    assert criterion.counts.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_reductions_follow_the_reference_per_position(reduction):
    criterion = OnlineLabelSmoothingLoss(0.5, 5, 0.1, reduction=reduction)
    reference = ReferenceOnlineLabelSmoothing(0.5, 5, 0.1)
    for logits, labels in next(seeded_batches(epochs=1)):
        expected = reference.per_position_losses(logits, labels)
        reference.observe(logits, labels)
        loss = criterion(logits, labels)
        if reduction == "sum":
            expected = expected.sum()
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    criterion.next_epoch()
    reference.next_epoch()
    torch.testing.assert_close(criterion.matrix.double(), reference.matrix, rtol=1e-5, atol=1e-7)


def test_reductions_of_positions_with_ignored_targets():
    generator = torch.Generator().manual_seed(5)
    logits = (torch.randn(2, 4, 3, 3, generator=generator) * 3).requires_grad_()
    labels = torch.randint(0, 4, (2, 3, 3), generator=generator)
    labels[1, :, 0] = -100
    per_position = OnlineLabelSmoothingLoss(0.5, 4, reduction="none").eval()(logits, labels)
    assert per_position.shape == (2, 3, 3)
    assert per_position[1, :, 0].abs().sum() == 0
    summed = OnlineLabelSmoothingLoss(0.5, 4, reduction="sum").eval()(logits, labels)
    mean = OnlineLabelSmoothingLoss(0.5, 4).eval()(logits, labels)
    torch.testing.assert_close(summed, per_position.sum())
    torch.testing.assert_close(mean, per_position.sum() / (labels != -100).sum())
    everything_ignored = torch.full_like(labels, -100)
    for reduction in ("mean", "sum"):
        loss = OnlineLabelSmoothingLoss(0.5, 4, reduction=reduction)(logits, everything_ignored)
        (gradient,) = torch.autograd.grad(loss, logits)
        assert loss.item() == 0
        assert gradient.abs().sum() == 0


def test_a_state_dict_saved_by_the_reference_criterion_loads():
    """The reference's layout, as its code documents it: ``supervise`` (column c is class
    c's soft label), ``update`` (column c sums class c's correct predictions),
    ``idx_count`` (their number per class); it saves no epoch count."""
    generator = torch.Generator().manual_seed(0)
    supervise = torch.rand(4, 4, generator=generator).softmax(dim=0)
    update = torch.rand(4, 4, generator=generator) * 3
    update[:, 1] = 0  # class 1: no correct prediction so far
    idx_count = torch.tensor([3.0, 0.0, 1.0, 2.0])
    saved = {"supervise": supervise, "update": update, "idx_count": idx_count}
    criterion = OnlineLabelSmoothingLoss(0.5, 4)
    criterion.load_state_dict(saved)
    assert torch.equal(criterion.matrix, supervise)
    assert torch.equal(criterion.accumulator, update)
    assert torch.equal(criterion.counts, idx_count)
    assert criterion.epoch.item() == 0
    criterion.next_epoch()  # the reference's next_epoch on the same state
    expected = update / idx_count.clamp(min=1)
    torch.testing.assert_close(criterion.matrix, expected, rtol=0, atol=0)
    assert criterion.matrix[:, 1].abs().sum() == 0  # its empty column: zero
    # Inside a model, under the model's prefix:
    holder = torch.nn.ModuleDict({"criterion": OnlineLabelSmoothingLoss(0.5, 4)})
    holder.load_state_dict({f"criterion.{name}": value for name, value in saved.items()})
    assert torch.equal(holder["criterion"].matrix, supervise)


def test_warmup_follows_the_epoch_count_of_a_loaded_state_dict():
    warm = OnlineLabelSmoothingLoss(0.5, 3, warmup=1)
    warm.next_epoch()
    resumed = OnlineLabelSmoothingLoss(0.5, 3, warmup=1)
    resumed.load_state_dict(warm.state_dict())
    resumed(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]))
    assert resumed.counts.tolist() == [1.0, 0.0, 0.0]
    # A reference state dict, with the epochs already run added as it loads:
    saved = {"supervise": torch.eye(3), "update": torch.zeros(3, 3), "idx_count": torch.zeros(3)}
    from_reference = OnlineLabelSmoothingLoss(0.5, 3, warmup=1)
    from_reference.load_state_dict({**saved, "epoch": torch.tensor(1)})
    from_reference(torch.tensor([[5.0, 0.0, 0.0]]), torch.tensor([0]))
    assert from_reference.counts.tolist() == [1.0, 0.0, 0.0]


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
        ({"n_classes": 3, "warmup": -1}, r"warmup=-1 must be an int >= 0 \(epochs\)"),
        ({"n_classes": 3, "warmup": 1.5}, r"warmup=1.5 must be an int >= 0"),
        (
            {"n_classes": 3, "first_epoch": "identity"},
            r"first_epoch='identity' must be one of 'label_smoothing', 'zero', 'uniform'",
        ),
        (
            {"n_classes": 3, "empty_column": "previous"},
            r"empty_column='previous' must be one of 'zero', 'keep', 'uniform'",
        ),
        (
            {"n_classes": 3, "ls_as_hard": True, "smoothing": 1.0},
            r"ls_as_hard=True with smoothing=1.0 would give the true class no mass",
        ),
        ({"n_classes": 3, "freeze_at": 0}, r"freeze_at=0 must be a positive number or None"),
        ({"n_classes": 3, "reduction": "avg"}, r"reduction='avg' must be one of 'mean'"),
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
        assert_the_next_matrices_agree(criterion, reference)


def test_large_batches_take_the_maxima_count_and_the_workspace_and_follow_the_reference():
    """2048 x 40 logits: above COUNT_MAXIMA_FROM, so correctness is counted, not argmax'd."""
    criterion = OnlineLabelSmoothingLoss(alpha=0.5, n_classes=40, smoothing=0.1)
    reference = ReferenceOnlineLabelSmoothing(alpha=0.5, num_classes=40, smoothing=0.1)

    def workspace_kept_and_counts_equal():
        assert criterion._scratch is not None
        assert criterion.counts.tolist() == reference.counts

    epochs = seeded_batches(epochs=2, batches=2, size=2048, num_classes=40)
    assert_follows_the_reference(criterion, reference, epochs, workspace_kept_and_counts_equal)
