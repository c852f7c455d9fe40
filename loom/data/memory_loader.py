"""A loader for datasets that fit in memory: the whole dataset as tensors on the device,
and each batch one indexed read of them, with random crops and flips done batched.

A DataLoader collates every batch from single samples in Python (and copies it to
the device); for digits, MNIST or CIFAR that is most of an epoch's time on a small
model. :class:`MemoryLoader` collates the dataset once, up front, and then only
indexes. It reads the dataset in its sampler's order and draws from the global
generator as a DataLoader does, so that without augmentation its batches are a
DataLoader's, bit for bit, and a run's exact resume and torchrun sharding (which give
the loader a ``DistributedSampler``) work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import RandomSampler, Sampler, SequentialSampler
from torch.utils.data.dataloader import default_collate

from loom.data.batch_transforms import crop_and_flip, draw_crops_and_flips
from loom.data.labelled import LabelledTensors

__all__ = ["MemoryLoader"]

_READ_CHUNK = 1024  # samples collated at a time while the dataset is read in


class MemoryLoader:
    """Batches of ``dataset``, held whole as tensors on ``device``.

    Each epoch takes the sampler's order (a fresh permutation from the global generator
    with ``shuffle``, as a DataLoader's) and yields batches of ``batch_size`` rows of the
    held tensors, in the structure the default collate gives the samples (a list for
    tuple samples, a dict for mapping samples). Every batch is a new tensor: changing
    one changes nothing held.

    ``random_crop_padding`` and ``horizontal_flip`` change the ``input_key`` item of
    each batch (images, ``N, C, H, W``) on the device, drawn from a generator seeded
    where a DataLoader seeds its workers: so an epoch's augmentation repeats when its
    order does, as on a resume. The padding is ``fill`` in the held values (0 is the
    mean of normalized images, where a per-sample crop before normalization pads black).

    Args:
        dataset: A map-style dataset with a length, whose samples the default collate
            makes into tensors (a tensor, or a tuple or mapping of tensors and numbers);
            read once, in order, with its own transforms.
        batch_size: Samples per batch.
        shuffle: A new order every epoch (a ``RandomSampler``); else the dataset's order.
        drop_last: Drop a last partial batch.
        device: Where the dataset is held and the batches are made.
        input_key: The batch item that the crops and flips change: an index into
            tuple samples, a key of mapping samples.
        random_crop_padding: Pad by this many pixels, then crop back to the original
            size at a random place; 0 for none.
        horizontal_flip: Flip half the images left to right.
        fill: The value of the padding.
        sampler: The order of the samples (overrides ``shuffle``); loom gives one when
            it shards the data under torchrun.

    Examples:
        >>> data = LabelledTensors(torch.arange(10.0)[:, None], torch.arange(10), ["a"])
        >>> loader = MemoryLoader(data, batch_size=4)
        >>> [inputs.flatten().tolist() for inputs, _ in loader]
        [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0]]
        >>> len(loader), len(MemoryLoader(data, batch_size=4, drop_last=True))
        (3, 2)
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        input_key: int | str = 0,
        random_crop_padding: int = 0,
        horizontal_flip: bool = False,
        fill: float = 0.0,
        sampler: Sampler | None = None,
    ):
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an int of at least 1.")
        if type(random_crop_padding) is not int or random_crop_padding < 0:
            raise ValueError(f"random_crop_padding={random_crop_padding!r} must be an int >= 0.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.input_key = input_key
        self.random_crop_padding = random_crop_padding
        self.horizontal_flip = horizontal_flip
        self.fill = fill
        if sampler is None:  # not `sampler or`: an empty shard's sampler is falsy
            sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self.collate_fn = default_collate  # how the held tensors were made from samples
        self._held = _held_on(dataset, self.device)
        if self.augments:
            _check_images(_item(self._held, input_key), input_key)

    @property
    def augments(self) -> bool:
        """Whether batches are cropped or flipped."""
        return bool(self.random_crop_padding or self.horizontal_flip)

    def with_sampler(self, sampler: Sampler) -> MemoryLoader:
        """This loader reading in ``sampler``'s order, the tensors held shared (what
        loom's torchrun sharding calls in place of rebuilding a DataLoader)."""
        loader = object.__new__(MemoryLoader)
        loader.__dict__.update(self.__dict__, sampler=sampler)
        return loader

    def __len__(self) -> int:
        samples = len(self.sampler)
        return samples // self.batch_size if self.drop_last else -(-samples // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        # A DataLoader's iterator draws its workers' base seed, then its sampler draws
        # its own: the same two draws here keep the global generator, and the order,
        # the same as a DataLoader's.
        base_seed = int(torch.empty((), dtype=torch.int64).random_().item())
        order = torch.as_tensor(list(self.sampler), dtype=torch.long, device=self.device)
        generator = None
        if self.augments:
            generator = torch.Generator(self.device).manual_seed(base_seed)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = _rows(self._held, order[start : start + self.batch_size])
            if generator is not None:
                batch = self._augmented(batch, generator)
            yield batch

    def _augmented(self, batch: Any, generator: torch.Generator) -> Any:
        images = _item(batch, self.input_key)
        offsets, flips = draw_crops_and_flips(
            len(images), self.random_crop_padding, self.horizontal_flip, generator
        )
        changed = crop_and_flip(images, self.random_crop_padding, offsets, flips, self.fill)
        if isinstance(batch, Mapping):
            return {**batch, self.input_key: changed}
        if isinstance(batch, list):
            batch[self.input_key] = changed  # the list is this batch's own
            return batch
        return changed


def _held_on(dataset: Any, device: torch.device) -> Any:
    """The whole dataset collated, on ``device``."""
    try:
        size = len(dataset)
    except TypeError:
        raise TypeError(
            f"MemoryLoader holds a dataset with a length; a {type(dataset).__name__} has none "
            "(a stream cannot be held: use the DataLoader)."
        ) from None
    if size == 0:
        raise ValueError("MemoryLoader got an empty dataset: there is nothing to hold.")
    if isinstance(dataset, LabelledTensors):  # already two tensors: no need to read samples
        return [dataset.inputs.to(device), dataset.targets.to(device)]
    chunks = [
        default_collate([dataset[index] for index in range(start, min(size, start + _READ_CHUNK))])
        for start in range(0, size, _READ_CHUNK)
    ]
    return _joined(chunks, device, "the samples")


def _joined(chunks: Sequence[Any], device: torch.device, where: str) -> Any:
    first = chunks[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(chunks).to(device)
    if isinstance(first, Mapping):
        return {key: _joined([c[key] for c in chunks], device, f"item {key!r}") for key in first}
    if isinstance(first, list | tuple) and not isinstance(first[0], str):
        return [
            _joined([c[index] for c in chunks], device, f"item {index}")
            for index in range(len(first))
        ]
    what = type(first).__name__
    if isinstance(first, list | tuple) and first:
        what = f"a {what} of {type(first[0]).__name__}"
    raise TypeError(
        f"MemoryLoader holds tensors, but {where} of the dataset's samples collate into "
        f"{what}; give the samples tensors or numbers there, or use the DataLoader."
    )


def _rows(held: Any, index: torch.Tensor) -> Any:
    if isinstance(held, torch.Tensor):
        return held.index_select(0, index)
    if isinstance(held, Mapping):
        return {key: _rows(value, index) for key, value in held.items()}
    return [_rows(value, index) for value in held]


def _item(batch: Any, key: int | str) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    try:
        return batch[key]
    except (KeyError, IndexError, TypeError):
        held = list(batch) if isinstance(batch, Mapping) else f"{len(batch)} items"
        raise ValueError(
            f"input_key={key!r}: the samples hold no such item (they have {held}); the crops "
            "and flips change the images there."
        ) from None


def _check_images(images: torch.Tensor, key: int | str) -> None:
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(
            f"random_crop_padding and horizontal_flip change images (N, C, H, W) of floats, "
            f"but input_key={key!r} holds {images.dtype} of shape {tuple(images.shape)}."
        )
