"""StochasticDepth: the residual branch of each block dropped at random in training."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from loom.functional import check_fraction
from loom.functional.checks import check_choice
from loom.trainer import Algorithm, State, changes, unwrap_model

__all__ = ["StochasticDepth"]

MODES = ("row", "batch")
SCHEDULES = ("linear", "uniform")
_LOOKS_FOR = (
    "the residual blocks of torchvision's ResNets (torchvision.models.resnet.BasicBlock and "
    "Bottleneck) and of loom's CifarResNet (loom.models.cifar_resnet)"
)


class StochasticDepth(Algorithm):
    """Trains each residual block as ``relu(d * branch(x) + shortcut(x))``, ``d`` a random
    0 or ``1 / (1 - rate)``; evaluates it as the plain block.

    At ``init`` each residual block of the model gets a
    ``torchvision.ops.StochasticDepth`` child, which multiplies its residual branch
    (not the shortcut) before the addition. In training it zeroes the branch with the
    block's drop rate, for each sample (``"row"``) or for the whole batch
    (``"batch"``), and scales the kept ones by ``1 / (1 - rate)``; in evaluation it
    keeps every branch as it is, so the model computes exactly what it did before.
    The blocks are those of torchvision's ResNets (``BasicBlock``, ``Bottleneck``) and
    of loom's ``CifarResNet``, found in the model inside any DistributedDataParallel
    wrapper.

    The model's parameters stay the same objects, and its ``state_dict`` keeps its
    keys: a checkpoint, or a run's ``model.pt``, loads into the plain model, and an
    optimizer built before keeps training the same parameters. The draws come from
    torch's generator, which the Trainer's ``seed`` seeds and checkpoints save.

    Args:
        drop_rate: The drop rate, in [0, 1): of the last block with ``"linear"``
            (Huang et al.: 0.5 for their 110-layer CIFAR ResNets), of every block
            with ``"uniform"``.
        mode: ``"row"``, each sample's branch dropped on its own (the "drop path" of
            torchvision's and timm's newer models); ``"batch"``, the whole batch's at
            once, as Huang et al. drop a block for a mini-batch.
        schedule: ``"linear"``: block ``l`` of ``L`` (from 1, input to output) drops
            at ``drop_rate * l / L``, as in the paper; ``"uniform"``: every block at
            ``drop_rate``.

    Attributes:
        blocks: The names of the blocks given stochastic depth, in the model's order
            (in the model inside any wrapper); empty before ``init``.
        rates: Their drop rates, in the same order.

    Raises:
        TypeError, ValueError: An argument of the wrong type or value.
        ValueError: At ``init``, a model with none of those blocks, or one given
            stochastic depth before.

    Examples:
        >>> import torch
        >>> from loom import Trainer
        >>> from loom.algorithms import StochasticDepth
        >>> from loom.models import CifarResNet
        >>> model = CifarResNet(num_classes=3, depth=18, width=4)
        >>> algorithm = StochasticDepth(drop_rate=0.2)
        >>> trainer = Trainer(model, [], max_duration="1ep", device="cpu", algorithms=[algorithm],
        ...                   optimizers=torch.optim.SGD(model.parameters(), lr=0.1))
        >>> algorithm
        StochasticDepth(drop_rate=0.2)
        >>> algorithm.blocks[:2], [round(rate, 3) for rate in algorithm.rates]
        (['stages.0', 'stages.1'], [0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2])
    """

    effects = (changes("model", at="init", how="drops residual branches"),)

    def __init__(
        self,
        drop_rate: float = 0.2,
        mode: Literal["row", "batch"] = "row",
        schedule: Literal["linear", "uniform"] = "linear",
    ):
        try:
            self.drop_rate = _checked_drop_rate(drop_rate)
            self.mode = check_choice(mode, "mode", MODES)
            self.schedule = check_choice(schedule, "schedule", SCHEDULES)
        except (TypeError, ValueError) as error:
            raise type(error)(f"StochasticDepth: {error}") from None
        self.blocks: list[str] = []
        self.rates: list[float] = []

    def init(self, state: State) -> None:
        model = unwrap_model(state.model)
        modules = list(model.named_modules())
        given = [name or "the model" for name, module in modules if isinstance(module, _Drops)]
        if given:
            raise ValueError(
                f"StochasticDepth: the residual blocks of {type(model).__name__} already "
                f"drop their branches ({given[0]}, ...): stochastic depth was given to this "
                "model before, by a StochasticDepth listed twice or in an earlier Trainer "
                "of the same model. List it once."
            )
        found = [
            (name, block, forwards)
            for name, block in modules
            if (forwards := _FORWARDS.get(_class_name(block))) is not None
        ]
        if not found:
            raise ValueError(
                f"StochasticDepth found no residual blocks in {type(model).__name__}: it "
                f"wraps {_LOOKS_FOR}; use a cifar_resnet or torchvision resnet model."
            )
        # Here, so that importing loom.algorithms stays light.
        from torchvision.ops import StochasticDepth as DropBranch

        rates = self._rates(len(found))
        for (_, block, forwards), rate in zip(found, rates, strict=True):
            block.stochastic_depth = DropBranch(rate, self.mode)  # no parameters, no buffers
            block.__class__ = _subclass(type(block), forwards)
        self.blocks = [name for name, _, _ in found]
        self.rates = rates

    def _rates(self, num_blocks: int) -> list[float]:
        if self.schedule == "uniform":
            return [self.drop_rate] * num_blocks
        return [self.drop_rate * depth / num_blocks for depth in range(1, num_blocks + 1)]

    def __repr__(self) -> str:
        options: dict[str, Any] = {"drop_rate": self.drop_rate}
        if self.mode != "row":
            options["mode"] = self.mode
        if self.schedule != "linear":
            options["schedule"] = self.schedule
        listed = ", ".join(f"{name}={value!r}" for name, value in options.items())
        return f"StochasticDepth({listed})"


def _checked_drop_rate(drop_rate: object) -> float:
    try:
        rate = check_fraction(drop_rate, "drop_rate")
    except TypeError:
        raise TypeError(f"drop_rate={drop_rate!r} must be a number in [0, 1).") from None
    except ValueError:
        rate = 1.0  # outside [0, 1], or NaN: refused below
    if rate == 1:
        raise ValueError(
            f"drop_rate={drop_rate!r} must lie in [0, 1): the chance that a residual branch "
            "is dropped in a training step (the last block's, with the linear schedule)."
        )
    return rate


# Each block keeps its class's attributes and gains a subclass of it whose forward is
# the block's own, with the branch multiplied by its stochastic_depth child. The
# forwards are written out here; the subclass is made once per block class at run
# time, since loom.algorithms imports neither torchvision's models nor loom.models.


class _Drops:
    """A block given stochastic depth: its forward multiplies the branch by
    ``self.stochastic_depth``."""

    stochastic_depth: nn.Module

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A copy or a pickle names the block's own class and these forwards, from
        # which the subclass (made at run time, so not importable) is made again.
        forwards, block_class = type(self).__bases__
        return _new_block, (block_class, forwards), self.__getstate__()


class _TorchvisionBasicBlock(_Drops):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.stochastic_depth(out) + identity)


class _TorchvisionBottleneck(_Drops):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.stochastic_depth(out) + identity)


class _CifarBasicBlock(_Drops):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.stochastic_depth(out) + self.shortcut(inputs))


class _CifarBottleneck(_Drops):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(inputs)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(self.stochastic_depth(out) + self.shortcut(inputs))


_FORWARDS: dict[tuple[str, str], type[_Drops]] = {
    ("torchvision.models.resnet", "BasicBlock"): _TorchvisionBasicBlock,
    ("torchvision.models.resnet", "Bottleneck"): _TorchvisionBottleneck,
    ("loom.models.cifar_resnet", "_BasicBlock"): _CifarBasicBlock,
    ("loom.models.cifar_resnet", "_Bottleneck"): _CifarBottleneck,
}
"""The forwards, by the block class they stand in for (exactly that class: a subclass
of one may compute something else)."""

_SUBCLASSES: dict[type, type] = {}


def _class_name(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__qualname__


def _subclass(block_class: type, forwards: type[_Drops]) -> type:
    """``block_class`` with the ``forwards``' forward, made once."""
    subclass = _SUBCLASSES.get(block_class)
    if subclass is None:
        name = "StochasticDepth" + block_class.__name__.lstrip("_")
        subclass = type(name, (forwards, block_class), {"__module__": __name__})
        _SUBCLASSES[block_class] = subclass
    return subclass


def _new_block(block_class: type, forwards: type[_Drops]) -> nn.Module:
    """An empty block of ``block_class`` given stochastic depth, for a copy or an unpickle
    to fill."""
    return object.__new__(_subclass(block_class, forwards))
