"""AsDict: tuple samples become mappings, for jobs whose models and plugins read by key."""

import pytest
import torch
from torch.utils.data import DataLoader

from loom.data import AsDict, synthetic


def test_samples_become_mappings_and_batches_dicts():
    data = synthetic(num_samples=6, num_classes=3, shape=[2])
    named = AsDict(data, keys=["image", "label"])
    assert len(named) == 6
    assert named.classes == data.classes
    assert torch.equal(named.targets, data.targets)
    batch = next(iter(DataLoader(named, batch_size=4)))
    assert sorted(batch) == ["image", "label"]
    assert torch.equal(batch["label"], data.targets[:4])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("image", r"keys='image' must be a list of distinct non-empty strings"),
        (["x", "x"], r"must be a list of distinct"),
        (["x"], r"keys=\['x'\] names 1 items, but the dataset's samples are a 2-item tuple"),
    ],
)
def test_keys_that_do_not_fit_the_samples_are_named(keys, message):
    with pytest.raises(ValueError, match=message):
        AsDict(synthetic(num_samples=2, shape=[2]), keys=keys)
