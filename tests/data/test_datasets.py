import pickle
import struct
import sys

import numpy as np
import pytest
import torch

from loom.data import cifar10, cifar100, digits, fashion_mnist, image_folder, mnist, synthetic


def test_digits_is_a_fixed_split_of_real_images():
    train, test = digits("train"), digits("test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.inputs.shape == (1437, 1, 8, 8)
    assert train.inputs.dtype == torch.float32
    assert train.classes == [str(i) for i in range(10)]
    assert set(test.targets.tolist()) == set(range(10))
    # standardized by the training split
    assert abs(train.inputs.mean().item()) < 1e-5
    assert train.inputs.std().item() == pytest.approx(1.0, abs=1e-3)
    # the same split on every call: no image of the test split is in the training split
    again = digits("test")
    assert torch.equal(again.inputs, test.inputs)
    train_rows = {row.numpy().tobytes() for row in train.inputs}
    assert sum(row.numpy().tobytes() in train_rows for row in test.inputs) <= 5  # duplicates


def test_digits_without_scikit_learn_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r"python3 -m pip install scikit-learn"):
        digits()


def test_synthetic_splits_share_centers_not_samples():
    train = synthetic(num_samples=64, num_classes=4, shape=[3], noise=0.0)
    test = synthetic("test", num_samples=64, num_classes=4, shape=[3], noise=0.0)
    for data in (train, test):  # without noise, every input is its class's center
        for target in range(4):
            rows = data.inputs[data.targets == target]
            assert torch.equal(rows, rows[:1].expand_as(rows))
    centers = {
        tuple(x.tolist()): y.item() for x, y in zip(train.inputs, train.targets, strict=True)
    }
    assert all(
        centers[tuple(x.tolist())] == y.item()
        for x, y in zip(test.inputs, test.targets, strict=True)
    )
    assert not torch.equal(train.targets, test.targets)
    with pytest.raises(ValueError, match=r"shape=\[0\] must be a list of positive ints"):
        synthetic(shape=[0])


def write_cifar(root, folder, files, label_key, names_key, names, meta):
    directory = root / folder
    directory.mkdir(parents=True)
    generator = np.random.default_rng(0)
    for index, name in enumerate(files):
        batch = {
            b"data": generator.integers(0, 256, (4, 3072), dtype=np.uint8),
            label_key: [index % len(names), 1, 0, 1],
        }
        (directory / name).write_bytes(pickle.dumps(batch))
    (directory / meta).write_bytes(pickle.dumps({names_key: [n.encode() for n in names]}))


def test_cifar10_reads_the_python_archive_layout(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar(
        tmp_path,
        "cifar-10-batches-py",
        files,
        b"labels",
        b"label_names",
        ["airplane", "automobile"],
        "batches.meta",
    )
    train = cifar10(str(tmp_path), "train", random_crop_padding=4, horizontal_flip=True)
    test = cifar10(str(tmp_path), "test", normalize=False)
    assert (len(train), len(test)) == (20, 4)
    assert train.classes == ["airplane", "automobile"]
    image, label = test[1]
    assert image.shape == (3, 32, 32)
    assert label == 1
    assert 0.0 <= image.min() <= image.max() <= 1.0
    assert train[0][0].shape == (3, 32, 32)


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar(
        tmp_path,
        "cifar-100-python",
        ["train", "test"],
        b"fine_labels",
        b"fine_label_names",
        ["apple", "bee", "cat"],
        "meta",
    )
    test = cifar100(str(tmp_path), "test")
    assert test.classes == ["apple", "bee", "cat"]
    assert [test[i][1] for i in range(4)] == [1, 1, 0, 1]


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar(
        tmp_path,
        "cifar-100-python",
        ["train", "test"],
        b"fine_labels",
        b"fine_label_names",
        ["a"],
        "meta",
    )

    class Exploit:
        def __reduce__(self):
            return (print, ("hacked",))

    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(
        ValueError, match=r"not a readable CIFAR data file: refusing builtins\.print"
    ):
        cifar100(str(tmp_path), "test")


def test_missing_files_say_where_to_put_what(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"dataset 'cifar10': cifar-10-batches-py/"
        r"data_batch_1, .* not found under root .* put the extracted "
        r"cifar-10-python\.tar\.gz",
    ):
        cifar10(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"dataset 'mnist': MNIST/raw/train-images"):
        mnist(str(tmp_path))
    with pytest.raises(
        FileNotFoundError,
        match=r"no class folders in .*train.* one subfolder "
        r"per class",
    ):
        image_folder(str(tmp_path))


def write_idx(root, folder, prefix, images, labels):
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    count = len(labels)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 0x801, count) + bytes(labels)
    )


@pytest.mark.parametrize(("load", "folder"), [(mnist, "MNIST"), (fashion_mnist, "FashionMNIST")])
def test_mnist_style_sets_read_idx_files(tmp_path, load, folder):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    images[1] = 255
    write_idx(tmp_path, folder, "train", images, [3, 1, 4])
    write_idx(tmp_path, folder, "t10k", images[:2], [5, 9])
    train, test = load(str(tmp_path), "train", random_crop_padding=2), load(str(tmp_path), "test")
    assert (len(train), len(test)) == (3, 2)
    (black, _), (white, label) = test[0], test[1]
    assert white.shape == (1, 28, 28)
    assert label == 9
    assert (white > black).all()


def test_image_folder_reads_one_folder_per_class(tmp_path):
    from PIL import Image

    for name, color in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (20, 12), color).save(folder / "a.png")
    data = image_folder(str(tmp_path), image_size=8, random_resized_crop=True, horizontal_flip=True)
    assert data.classes == ["cats", "dogs"]
    image, label = data[1]
    assert image.shape == (3, 8, 8)
    assert label == 1
