"""MemoryLoader: a DataLoader's batches bit for bit without augmentation, batched crops
and flips that match torchvision's, exact mid-epoch resume, and torchrun sharding."""

import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset

from loom import Trainer
from loom.algorithms import MixUp
from loom.callbacks import Checkpoint
from loom.data import AsDict, digits
from loom.data.batch_transforms import crop_and_flip, draw_crops_and_flips
from loom.data.labelled import LabelledTensors
from loom.data.memory_loader import MemoryLoader
from tests.conftest import TWO_PROCESS_TORCHRUN


@pytest.fixture(scope="module")
def images():
    return digits("train")


def epochs(loader, count=2):
    return [batch for _ in range(count) for batch in loader]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        items = one.items() if isinstance(one, dict) else enumerate(one)
        for key, value in items:
            assert torch.equal(value, other[key]), key


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [True, False])
def test_without_augmentation_the_batches_and_generator_are_a_dataloaders(
    images, shuffle, drop_last
):
    torch.manual_seed(0)
    expected = epochs(DataLoader(images, batch_size=100, shuffle=shuffle, drop_last=drop_last))
    after_dataloader = torch.rand(3)
    torch.manual_seed(0)
    loader = MemoryLoader(images, batch_size=100, shuffle=shuffle, drop_last=drop_last)
    got = epochs(loader)
    assert_same_batches(got, expected)
    assert len(loader) == len(expected) // 2
    assert torch.equal(torch.rand(3), after_dataloader)  # the generator moved as it did


def test_dict_samples_make_dict_batches_as_the_default_collate(images):
    named = AsDict(images, keys=["image", "label"])
    torch.manual_seed(1)
    expected = epochs(DataLoader(named, batch_size=64, shuffle=True))
    torch.manual_seed(1)
    assert_same_batches(epochs(MemoryLoader(named, batch_size=64, shuffle=True)), expected)


def test_a_sampler_decides_the_order_as_in_a_dataloader(images):
    def sampler():
        return DistributedSampler(images, num_replicas=3, rank=2, shuffle=True, seed=5)

    expected, got = [], []
    for loader, out in ((DataLoader(images, 50, sampler=sampler()), expected),
                        (MemoryLoader(images, 50).with_sampler(sampler()), got)):  # fmt: skip
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.extend(loader)
    assert_same_batches(got, expected)


def test_an_empty_shard_s_sampler_is_kept(images):
    one = LabelledTensors(images.inputs[:1], images.targets[:1], images.classes)
    empty = DistributedSampler(one, num_replicas=2, rank=1, shuffle=False, drop_last=True)
    loader = MemoryLoader(one, 8, shuffle=True, sampler=empty)
    assert loader.sampler is empty
    assert (len(loader), list(loader)) == (0, [])


def test_a_batch_is_its_own_copy(images):
    loader = MemoryLoader(images, batch_size=8)
    first = next(iter(loader))
    first[0].fill_(7.0)
    assert not torch.equal(next(iter(loader))[0], first[0])
    assert torch.equal(next(iter(loader))[0], images.inputs[:8])


def test_crops_and_flips_are_torchvisions_pad_crop_and_flip():
    from torchvision.transforms.v2 import functional as TF

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(16, 3, 7, 5, generator=generator)
    offsets, flips = draw_crops_and_flips(16, 2, True, generator)
    assert 0 < int(flips.sum()) < 16
    assert set(offsets.flatten().tolist()) <= set(range(5))
    got = crop_and_flip(images, 2, offsets, flips, fill=0.5)
    for image, (row, column), flip, crop in zip(images, offsets, flips, got, strict=True):
        padded = TF.pad(image, [2], fill=0.5)
        expected = TF.crop(padded, int(row), int(column), 7, 5)
        assert torch.equal(crop, TF.horizontal_flip(expected) if flip else expected)


def test_augmentation_repeats_with_the_seed_and_changes_each_epoch(images):
    def run():
        torch.manual_seed(3)
        loader = MemoryLoader(images, 64, shuffle=True, random_crop_padding=1, horizontal_flip=True)
        return epochs(loader)

    first, again = run(), run()
    assert_same_batches(first, again)
    torch.manual_seed(3)
    plain = epochs(MemoryLoader(images, 64, shuffle=True))
    assert_same_batches([b[1:] for b in first], [b[1:] for b in plain])  # labels untouched
    assert not torch.equal(first[0][0], plain[0][0])
    half = len(first) // 2
    assert not torch.equal(first[0][0], first[half][0])


def test_dict_batches_augment_their_input_key(images):
    named = AsDict(images, keys=["image", "label"])
    loader = MemoryLoader(named, 32, input_key="image", horizontal_flip=True)
    batch = next(iter(loader))
    flipped = (batch["image"] == images.inputs[:32].flip(-1)).flatten(1).all(1)
    kept = (batch["image"] == images.inputs[:32]).flatten(1).all(1)
    assert (flipped | kept).all()
    assert flipped.any()
    assert kept.any()
    assert torch.equal(batch["label"], images.targets[:32])


class Strings(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return "text", index


class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2)


def empty():
    return LabelledTensors(torch.zeros(0, 2), torch.zeros(0), [])


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: MemoryLoader(Strings()),
            TypeError,
            r"but item 0 of the dataset's samples collate into a tuple of str; give the",
        ),
        (lambda: MemoryLoader(Stream()), TypeError, r"a Stream has none \(a stream cannot be"),
        (lambda: MemoryLoader(empty()), ValueError, r"an empty dataset: there is nothing"),
        (lambda: MemoryLoader(digits(), batch_size=0), ValueError, r"batch_size=0 must be an"),
        (
            lambda: MemoryLoader(digits(), random_crop_padding=-1),
            ValueError,
            r"random_crop_padding=-1 must be an int >= 0",
        ),
        (
            lambda: MemoryLoader(digits(), input_key=1, horizontal_flip=True),
            ValueError,
            r"images \(N, C, H, W\) of floats, but input_key=1 holds torch\.int64 of shape "
            r"\(1437,\)",
        ),
        (
            lambda: MemoryLoader(AsDict(digits(), ["x", "y"]), input_key="i", horizontal_flip=True),
            ValueError,
            r"input_key='i': the samples hold no such item \(they have \['x', 'y'\]\)",
        ),
    ],
    ids=["strings", "stream", "empty", "batch size", "padding", "not images", "missing key"],
)
def test_what_it_cannot_hold_is_one_clear_error(build, error, message):
    with pytest.raises(error, match=message):
        build()


# In a run


def trainer(images, folder, load_path=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    loader = MemoryLoader(images, 100, shuffle=True, random_crop_padding=1, horizontal_flip=True)
    return Trainer(
        model,
        loader,
        max_duration="3ep",
        optimizers=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
        algorithms=[MixUp(alpha=0.4)],
        callbacks=[Checkpoint(folder, interval="5ba", keep_last=None)],
        load_path=load_path,
        device="cpu",
        seed=0,
    )


def test_an_augmented_run_resumed_mid_epoch_ends_bitwise_as_the_uninterrupted(images, tmp_path):
    whole = trainer(images, tmp_path / "whole")
    whole.fit()
    # 15 batches an epoch: batch 20 is in the middle of the second.
    resumed = trainer(images, tmp_path / "resumed", tmp_path / "whole" / "epoch1-batch20.pt")
    assert resumed.state.timestamp.batch_in_epoch == 5
    resumed.fit()
    for key, value in whole.state.model.state_dict().items():
        assert torch.equal(resumed.state.model.state_dict()[key], value), key


@pytest.mark.gpu
def test_on_cuda_it_holds_the_data_there_and_batches_as_on_the_cpu(images):
    cuda = torch.device("cuda")
    torch.manual_seed(0)
    on_cpu = epochs(MemoryLoader(images, 64, shuffle=True))
    torch.manual_seed(0)
    on_cuda = epochs(MemoryLoader(images, 64, shuffle=True, device=cuda))
    assert on_cuda[0][0].device.type == "cuda"
    assert_same_batches([[t.cpu() for t in batch] for batch in on_cuda], on_cpu)
    augmented = MemoryLoader(images, 64, device=cuda, random_crop_padding=1, horizontal_flip=True)
    (inputs, targets), *_ = augmented
    assert (inputs.device.type, inputs.shape) == ("cuda", (64, 1, 8, 8))
    assert torch.equal(targets.cpu(), images.targets[:64])


SCRIPT = Path(__file__).with_name("memory_loader_job.py")


@pytest.mark.slow
def test_under_torchrun_it_shards_as_a_dataloader_and_predicts_in_order(tmp_path):
    command = [*TWO_PROCESS_TORCHRUN, str(SCRIPT), str(tmp_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for saved in ranks:
        for key, value in saved["dataloader"].items():
            assert torch.equal(saved["memory"][key], value), key
        assert saved["metrics"]["memory"] == saved["metrics"]["dataloader"]
        assert torch.equal(saved["predictions"]["memory"], saved["predictions"]["dataloader"])
    assert ranks[0]["predictions"]["memory"].shape == (360, 10)
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # each its share
