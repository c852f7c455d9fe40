"""Numeric precision: the autocast context and, for fp16, the gradient scaler."""

from __future__ import annotations

import torch

__all__ = ["PRECISIONS", "autocast_context", "grad_scaler_for", "validate_precision"]

PRECISIONS = ("fp32", "bf16", "fp16")


def validate_precision(precision: str, device: torch.device) -> str:
    """Checks that ``precision`` is known and runs on ``device``.

    Raises:
        ValueError: An unknown precision, or fp16 anywhere but CUDA.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}.")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device, but the device is {device}; "
            "use precision='bf16' for mixed precision on the CPU."
        )
    return precision


def autocast_context(precision: str, device: torch.device) -> torch.autocast | None:
    """A reusable context that runs the forward and loss at ``precision``, or None for fp32.

    bf16 and fp16 get ``torch.autocast`` for the device type; the same object is
    entered for every batch.
    """
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (whose small gradients underflow without one), else None."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
