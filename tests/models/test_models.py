import pytest
import torch

from loom.models import MLP, CifarResNet, SmallCNN, torchvision_model


@pytest.mark.parametrize(
    ("model", "inputs"),
    [
        (SmallCNN(num_classes=10, in_channels=1, width=4), torch.randn(2, 1, 8, 8)),
        (SmallCNN(num_classes=3, in_channels=3, width=4), torch.randn(2, 3, 32, 32)),
        (
            MLP(num_classes=10, in_features=64, hidden_sizes=[8, 8], dropout=0.1),
            torch.randn(2, 1, 8, 8),
        ),
        (CifarResNet(num_classes=10, depth=18, width=4), torch.randn(2, 3, 32, 32)),
        (CifarResNet(num_classes=100, depth=50, width=4), torch.randn(2, 3, 32, 32)),
    ],
    ids=["cnn-8x8", "cnn-32x32", "mlp", "resnet18", "resnet50"],
)
def test_models_map_images_to_class_logits_and_learn(model, inputs):
    logits = model(inputs)
    assert logits.shape == (2, model.state_dict()[next(reversed(model.state_dict()))].shape[0])
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_cifar_resnet_keeps_the_32x32_resolution_in_its_stem():
    model = CifarResNet(num_classes=10, width=4)
    assert model.stem(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 0
    blocks = {18: 8, 34: 16, 50: 16, 101: 33}
    for depth, count in blocks.items():
        assert len(CifarResNet(num_classes=2, depth=depth, width=2).stages) == count


def test_torchvision_models_by_name():
    assert torchvision_model("resnet18", num_classes=7).fc.out_features == 7
    with pytest.raises(
        ValueError,
        match=r"architecture='resnet19' is not a torchvision "
        r"classification model\. Did you mean resnet18",
    ):
        torchvision_model("resnet19", num_classes=7)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SmallCNN(num_classes=0), r"num_classes=0 must be a positive int"),
        (lambda: SmallCNN(num_classes=2, dropout=1.0), r"dropout=1\.0 must be a probability"),
        (
            lambda: MLP(num_classes=2, in_features=4, hidden_sizes=[8, -1]),
            r"hidden_sizes\[1\]=-1 must be a positive int",
        ),
        (lambda: CifarResNet(num_classes=2, depth=20), r"depth=20 must be one of \[18, 34, 50"),
    ],
)
def test_bad_arguments_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()
