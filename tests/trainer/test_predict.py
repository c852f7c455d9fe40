"""Trainer.predict: every sample's outputs in dataset order, in one process and gathered
from two under torchrun; the model's mode restored; no event fired."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from loom import Trainer
from loom.trainer import Callback, Event
from tests.conftest import TWO_PROCESS_TORCHRUN

sys.path.insert(0, str(Path(__file__).parent))
import predict_job

INPUTS = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
DATA = TensorDataset(INPUTS, torch.arange(10))


def make_trainer(model=None, **kwargs):
    model = model or torch.nn.Linear(4, 3)
    return Trainer(
        model,
        [],  # nothing trains: predict needs no training data
        max_duration="1ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1),
        device="cpu",
        **kwargs,
    )


def expected(trainer, inputs=INPUTS):
    with torch.no_grad():
        return trainer.state.model(inputs)


@pytest.mark.parametrize(
    "loader",
    [
        DataLoader(DATA, batch_size=3),
        DataLoader(DATA, batch_size=3, shuffle=True),
        DataLoader(DATA, batch_size=4, sampler=DistributedSampler(DATA, 1, 0, seed=5)),
    ],
    ids=["in_order", "shuffled", "distributed_sampler"],
)
def test_rows_are_in_the_datasets_order(loader):
    trainer = make_trainer()
    torch.testing.assert_close(trainer.predict(loader), expected(trainer))


def test_a_list_of_batches_is_read_in_its_own_order():
    trainer = make_trainer()
    batches = [(INPUTS[6:], None), (INPUTS[:6], None)]  # no targets needed
    rows = trainer.predict(batches)
    torch.testing.assert_close(rows, expected(trainer, torch.cat([INPUTS[6:], INPUTS[:6]])))


def test_the_three_outputs():
    trainer = make_trainer()
    loader = DataLoader(DATA, batch_size=4)
    logits = trainer.predict(loader)
    probabilities = trainer.predict(loader, output="probabilities")
    classes = trainer.predict(loader, output="classes")
    assert logits.shape == probabilities.shape == (10, 3)
    assert classes.shape == (10,)
    assert (probabilities.dtype, classes.dtype) == (torch.float32, torch.int64)
    torch.testing.assert_close(probabilities, expected(trainer).softmax(dim=1))
    assert torch.equal(classes, expected(trainer).argmax(dim=1))
    assert logits.device == torch.device("cpu")
    assert not logits.requires_grad


def test_bf16_gives_the_models_outputs_at_that_precision_and_float_probabilities():
    trainer = make_trainer(precision="bf16")
    loader = DataLoader(DATA, batch_size=4)
    assert trainer.predict(loader).dtype == torch.bfloat16
    assert trainer.predict(loader, "probabilities").dtype == torch.float32


def test_the_model_predicts_in_eval_mode_and_goes_back_to_its_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3)
    )
    trainer = make_trainer(model)
    loader = DataLoader(DATA, batch_size=4)
    model.train()
    rows = trainer.predict(loader)
    assert model.training
    model.eval()
    torch.testing.assert_close(rows, expected(trainer))  # no dropout in the prediction
    trainer.predict(loader)
    assert not model.training


class DictSamples(Dataset):
    """Samples as dicts, inputs at "pixels" and no targets."""

    def __len__(self):
        return len(INPUTS)

    def __getitem__(self, index):
        return {"pixels": INPUTS[index], "id": index}


def test_a_dict_batch_gives_its_inputs_at_the_runs_input_key():
    trainer = make_trainer(input_key="pixels", target_key="label")
    rows = trainer.predict(DataLoader(DictSamples(), batch_size=4, shuffle=True))
    torch.testing.assert_close(rows, expected(trainer))
    other = make_trainer(input_key="image")
    with pytest.raises(KeyError, match=r"'image' is not in the dict batch") as error:
        other.predict(DataLoader(DictSamples(), batch_size=4))
    assert "reading the inputs (input_key) at batch 1 of predict" in error.value.__notes__


class EveryEvent(Callback):
    def __init__(self):
        self.seen = []
        for event in Event:
            setattr(self, event.value, lambda state, event=event: self.seen.append(event))


def test_predict_fires_no_event_and_changes_no_state():
    recorder = EveryEvent()
    trainer = make_trainer(callbacks=[recorder])
    recorder.seen.clear()  # init
    before = dict(vars(trainer.state))
    trainer.predict(DataLoader(DATA, batch_size=4))
    assert recorder.seen == []
    assert vars(trainer.state) == before
    assert trainer.state.metrics == {}
    assert trainer.state.reliability is None


def test_mistakes_are_named():
    trainer = make_trainer()
    loader = DataLoader(DATA, batch_size=4)
    with pytest.raises(ValueError, match=r"output='argmax' is not one of logits, "):
        trainer.predict(loader, output="argmax")
    with pytest.raises(TypeError, match=r"dataloader must be an iterable of batches"):
        trainer.predict(INPUTS)
    with pytest.raises(ValueError, match=r"the DataLoader has drop_last=True, so the last"):
        trainer.predict(DataLoader(DATA, batch_size=4, drop_last=True))
    sampler = DistributedSampler(DATA, 1, 0, drop_last=True)
    with pytest.raises(ValueError, match=r"its DistributedSampler has drop_last=True"):
        trainer.predict(DataLoader(DATA, batch_size=4, sampler=sampler))
    with pytest.raises(ValueError, match=r"DistributedSampler is rank 1 of 2, but this process"):
        trainer.predict(DataLoader(DATA, batch_size=4, sampler=DistributedSampler(DATA, 2, 1)))
    with pytest.raises(ValueError, match=r"the loader yielded no batches"):
        trainer.predict(DataLoader(TensorDataset(INPUTS[:0]), batch_size=4))


def test_outputs_that_are_not_class_scores_are_named():
    class Scores(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Linear(1, 1)  # something for the optimizer
            self.as_dict = False

        def forward(self, inputs):
            scores = inputs.sum(dim=1)
            return {"scores": scores} if self.as_dict and len(inputs) == 2 else scores

    model = Scores()
    trainer = make_trainer(model)
    loader = DataLoader(DATA, batch_size=4)
    torch.testing.assert_close(trainer.predict(loader), INPUTS.sum(dim=1))  # any tensors
    with pytest.raises(ValueError, match=r"output='classes' reads class scores along dimen"):
        trainer.predict(loader, output="classes")
    model.as_dict = True
    with pytest.raises(TypeError, match=r"at batch 3 its forward returned a dict"):
        trainer.predict(loader)  # 10 samples: the third batch holds 2


def test_an_error_in_the_forward_names_the_batch():
    trainer = make_trainer()
    loader = DataLoader(TensorDataset(torch.randn(6, 5)), batch_size=4)  # 5 features, not 4
    with pytest.raises(RuntimeError) as error:
        trainer.predict(loader)
    assert error.value.__notes__ == [
        "raised by the model's forward at batch 1 of predict, inputs float32 (4, 5) on cpu"
    ]


def two_rows_per_sample(samples):
    """A collate_fn that gives each sample two rows (itself and its flip, as test-time
    augmentation might): predict cannot tell which row is which sample's."""
    inputs = torch.stack([inputs for inputs, _ in samples])
    return torch.cat([inputs, inputs.flip(1)]), None


def all_but_the_last_sample(samples):
    inputs = torch.stack([inputs for inputs, _ in samples])
    return inputs[:-1], None


@pytest.mark.parametrize(
    ("loader", "rows"),
    [
        (DataLoader(DATA, batch_size=4, collate_fn=two_rows_per_sample), 20),
        (DataLoader(DATA, batch_size=4, shuffle=True, collate_fn=two_rows_per_sample), 20),
        (
            DataLoader(
                DATA,
                batch_size=4,
                sampler=DistributedSampler(DATA, 1, 0, shuffle=False),
                collate_fn=two_rows_per_sample,
            ),
            20,
        ),
        (DataLoader(DATA, batch_size=4, collate_fn=all_but_the_last_sample), 7),
        (DataLoader(DATA, batch_size=4, shuffle=True, collate_fn=all_but_the_last_sample), 7),
    ],
    ids=["added_in_order", "added_shuffled", "added_distributed", "dropped", "dropped_shuffled"],
)
def test_a_collate_fn_that_adds_or_drops_rows_is_refused(loader, rows):
    # Rows the sampler did not read would otherwise be returned (in order), or given to
    # the wrong samples (shuffled: the loader read in order, the first rows kept).
    with pytest.raises(ValueError, match=r"the loader's batches hold") as error:
        make_trainer().predict(loader)
    assert str(error.value) == (
        f"predict(dataloader): the loader's batches hold {rows} rows where its sampler read "
        "10 samples; predict takes one row per sample, so each row's sample would be "
        "unknown: does its collate_fn add or drop rows?"
    )


class BatchMean(torch.nn.Module):
    """One row for the whole batch: the mean of each sample's scores."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, inputs):
        if isinstance(inputs, dict):
            inputs = inputs["pixels"] + inputs["noise"]
        return self.linear(inputs).mean(dim=0, keepdim=True)


def test_outputs_without_a_row_per_input_sample_name_the_batch_and_both_counts():
    trainer = make_trainer(BatchMean())
    for loader in (DataLoader(DATA, batch_size=4), [(INPUTS[:4], None)]):
        with pytest.raises(ValueError, match=r"a row of outputs per sample") as error:
            trainer.predict(loader)
        assert str(error.value) == (
            "predict takes a row of outputs per sample, but at batch 1 the model's forward "
            "returned 1 row for 4 samples: outputs float32 (1, 3) on cpu for inputs "
            "float32 (4, 4) on cpu."
        )
    batches = [
        ({"pixels": INPUTS[:1], "noise": INPUTS[1:2]},),  # one sample: one row is right
        ({"pixels": INPUTS[:3], "noise": INPUTS[3:6]},),
    ]
    with pytest.raises(ValueError, match=r"at batch 2 the model's forward returned 1 row for 3 "):
        trainer.predict(batches)  # a dict of inputs: the samples its tensors share


@pytest.mark.gpu
def test_a_cuda_run_predicts_on_the_gpu_and_returns_cpu_rows():
    trainer = make_trainer(torch.nn.Linear(4, 3), device="cuda")
    rows = trainer.predict(DataLoader(DATA, batch_size=4, shuffle=True))
    assert rows.device == torch.device("cpu")
    torch.testing.assert_close(rows, expected(trainer, INPUTS.cuda()).cpu())


@pytest.mark.slow
def test_two_ranks_gather_every_sample_once_in_the_datasets_order(tmp_path):
    started = time.monotonic()
    command = [*TWO_PROCESS_TORCHRUN, str(Path(predict_job.__file__)), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert [saw["world_size"] for saw in ranks] == [2, 2]
    with torch.no_grad():
        alone = predict_job.model()(predict_job.dataset().tensors[0])
    for name, rows in ranks[0]["predicted"].items():
        assert torch.equal(rows, ranks[1]["predicted"][name]), name  # every rank holds all
        if name == "classes":
            assert torch.equal(rows, alone.argmax(dim=1))
        else:
            torch.testing.assert_close(rows, alone, msg=name)  # 21 rows: the repeat left out
    assert time.monotonic() - started < 60
