from collections import namedtuple
from dataclasses import dataclass
from types import MappingProxyType

import pytest
import torch

from loom.trainer import (
    get_batch_item,
    move_to_device,
    set_batch_item,
    split_batch,
    validate_batch_key,
)

Pair = namedtuple("Pair", ["inputs", "targets"])


@dataclass
class ObjectBatch:
    inputs: object
    targets: object


def test_int_key_reads_and_rebuilds_tuples_and_lists():
    batch = ("x", "y")
    assert get_batch_item(batch, 1) == "y"
    assert get_batch_item(batch, -1) == "y"
    assert set_batch_item(batch, 1, "z") == ("x", "z")
    assert batch == ("x", "y"), "the caller's tuple is untouched"
    as_list = ["x", "y"]
    rebuilt = set_batch_item(as_list, 0, "w")
    assert rebuilt == ["w", "y"]
    assert as_list == ["x", "y"], "the caller's list is untouched"


def test_int_key_rebuilds_named_tuples_as_their_type():
    rebuilt = set_batch_item(Pair("x", "y"), 1, "z")
    assert type(rebuilt) is Pair
    assert rebuilt.targets == "z"
    assert get_batch_item(rebuilt, 0) == "x"


def test_str_key_reads_mapping_keys_and_copies_on_write():
    batch = {"image": 1, "label": 2}
    assert get_batch_item(batch, "label") == 2
    rebuilt = set_batch_item(batch, "label", 3)
    assert rebuilt == {"image": 1, "label": 3}
    assert batch == {"image": 1, "label": 2}


def test_str_key_reads_and_sets_attributes_of_other_objects():
    batch = ObjectBatch("x", "y")
    assert get_batch_item(batch, "targets") == "y"
    assert set_batch_item(batch, "targets", "z") is batch
    assert batch.targets == "z"


def test_getter_setter_pair():
    key = (
        lambda batch: batch["nested"][1],
        lambda batch, value: {"nested": (batch["nested"][0], value)},
    )
    batch = {"nested": ("x", "y")}
    assert get_batch_item(batch, key) == "y"
    assert set_batch_item(batch, key, "z") == {"nested": ("x", "z")}


def test_out_of_range_position_names_key_and_type():
    with pytest.raises(
        IndexError, match=r"batch key 2 is out of range for a tuple batch of 2 items"
    ):
        get_batch_item(("x", "y"), 2)
    with pytest.raises(IndexError, match=r"batch key -3 is out of range for a list batch"):
        set_batch_item(["x", "y"], -3, "z")


def test_position_on_a_mapping_suggests_a_str_key():
    with pytest.raises(
        TypeError, match=r"batch key 1 is a position, but the batch is a dict.*str key"
    ):
        get_batch_item({"a": 1}, 1)
    with pytest.raises(TypeError, match=r"batch is a Tensor"):
        set_batch_item(torch.zeros(2), 0, 1)


def test_missing_mapping_key_lists_the_keys():
    with pytest.raises(
        KeyError,
        match=r"batch key 'labels' is not in the dict batch; its keys are \['image', 'label'\]",
    ):
        get_batch_item({"image": 1, "label": 2}, "labels")
    with pytest.raises(KeyError, match=r"'labels' is not in the dict batch"):
        set_batch_item({"image": 1, "label": 2}, "labels", 0)


def test_missing_attribute_names_key_and_type():
    with pytest.raises(
        KeyError, match=r"batch key 'labels' is not an attribute of the ObjectBatch batch"
    ):
        get_batch_item(ObjectBatch(1, 2), "labels")
    with pytest.raises(KeyError, match=r"'labels' is not an attribute of the ObjectBatch batch"):
        set_batch_item(ObjectBatch(1, 2), "labels", 0)


def test_read_only_mapping_cannot_be_set():
    with pytest.raises(
        TypeError, match=r"cannot set batch key 'a': the batch is a read-only mappingproxy"
    ):
        set_batch_item(MappingProxyType({"a": 1}), "a", 2)


@pytest.mark.parametrize("key", [1.0, None, True, (1, 2), (len,), b"x"])
def test_keys_of_no_accepted_form(key):
    with pytest.raises(
        TypeError,
        match=r"is not a batch key; expected an int .*, a str .* or a \(getter, setter\) pair",
    ):
        get_batch_item(("x", "y"), key)
    with pytest.raises(TypeError, match=r"is not a batch key"):
        set_batch_item(("x", "y"), key, 0)
    with pytest.raises(TypeError, match=r"target_key=.* is not a batch key"):
        validate_batch_key(key, "target_key")


def test_setter_that_returns_none_is_an_error():
    key = (lambda batch: batch[0], lambda batch, value: None)
    with pytest.raises(
        TypeError, match=r"the setter of batch key .* returned None for a list batch"
    ):
        set_batch_item([1, 2], key, 3)


def test_move_to_device_keeps_structure_and_tensors_already_there():
    tensor = torch.zeros(2)
    batch = {"a": (tensor, [tensor]), "b": Pair(tensor, "label")}
    moved = move_to_device(batch, torch.device("cpu"))
    assert moved["a"][0] is tensor
    assert moved["a"][1][0] is tensor
    assert type(moved["b"]) is Pair
    assert moved["b"].targets == "label"


def test_split_batch_splits_every_tensor_and_keeps_structure():
    batch = {"x": torch.arange(5), "pair": Pair(torch.arange(5) * 2, torch.arange(5) * 3)}
    parts = split_batch(batch, 2)
    assert [part["x"].tolist() for part in parts] == [[0, 1, 2], [3, 4]]
    assert [part["pair"].targets.tolist() for part in parts] == [[0, 3, 6], [9, 12]]
    assert all(type(part["pair"]) is Pair for part in parts)


def test_split_batch_errors():
    with pytest.raises(ValueError, match=r"shape \(2,\) into grad_accum=3 microbatches"):
        split_batch((torch.zeros(2),), 3)
    with pytest.raises(TypeError, match=r"found a ObjectBatch"):
        split_batch(ObjectBatch(torch.zeros(2), torch.zeros(2)), 2)
