"""Class labels available offline."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (from torchvision's weight metadata, on disk)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def numbered_labels(count: int) -> tuple[str, ...]:
    """``class 0`` ... ``class N-1`` for models without named classes."""
    return tuple(f"class {i}" for i in range(count))
