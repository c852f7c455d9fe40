"""SAM: each step takes the gradient at the worst nearby weights, not at the weights."""

from __future__ import annotations

import torch

from loom.functional import check_positive, sam_perturbation
from loom.trainer import Algorithm, State, changes, unwrap_model

__all__ = ["SAM"]


class SAM(Algorithm):
    """Sharpness-aware minimization: the optimizer steps with the gradient taken at
    ``w + e``, where ``e`` climbs the loss by ``rho`` (see
    :func:`loom.functional.sam_perturbation`).

    At ``before_optimizer_step`` the batch's gradient ``g`` at ``w`` is complete. SAM
    moves the weights to ``w + e``, runs the batch again with
    :meth:`State.recompute_gradients` (its forward, loss and backward, every
    microbatch, every algorithm as before), puts the weights back to ``w`` exactly, and
    leaves that second gradient for the optimizer: its step, with the run's gradient
    clipping and fp16 scaler, is ``w - lr * step(g(w + e))``. Each step costs two
    forwards and two backwards.

    The second pass leaves the model's buffers (BatchNorm's running statistics) as the
    first left them, so that they count each batch once; the training loss is the
    first pass's, the loss at ``w``. Algorithms that change the batch change it in the
    second pass as in the first (the same smoothed targets, the same mixing), and online
    label smoothing counts each sample once.

    Args:
        rho: The radius of the neighbourhood, > 0 (the paper's 0.05 for SGD on CIFAR;
            adaptive SAM uses larger values, e.g. 0.5 or 2).
        adaptive: Adaptive SAM (Kwon et al., 2021): the neighbourhood scaled by each
            weight's size.

    Examples:
        >>> from loom.algorithms import SAM
        >>> SAM(rho=0.1)
        SAM(rho=0.1)
    """

    sharding_refusal = (
        "its climb is scaled by the norm of the whole gradient, which it computes from "
        "each parameter's gradient as one tensor, and FSDP keeps a share of each on every "
        "rank."
    )

    effects = (
        changes(
            "optimizer_step",
            at="before_optimizer_step",
            how="replaces",
            hint="A step takes one SAM.",
        ),
    )

    def __init__(self, rho: float = 0.05, adaptive: bool = False):
        try:
            self.rho = check_positive(rho, "rho")
        except (TypeError, ValueError) as error:
            raise type(error)(f"SAM: {error} It is the neighbourhood's radius.") from None
        if not isinstance(adaptive, bool):
            raise TypeError(f"SAM: adaptive={adaptive!r} must be True or False.")
        self.adaptive = adaptive

    def before_optimizer_step(self, state: State) -> None:
        weights = [
            weight
            for optimizer in state.optimizers
            for group in optimizer.param_groups
            for weight in group["params"]
            if weight.grad is not None
        ]
        if not weights:
            return
        buffers = list(unwrap_model(state.model).buffers())
        with torch.no_grad():
            kept_weights = [weight.detach().clone() for weight in weights]
            kept_buffers = [buffer.detach().clone() for buffer in buffers]
            steps = sam_perturbation(
                weights, [weight.grad for weight in weights], self.rho, self.adaptive
            )
            torch._foreach_add_(weights, steps)
        try:
            state.recompute_gradients()
        finally:
            with torch.no_grad():
                # Copied back, not subtracted: (w + e) - e need not be w in floating point.
                torch._foreach_copy_(weights, kept_weights)
                if buffers:
                    torch._foreach_copy_(buffers, kept_buffers)

    def __repr__(self) -> str:
        adaptive = ", adaptive=True" if self.adaptive else ""
        return f"SAM(rho={self.rho}{adaptive})"
