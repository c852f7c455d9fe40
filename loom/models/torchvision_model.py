"""Any torchvision classification model, by name."""

from __future__ import annotations

import difflib

from torch import nn

from loom.models.checks import check_positive_ints

__all__ = ["torchvision_model"]


def torchvision_model(architecture: str, num_classes: int) -> nn.Module:
    """Builds torchvision's ``architecture`` (e.g. ``"resnet50"``) with fresh weights.

    Pretrained weights are not fetched: jobs run without network access.

    Args:
        architecture: A name from ``torchvision.models.list_models(torchvision.models)``.
        num_classes: Output classes (a job fills it from the dataset).

    Raises:
        ValueError: ``architecture`` is not a torchvision classification model; the
            message suggests the closest names.

    Examples:
        >>> torchvision_model("resnet18", num_classes=10).fc.out_features
        10
    """
    import torchvision  # here, so that importing loom.models stays light

    check_positive_ints(num_classes=num_classes)
    known = torchvision.models.list_models(module=torchvision.models)
    if architecture not in known:
        close = difflib.get_close_matches(str(architecture), known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"architecture={architecture!r} is not a torchvision classification model.{hint} "
            "torchvision.models.list_models(torchvision.models) lists them all."
        )
    return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
