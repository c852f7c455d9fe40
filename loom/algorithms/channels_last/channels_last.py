"""ChannelsLast: the model's weights and its images laid out channels-last (NHWC)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from loom.trainer import (
    Algorithm,
    BatchKey,
    State,
    changes,
    describe_item,
    unwrap_model,
    validate_batch_key,
)

__all__ = ["ChannelsLast"]


class ChannelsLast(Algorithm):
    """Lays out the model's 4-D weights and the run's images as ``torch.channels_last``.

    The values stay what they were; only their order in memory changes, from ``N, C,
    H, W`` to ``N, H, W, C``, which the convolutions of GPUs with tensor cores run
    faster on (mostly under ``bf16`` or ``fp16``). At ``init`` the model is converted in
    place, keeping its parameter objects, so the optimizers built before train the same
    ones; under torchrun the Trainer wraps the model in DistributedDataParallel after
    ``init``, so DDP's gradient buckets take the new layout. A model given to the
    Trainer already inside DistributedDataParallel keeps its weights as they are (with
    a warning, unless laid out before), since DDP's buckets keep their first layout. At
    ``before_forward`` and ``eval_before_forward`` the inputs, when they are a 4-D
    floating-point tensor, are made channels-last; other inputs are left as they are,
    with one warning. Nothing is put back: the values are the same either way.

    Args:
        input_key: Where the images ``(N, C, H, W)`` are in a batch, when not at the
            run's ``input_key`` (int, str or (getter, setter)); None uses the run's.

    Examples:
        >>> import torch
        >>> from loom import Trainer
        >>> from loom.algorithms import ChannelsLast
        >>> model = torch.nn.Conv2d(3, 4, kernel_size=3)
        >>> trainer = Trainer(model, [], max_duration="1ep", device="cpu",
        ...                   algorithms=[ChannelsLast()],
        ...                   optimizers=torch.optim.SGD(model.parameters(), lr=0.1))
        >>> model.weight.is_contiguous(memory_format=torch.channels_last)
        True
        >>> ChannelsLast(input_key="image")
        ChannelsLast(input_key='image')
    """

    sharding_refusal = (
        "FSDP gathers each weight into a new tensor for every forward, in the standard "
        "(channels-first) layout, so the layout it sets would not hold."
    )

    effects = (
        changes("model", at="init", how="converts to channels-last"),
        changes("inputs", at="before_forward", how="lays out channels-last"),
    )

    def __init__(self, input_key: BatchKey | None = None):
        if input_key is not None:
            validate_batch_key(input_key, "input_key")
        self.input_key = input_key
        self._warned = False

    def init(self, state: State) -> None:
        from torch.nn.parallel import DistributedDataParallel

        model = unwrap_model(state.model)
        if state.device.type == "cpu":
            _warn_of_wrong_cpu_gradients(model)
        if not isinstance(state.model, DistributedDataParallel):
            model.to(memory_format=torch.channels_last)
        elif not _laid_out(model):
            # DDP's gradient buckets keep the strides the weights had when it wrapped them:
            # weights laid out anew after that get wrong gradients in the first step.
            warnings.warn(
                "ChannelsLast: the model was given to the Trainer inside "
                "DistributedDataParallel, and laying out its weights anew would give the "
                "first step wrong gradients: they stay "
                "as they are, and the inputs alone are laid out channels-last, which the "
                "convolutions follow. For channels-last weights too, lay out the model "
                "before building the Trainer: model.to(memory_format=torch.channels_last).",
                UserWarning,
                stacklevel=2,
            )

    def before_forward(self, state: State) -> None:
        self._lay_out(state)

    def eval_before_forward(self, state: State) -> None:
        self._lay_out(state)

    def _lay_out(self, state: State) -> None:
        inputs = state.get_inputs(self.input_key)
        if isinstance(inputs, torch.Tensor) and inputs.dim() == 4 and inputs.is_floating_point():
            laid_out = inputs.contiguous(memory_format=torch.channels_last)
            if laid_out is not inputs:  # already channels-last: the batch stays as it is
                state.set_inputs(laid_out, self.input_key)
        elif not self._warned:
            self._warned = True
            key = "the run's input_key" if self.input_key is None else repr(self.input_key)
            warnings.warn(
                f"ChannelsLast lays out images, 4-D floating-point tensors (N, C, H, W), "
                f"but the inputs at {key} are {describe_item(inputs)}: channels-last does "
                "nothing for them, and they are left as they are (the model's weights stay "
                "channels-last).",
                UserWarning,
                stacklevel=2,
            )

    def __repr__(self) -> str:
        key = "" if self.input_key is None else f"input_key={self.input_key!r}"
        return f"ChannelsLast({key})"


def _laid_out(model: nn.Module) -> bool:
    """Whether every 4-D weight and buffer of ``model`` is channels-last already."""
    tensors = [*model.parameters(), *model.buffers()]
    return all(
        tensor.is_contiguous(memory_format=torch.channels_last)
        for tensor in tensors
        if tensor.dim() == 4
    )


def _warn_of_wrong_cpu_gradients(model: nn.Module) -> None:
    """Warns of the first convolution whose weight gradients oneDNN, torch's CPU kernels,
    gets wrong in channels-last: 1x1 with a stride and fewer input channels than its
    kernel's block (8 with AVX2, 16 with AVX-512), oneDNN issue #6035."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return
    for name, module in model.named_modules():
        if not isinstance(module, nn.Conv2d) or module.kernel_size != (1, 1):
            continue
        channels = module.in_channels // module.groups
        if module.stride != (1, 1) and channels < 16:
            warnings.warn(
                f"ChannelsLast on the CPU: {name or 'the model'} is a 1x1 convolution of "
                f"stride {module.stride} with {channels} input channels, whose weight "
                "gradients torch's oneDNN CPU kernels compute wrongly, or crash on, in "
                "channels-last below 8 or 16 input channels (oneDNN issue #6035). "
                "Channels-last is meant for GPUs: train this model on the CPU without it.",
                UserWarning,
                stacklevel=2,
            )
            return
