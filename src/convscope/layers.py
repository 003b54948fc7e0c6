"""Layer names: discovery by one forward pass, aliases (Keras names on VGG), resolution and selection.

A *layer name* denotes the output of one module. Most names are the module paths PyTorch gives
(``features.0``, ``_blocks.3._depthwise_conv``). A model may add aliases: on VGG, ``block1_conv1``
denotes the output of the ReLU that follows the first conv (as in Keras), while ``features.0``
still denotes the conv's own output, before the ReLU.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import LayerError
from .hooks import evaluating, record_call_order


@dataclass(frozen=True)
class LayerAlias:
    """A friendly name for the output of module ``target``; ``source`` is the module it is named after
    (e.g. the conv whose post-ReLU output the alias denotes) and ``type`` the type shown for it."""

    name: str
    target: str
    type: str
    source: str


@dataclass(frozen=True)
class LayerInfo:
    """One layer: its name, the module type, the output shape for one image (``[C, H, W]`` for a
    feature map, ``[C]`` for a vector; None when the output is not a tensor) and the module path.
    ``listed`` is False for names that are valid but not shown (module paths behind an alias)."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    module: str
    listed: bool = True

    @property
    def is_spatial(self) -> bool:
        """True when the output is a feature map (C x H x W)."""
        return self.shape is not None and len(self.shape) == 3

    def as_json(self) -> dict:
        return {"name": self.name, "type": self.type,
                "shape": list(self.shape) if self.shape is not None else None}


def discover_layers(module: nn.Module, dummy_input: torch.Tensor,
                    aliases: Sequence[LayerAlias] = (), hidden: Iterable[str] = ()) -> list[LayerInfo]:
    """All layers of ``module`` in the order their outputs are produced, from one forward pass on
    ``dummy_input`` (eval mode, no gradients; hooks removed and the mode restored afterwards).

    Every submodule that runs gets an entry under its path, listed unless it is in ``hidden``; an
    alias gets a listed entry of its own just before its target module's entry.
    """
    by_target = {alias.target: alias for alias in aliases}
    hidden = set(hidden)
    with evaluating(module), torch.no_grad(), record_call_order(module) as calls:
        module(dummy_input)
    layers = []
    for path, sub, output in calls:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) and output.dim() >= 1 else None
        if path in by_target:
            alias = by_target[path]
            layers.append(LayerInfo(alias.name, alias.type, shape, path))
        layers.append(LayerInfo(path, type(sub).__name__, shape, path, listed=path not in hidden))
    return layers


def unknown_layer(name: str, candidates: Sequence[str]) -> LayerError:
    """The error for an unknown layer name, suggesting the closest valid names."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in candidates if lowered in c.lower()][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else "; `convscope layers` lists them"
    return LayerError(f"unknown layer {name!r}{hint}")


def split_spec(spec: str | Sequence[str]) -> list[str]:
    """``"a,b , c"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty parts dropped)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for part in parts for p in part.split(",") if p.strip()]


def select_layers(spec: str | Sequence[str], layers: Sequence[LayerInfo]) -> list[str]:
    """Resolve a layer spec against ``layers`` (all entries, as :func:`discover_layers` returns them)
    to layer names in network order.

    ``spec``: names, comma-separated lists and glob patterns (``block3_*``, matched against listed
    names), or ``all`` for every listed layer whose output is a feature map. Unknown names and
    patterns that match nothing raise :class:`LayerError`.
    """
    items = split_spec(spec)
    if not items:
        raise LayerError("empty layer list")
    listed = [layer.name for layer in layers if layer.listed]
    order = {layer.name: i for i, layer in enumerate(layers)}
    chosen: list[str] = []
    for item in items:
        if item == "all":
            matches = [layer.name for layer in layers if layer.listed and layer.is_spatial]
        elif any(ch in item for ch in "*?["):
            matches = fnmatch.filter(listed, item)
            if not matches:
                raise LayerError(f"layer pattern {item!r} matches no layer; `convscope layers` lists them")
        elif item in order:
            matches = [item]
        else:
            raise unknown_layer(item, listed + [name for name in order if name not in set(listed)])
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen, key=order.__getitem__)
