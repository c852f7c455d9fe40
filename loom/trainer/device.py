"""Choosing the device, and seeding every random number generator a run uses."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "use_deterministic_algorithms"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turns ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device into a device.

    ``"auto"`` is CUDA when available, else the CPU. Under torchrun, ``"auto"`` and
    ``"cuda"`` mean this process's GPU, ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: The name is not a device, or CUDA was asked for but is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        resolved = torch.device("cuda")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"device={device!r} is not a device; expected 'auto', 'cpu', 'cuda' or 'cuda:N'."
            ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, which is not available here.")
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return resolved


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's (CPU and every CUDA device) generators.

    Call it before building the model so that its initial weights are repeatable.

    Examples:
        >>> import torch
        >>> seed_everything(0); a = torch.rand(2)
        >>> seed_everything(0); b = torch.rand(2)
        >>> torch.equal(a, b)
        True
    """
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_algorithms() -> None:
    """Makes torch pick deterministic kernels (slower on CUDA), for runs that must repeat bitwise.

    This is process-wide, as ``torch.use_deterministic_algorithms`` is.
    """
    # cuBLAS needs a fixed workspace to be deterministic; it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
