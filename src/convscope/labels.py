"""Class labels available offline."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order: torchvision's list (its weights' metadata),
    shipped as ``data/imagenet_classes.txt`` so that reading it does not import torchvision (2 s)."""
    text = files("convscope").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def numbered_labels(count: int) -> tuple[str, ...]:
    """``class 0`` ... ``class N-1`` for models without named classes."""
    return tuple(f"class {i}" for i in range(count))
