"""How a run spreads its model over the processes of a torchrun job: replicated
(``"ddp"``, DistributedDataParallel) or sharded (``"fsdp"``, PyTorch's FSDP2,
``torch.distributed.fsdp.fully_shard``).

Under ``"fsdp"`` each rank holds a 1/world-size share of every parameter, gradient and
optimizer state; each block's full weights are gathered for its forward and backward
only. A block is the unit gathered at once: by default each direct child of the model
that holds parameters (the model itself last, for what is left), or every submodule of
the classes ``blocks`` names (a transformer's layers, a ResNet's ``BasicBlock``).

Under torchrun, ``precision="bf16"`` becomes FSDP2's ``MixedPrecisionPolicy``: the
gathered weights and the forward and backward in bfloat16, the gradients reduced and
kept in float32, the outputs float32 (so the loss is too) — in place of autocast.
fp16 is refused: it would need a sharded gradient scaler.

The strategy decides what a run of it refuses and how it checkpoints; whether its
model *is* sharded (:func:`is_sharded`), which decides the forward's precision and how
its weights are gathered, is true under torchrun only.

A run of ``"fsdp"`` writes its checkpoints as sharded folders
(:mod:`loom.trainer.sharded_checkpoint`), also when it runs as one process (where
nothing is sharded: there is no one to share with), so that its run directory holds
one kind of checkpoint whatever the number of processes that resume it.

Examples:
    >>> Strategy.parse("fsdp")
    Strategy(name='fsdp', blocks=None, reshard_after_forward=True)
    >>> Strategy.parse({"name": "fsdp", "blocks": ["BasicBlock"]}).blocks
    ('BasicBlock',)
    >>> Strategy.parse("zero3")
    Traceback (most recent call last):
    ...
    ValueError: strategy='zero3' is not a strategy; expected 'ddp' or 'fsdp', or ...
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "FUSED_ON_SHARDS",
    "STRATEGIES",
    "Strategy",
    "check_fits_sharding",
    "even_out_forwards",
    "forward_autocast",
    "full_model_state_dict",
    "is_sharded",
    "most_batches",
    "shard_model",
]

STRATEGIES = ("ddp", "fsdp")
"""The ways a run spreads its model over torchrun's processes."""

FUSED_ON_SHARDS = (torch.optim.Adam, torch.optim.AdamW)
"""The optimizers whose fused step (``fused=True``) runs on sharded parameters: those
whose fused kernel torch's DTensor has (SGD's it has not)."""

_OPTIONS = ("blocks", "reshard_after_forward")
"""What ``strategy={"name": "fsdp", ...}`` may set besides its name."""


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How the model is spread over the processes; see the module docstring.

    Attributes:
        name: ``"ddp"`` or ``"fsdp"``.
        blocks: Under ``"fsdp"``, the class names of the submodules each sharded as one
            unit (a subclass of one counts); None: each direct child that holds
            parameters.
        reshard_after_forward: Under ``"fsdp"``, whether a block's gathered weights are
            freed after its forward and gathered again for its backward (less memory,
            one more all-gather a block), as ZeRO-3; False keeps them to the backward.
    """

    name: str = "ddp"
    blocks: tuple[str, ...] | None = None
    reshard_after_forward: bool = True

    @property
    def shards(self) -> bool:
        """Whether the model is sharded (and the checkpoints are sharded folders)."""
        return self.name == "fsdp"

    @classmethod
    def parse(cls, value: Any) -> Strategy:
        """The strategy ``value`` names: ``"ddp"``, ``"fsdp"``, a mapping
        ``{"name": "fsdp", "blocks": [...], "reshard_after_forward": ...}``, or a Strategy.

        Raises:
            ValueError: An unknown name or option, or a value of the wrong type; the
                message names it.
        """
        if isinstance(value, Strategy):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, Mapping):
            raise ValueError(
                f"strategy={value!r} must be 'ddp', 'fsdp' or a mapping such as "
                "{'name': 'fsdp', 'blocks': ['BasicBlock']}."
            )
        options = dict(value)
        if "name" not in options:
            raise ValueError(
                f"strategy={dict(value)!r} has no 'name'; give 'ddp' or 'fsdp' as its name."
            )
        name = options.pop("name")
        if name not in STRATEGIES:
            raise ValueError(
                f"strategy={name!r} is not a strategy; expected 'ddp' or 'fsdp', or a "
                "mapping with one of them as its 'name'."
            )
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(
                f"strategy: unknown option {unknown[0]!r}; {name} takes "
                f"{', '.join(_OPTIONS) if name == 'fsdp' else 'no options'}."
            )
        if options and name == "ddp":
            raise ValueError(f"strategy: {', '.join(options)} are options of 'fsdp', not 'ddp'.")
        blocks = options.get("blocks")
        if blocks is not None:
            if isinstance(blocks, str) or not isinstance(blocks, Sequence):
                raise ValueError(
                    f"strategy.blocks={blocks!r} must be a list of class names, e.g. "
                    "['BasicBlock'], or None."
                )
            if not all(isinstance(block, str) and block for block in blocks):
                raise ValueError(f"strategy.blocks={list(blocks)!r}: each must be a class name.")
            blocks = tuple(blocks)
        reshard = options.get("reshard_after_forward", True)
        if type(reshard) is not bool:
            raise ValueError(f"strategy.reshard_after_forward={reshard!r} must be true or false.")
        return cls(name=name, blocks=blocks, reshard_after_forward=reshard)


def check_fits_sharding(
    strategy: Strategy,
    model: nn.Module,
    precision: str,
    algorithms: Sequence[Any],
    optimizers: Sequence[Any],
) -> None:
    """Refuses, before anything is built (also in one process, where nothing is
    sharded, so that a job fails where it is written, not once it scales): blocks the
    model has no class of, fp16, an optimizer that has stepped (its state is of the
    unsharded parameters) or steps a tensor that is not the model's, a fused step torch
    does not have for sharded parameters, and each algorithm that says why it cannot
    (its ``sharding_refusal``).

    Raises:
        ValueError: The message names the blocks, the algorithm, the optimizer or the
            precision, and why.
    """
    if not strategy.shards:
        return
    _blocks(model, strategy.blocks)
    own = {id(parameter) for parameter in model.parameters()}
    for index, optimizer in enumerate(optimizers):
        for number, group in enumerate(optimizer.param_groups):
            if any(id(parameter) not in own for parameter in group["params"]):
                raise ValueError(
                    f"optimizers[{index}] ({type(optimizer).__name__}) steps a tensor of its "
                    f"parameter group {number} that is not one of the model's parameters: "
                    "strategy='fsdp' replaces the model's parameters with sharded ones, "
                    "and could not replace it. Build the optimizer on model.parameters()."
                )
        if optimizer.state:
            raise ValueError(
                f"optimizers[{index}] ({type(optimizer).__name__}) holds state already: "
                "strategy='fsdp' shards the parameters it was built on, and its state "
                "would be of the unsharded ones. Give the Trainer a new optimizer."
            )
        fused = any(group.get("fused") for group in optimizer.param_groups)
        if fused and not isinstance(optimizer, FUSED_ON_SHARDS):
            raise ValueError(
                f"optimizers[{index}] ({type(optimizer).__name__}) has fused=True, a step "
                "torch does not have for the parameters strategy='fsdp' shards; use "
                "foreach=True (or leave both unset)."
            )
    if precision == "fp16":
        raise ValueError(
            "precision='fp16' with strategy='fsdp': fp16 needs a gradient scaler for "
            "sharded gradients, which loom does not have; use precision='bf16' (FSDP2's "
            "mixed precision) or 'fp32'."
        )
    for index, algorithm in enumerate(algorithms):
        why = getattr(algorithm, "sharding_refusal", None)
        if why:
            raise ValueError(
                f"algorithms[{index}] ({type(algorithm).__name__}) cannot train a model "
                f"that strategy='fsdp' shards: {why} Use strategy='ddp' with it."
            )


def shard_model(
    model: nn.Module,
    strategy: Strategy,
    precision: str,
    optimizers: Sequence[Any],
    device: torch.device,
) -> nn.Module:
    """``model`` sharded in place with ``fully_shard`` over every rank, on ``device``'s
    type: each block, then the model itself; ``optimizers`` (built on its parameters)
    then step the sharded parameters that replace them. Under torchrun only (every rank
    calls it, after the plugins' ``init``; :func:`check_fits_sharding` first).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    names = {id(parameter): name for name, parameter in model.named_parameters()}
    # The run's device type, not the machine's accelerator (fully_shard's default):
    # a CPU run on a machine with a GPU shards on the CPU.
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    options: dict[str, Any] = {
        "mesh": mesh,
        "reshard_after_forward": strategy.reshard_after_forward,
    }
    if precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, output_dtype=torch.float32
        )
    for block in _blocks(model, strategy.blocks):
        fully_shard(block, **options)
    fully_shard(model, **options)
    # fully_shard replaces each parameter with a sharded one of the same name.
    sharded = dict(model.named_parameters())
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["params"] = [sharded[names[id(parameter)]] for parameter in group["params"]]
    return model


def forward_autocast(model: nn.Module, precision: str, device: torch.device) -> Any:
    """The autocast context ``model``'s forwards run under (see
    :func:`~loom.trainer.runtime.autocast_context`), or None: a sharded model's
    precision is its ``MixedPrecisionPolicy``'s."""
    from loom.trainer.runtime import autocast_context

    return None if is_sharded(model) else autocast_context(precision, device)


def is_sharded(model: nn.Module) -> bool:
    """Whether ``fully_shard`` has sharded ``model`` (its parameters are DTensors)."""
    # Where torch's FSDP is not imported yet, nothing has been sharded (and importing it
    # would cost half a second, at every Trainer's start).
    fsdp = sys.modules.get("torch.distributed.fsdp")
    sharded = getattr(fsdp, "FSDPModule", None)
    return sharded is not None and isinstance(model, sharded)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A sharded model's full weights and buffers, gathered on the CPU of rank 0 (the
    other ranks get an empty dict). A collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def most_batches(model: nn.Module, dataloader: Any, device: torch.device) -> int | None:
    """Before a sharded ``model`` evaluates or predicts on ``dataloader`` (this rank's
    share), the most batches any rank's share has; None for a model that is not
    sharded. Every rank must call it. See :func:`even_out_forwards`.

    Raises:
        TypeError: The loader has no length: the ranks could not agree beforehand on
            how many forwards they run.
        RuntimeError: A rank's share has no batch while another's has some: it would
            have no batch to run again (raised on every rank, before any forward).
    """
    if not is_sharded(model):
        return None
    from loom.functional.collectives import all_reduce_max

    try:
        batches = len(dataloader)
    except TypeError:
        raise TypeError(
            f"a model that strategy='fsdp' shards evaluates and predicts on loaders with a "
            f"length (its ranks gather its weights together at each batch, so they agree "
            f"first on how many); {type(dataloader).__name__} has none."
        ) from None
    # On the run's device: NCCL reduces no CPU tensor.
    most, least = all_reduce_max(torch.tensor([batches, -batches], device=device)).tolist()
    if -least == 0 and most > 0:
        raise RuntimeError(
            f"a rank has no batch to evaluate or predict while another has {most}: a model "
            "that strategy='fsdp' shards needs every rank to have at least one (fewer "
            "processes, or more samples)."
        )
    return int(most)


def even_out_forwards(model: nn.Module, batches: int, most: int | None, inputs: Any) -> None:
    """Runs the forwards that keep a sharded model's ranks in step after this rank's
    ``batches`` of an evaluation or a prediction: each forward gathers every block's
    weights from all ranks, so a rank whose share of the data has fewer batches (loom
    shards evaluation data without repeating samples) runs its last batch's ``inputs``
    again, its outputs dropped, until it has run ``most`` (from :func:`most_batches`;
    None: the model is not sharded, and nothing runs). A real batch, not an empty one:
    any model takes it.

    Call it with ``model`` in eval mode and under ``no_grad``.
    """
    for _ in range(0 if most is None else most - batches):
        model(inputs)


def _blocks(model: nn.Module, names: tuple[str, ...] | None) -> list[nn.Module]:
    """The submodules each sharded as one unit, innermost first (``fully_shard`` takes
    the parameters of a module's own blocks out of its own unit)."""
    if names is None:
        return [child for child in model.children() if any(True for _ in child.parameters())]
    # A class's subclasses count: a plugin's surgery may swap a block's class for one
    # derived from it (stochastic depth's blocks are their class's subclasses).
    found = [module for module in model.modules() if _class_names(module) & set(names)]
    named = set().union(*(_class_names(module) for module in found))
    missing = [name for name in names if name not in named]
    if missing:
        classes = sorted({type(module).__name__ for module in model.modules()})
        raise ValueError(
            f"strategy.blocks: the model ({type(model).__name__}) has no {missing[0]!r}; "
            f"its classes are {', '.join(classes)}."
        )
    if model in found:
        raise ValueError(
            f"strategy.blocks: {type(model).__name__} is the model itself, which is always "
            "sharded last; name the classes of its blocks."
        )
    return list(reversed(found))  # model.modules() lists a module before its submodules


def _class_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}
