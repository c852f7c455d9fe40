"""Where loom's overhead over a plain loop goes: the Trainer against two stripped steps.

A diagnostic for ``trainer_overhead.py`` (same model, data and timing chain). Besides the
plain loop and loom's ``Trainer``, it times two Trainers whose training step is cut down
(the epoch loop, the clock, the finite-loss checks and the RNG snapshots stay as they are):

- ``no events``: the step keeps what the Trainer promises without plugins (inputs and
  targets read through ``input_key``/``target_key``, the batch size counted, ``loss_fn``,
  each loss kept for the epoch's mean and the finite checks) but fires no events, so it
  skips the tests of the per-step events, the forward/loss wrappers that name the
  failing step, and the branches for precision, accumulation and clipping;
- ``bare``: the plain loop's step (tuple unpacking, ``F.cross_entropy``) plus the loss
  record and the clock, i.e. what any loop that checks its loss and can resume pays.

Neither is an option of the Trainer: they measure what the plugin plumbing and the
batch-key and loss-function indirection cost, each over the step below it. Before
timing, every variant trains a few hundred steps and must end with weights bitwise
equal to the plain loop's, so all four do the same maths.

    python benchmarks/trainer_overhead_breakdown.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from trainer_overhead import STEPS, make_batches, make_model, time_plain_loop

from loom import Trainer
from loom.trainer.batch import batch_size, get_batch_item
from loom.trainer.metrics import check_losses_are_finite


class NoEventsTrainer(Trainer):
    """The Trainer's step without plugin events (fp32, no accumulation, no clipping)."""

    def _train_batch(self, batch):
        state = self.state
        state.batch = batch
        inputs = get_batch_item(batch, state.input_key)
        num_samples = batch_size(inputs)
        for optimizer in state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        state.outputs = state.model(inputs)
        loss = state.loss = self.loss_fn(state.outputs, get_batch_item(batch, state.target_key))
        loss.backward()
        state.train_losses.update(loss.detach(), num_samples)
        for optimizer in state.optimizers:
            optimizer.step()
        timestamp = state.timestamp
        timestamp.batch += 1
        timestamp.batch_in_epoch += 1
        timestamp.samples += num_samples
        if timestamp.batch % self.finite_check_interval == 0:
            check_losses_are_finite(state)


class BareStepTrainer(Trainer):
    """The plain loop's step, plus the loss record, the finite checks and the clock."""

    def _train_batch(self, batch):
        state = self.state
        inputs, targets = batch
        for optimizer in state.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss = state.loss = F.cross_entropy(state.model(inputs), targets)
        loss.backward()
        state.train_losses.update(loss.detach(), len(inputs))
        for optimizer in state.optimizers:
            optimizer.step()
        timestamp = state.timestamp
        timestamp.batch += 1
        timestamp.batch_in_epoch += 1
        timestamp.samples += len(inputs)
        if timestamp.batch % self.finite_check_interval == 0:
            check_losses_are_finite(state)


VARIANTS: dict[str, type[Trainer]] = {
    "loom Trainer": Trainer,
    "no events": NoEventsTrainer,
    "bare step": BareStepTrainer,
}


def fit_variant(trainer_class: type[Trainer], batches, steps: int) -> tuple[float, torch.nn.Module]:
    model, optimizer = make_model()
    trainer = trainer_class(
        model, batches, max_duration=f"{steps}ba", optimizers=optimizer, device="cpu",
        cpu_threads=1,  # the plain loop's one thread
    )  # fmt: skip
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start, model


def plain_weights(batches, steps: int) -> torch.nn.Module:
    model, optimizer = make_model()
    for step in range(steps):
        inputs, targets = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model


def check_same_maths(batches, steps: int = 300) -> None:
    expected = plain_weights(batches, steps).state_dict()
    for name, trainer_class in VARIANTS.items():
        _, model = fit_variant(trainer_class, batches, steps)
        for key, value in model.state_dict().items():
            if not torch.equal(value, expected[key]):
                raise SystemExit(f"{name}: {key} differs from the plain loop's after {steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=31)
    args = parser.parse_args()
    torch.set_num_threads(1)
    batches = make_batches()
    check_same_maths(batches)
    runs: dict[str, Callable[[], float]] = {
        name: (lambda trainer_class=trainer_class: fit_variant(trainer_class, batches, STEPS)[0])
        for name, trainer_class in VARIANTS.items()
    }
    for run in runs.values():
        run()  # warm-up
    # One chain: plain, then each variant, then plain again, ...; each variant's time is
    # divided by the mean of the plain runs that open and close its group. The order
    # inside a group rotates, so that no variant always runs right after the plain loop.
    plain_times = [time_plain_loop(batches)]
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for repetition in range(args.repeats):
        order = names[repetition % len(names) :] + names[: repetition % len(names)]
        group = {name: runs[name]() for name in order}
        plain_times.append(time_plain_loop(batches))
        baseline = (plain_times[-2] + plain_times[-1]) / 2
        for name, seconds in group.items():
            times[name].append(seconds)
            ratios[name].append(seconds / baseline)
    print(f"steps per run: {STEPS}, repetitions: {args.repeats}, torch {torch.__version__}")
    print(f"{'plain loop':13}: {statistics.median(plain_times) / STEPS * 1e6:7.1f} us/step")
    for name in runs:
        quartiles = statistics.quantiles(ratios[name], n=4)
        print(
            f"{name:13}: {statistics.median(times[name]) / STEPS * 1e6:7.1f} us/step, "
            f"/ plain {statistics.median(ratios[name]):.3f} "
            f"(quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f})"
        )


if __name__ == "__main__":
    main()
