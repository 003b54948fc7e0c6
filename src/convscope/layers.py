"""Layer facts: discovery by one forward pass, aliases (Keras names on VGG), resolution, selection,
and the default layers of each technique.

A *layer name* denotes the output of one module. Most names are the module paths PyTorch gives
(``features.0``, ``_blocks.3._depthwise_conv``). A model may add aliases: on VGG, ``block1_conv1``
denotes the output of the ReLU that follows the first conv (as in Keras), while ``features.0``
still denotes the conv's own output, before the ReLU.

Every layer has a :attr:`LayerInfo.kind` -- ``conv``, ``pool``, ``norm`` or ``other`` -- decided
once here from its module's type (for an alias: the type of the module it is named after).

A layer whose output is not B x C x H x W gets a :class:`LayerView` at discovery where convscope
knows how to see it as one: a vision transformer's tokens (:class:`Tokens`), a Swin stage's
channels-last map (:class:`ChannelsLast`), a feature pyramid's dict of levels
(:class:`PyramidLevels`); its :attr:`LayerInfo.shape` is then the map's.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import warnings
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConvscopeWarning, InputError, LayerError
from .hooks import ModuleCall, evaluating, record_call_order
from .specs import split_spec

CONV_TYPES = (nn.modules.conv._ConvNd,)
POOL_TYPES = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
              nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
              nn.modules.pooling._LPPoolNd)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)


#: Keras layer classes by kind (a Keras layer is a torch module on Keras's PyTorch backend).
KERAS_KINDS = {"conv": ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose"),
               "pool": ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
                        "MaxPooling1D", "AveragePooling1D", "MaxPooling3D", "AveragePooling3D"),
               "norm": ("BatchNormalization",)}


def module_kind(module: nn.Module) -> str:
    """``conv``, ``pool``, ``norm`` (batch norm) or ``other`` (a Keras layer by its class)."""
    for kind, types in (("conv", CONV_TYPES), ("pool", POOL_TYPES), ("norm", NORM_TYPES)):
        if isinstance(module, types):
            return kind
    if type(module).__module__.startswith("keras"):
        for kind, names in KERAS_KINDS.items():
            if type(module).__name__ in names:
                return kind
    return "other"


@dataclass(frozen=True)
class LayerAlias:
    """A friendly name for the output of module ``target``; ``source`` is the module it is named after
    (e.g. the conv whose post-ReLU output the alias denotes) and ``type`` the type shown for it."""

    name: str
    target: str
    type: str
    source: str


# -- how a transformer's layer is seen as a feature map ---------------------------------------------------
class LayerView:
    """How a layer whose output is not B x C x H x W is seen as one: :meth:`to_map` gives the map,
    :meth:`from_map` puts a map back where the output was (what the network downstream then sees)."""

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_map(self, maps: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The map's shape (C, H, W) for one item's output ``shape``."""
        return tuple(self.to_map(torch.zeros(1, *shape)).shape[1:])


@dataclass(frozen=True)
class Tokens(LayerView):
    """A vision transformer's tokens B x N x D: the ``prefix`` tokens (class, register, distillation)
    dropped, the other ``height x width`` the patch grid in row-major order, as B x D x h x w
    (pytorch-grad-cam's ``reshape_transform`` for ViT)."""

    prefix: int
    height: int
    width: int

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        patches = output[:, self.prefix:]
        return patches.transpose(1, 2).reshape(len(output), output.shape[2], self.height, self.width)

    def from_map(self, maps: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        prefix = output[:, :self.prefix].detach().expand(len(maps), -1, -1)
        return torch.cat([prefix, maps.flatten(2).transpose(1, 2)], dim=1)


@dataclass(frozen=True)
class ChannelsLast(LayerView):
    """A Swin stage's B x H x W x C map, as B x C x H x W."""

    def to_map(self, output: torch.Tensor) -> torch.Tensor:
        return output.permute(0, 3, 1, 2)

    def from_map(self, maps: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return maps.permute(0, 2, 3, 1).clone()


@dataclass(frozen=True)
class PyramidLevels(LayerView):
    """A feature pyramid's levels (a dict of B x C_i x H_i x W_i, torchvision's FPN) as one map:
    each level's absolute value resized bilinearly to the ``pool`` level's size (else the last
    level's) and the levels stacked along the channels, as pytorch-grad-cam's
    ``fasterrcnn_reshape_transform``. Not invertible: for the methods that need no gradient."""

    keys: tuple[str, ...]

    def to_map(self, output: Any) -> torch.Tensor:
        size = output["pool" if "pool" in output else list(output)[-1]].shape[-2:]
        return torch.cat([F.interpolate(value.abs(), size, mode="bilinear") for value in output.values()], dim=1)

    def from_map(self, maps: torch.Tensor, output: Any) -> torch.Tensor:
        raise InputError("layer: a feature pyramid's levels are seen as one map for the methods without gradients "
                         "(eigencam, scorecam, ...); for gradients choose one level's layer, such as the "
                         "backbone's last stage (the default)", parameter="layer")

    @staticmethod
    def stacked_shape(levels: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[int, ...]:
        """The stacked map's shape (C, H, W) for one item, from each level's key and shape."""
        sizes = dict(levels)
        last = sizes.get("pool", levels[-1][1])
        return (sum(shape[0] for _, shape in levels), last[1], last[2])


#: Tokens before the patch grid that a layer may carry (class, distillation, register tokens).
MAX_PREFIX_TOKENS = 16


def is_attention(module: nn.Module) -> bool:
    """A transformer's attention module (``nn.MultiheadAttention`` or a type named ``*Attention``)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def layer_view(shape: tuple[int, ...] | None, grid: tuple[int, int] | None) -> LayerView | None:
    """How a transformer's layer output (one item's ``shape``) is a feature map, given the patch
    ``grid`` (h, w): tokens N x D with N - h w prefix tokens; an H x W x C map at the grid's size or a
    power-of-two fraction of it (Swin's stages, channels last); None for anything else."""
    if shape is None or grid is None:
        return None
    height, width = grid
    if len(shape) == 2 and 0 <= shape[0] - height * width <= MAX_PREFIX_TOKENS:
        return Tokens(shape[0] - height * width, height, width)
    scales = {(height >> k, width >> k) for k in range(6) if height >> k and width >> k}
    if len(shape) == 3 and tuple(shape[:2]) in scales and shape[2] != shape[1]:
        return ChannelsLast()
    return None


def has_fixed_grid(layers: Sequence[LayerInfo]) -> bool:
    """Whether the network is a vision transformer with a fixed patch grid (token layers): it takes
    inputs of its own size only."""
    return any(isinstance(layer.view, Tokens) for layer in layers)


def patch_grid(calls: Sequence[ModuleCall]) -> tuple[int, int] | None:
    """A transformer's patch grid: the output size of its patch embedding, the first convolution
    whose stride equals its kernel (larger than 1); None for a network without attention or without
    such a convolution."""
    if not any(is_attention(call.module) for call in calls):
        return None
    for call in calls:
        module = call.module
        if isinstance(module, nn.Conv2d) and call.shape is not None and len(call.shape) == 3 \
                and tuple(module.stride) == tuple(module.kernel_size) and max(module.kernel_size) > 1:
            return int(call.shape[1]), int(call.shape[2])
    return None


@dataclass(frozen=True)
class LayerInfo:
    """One layer: its name, the module type, the output shape for one image (``[C, H, W]`` for a
    feature map, ``[C, T, H, W]`` for a video network's, ``[C]`` for a vector; None when the output
    is not a tensor) and the module path.
    ``listed`` is False for names that are valid but not shown (module paths behind an alias);
    ``kind`` is ``conv``, ``pool``, ``norm`` or ``other``; ``source`` the module the layer is named
    after (for an alias, e.g. the conv behind ``block1_conv1``; otherwise ``module`` itself);
    ``kernel`` a conv's kernel size (None for other layers); ``calls`` how often the module runs in
    one forward pass (the captured output is always its first call's); ``view`` how a transformer's
    output (tokens, a channels-last map) is seen as the feature map ``shape`` describes (None: the
    output is what ``shape`` says)."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    module: str
    listed: bool = True
    kind: str = "other"
    source: str = ""
    kernel: tuple[int, ...] | None = None
    calls: int = 1
    view: LayerView | None = None

    @property
    def is_spatial(self) -> bool:
        """True when the output is a feature map (C x H x W; a video network's C x T x H x W)."""
        return self.shape is not None and len(self.shape) in (3, 4)

    def as_map(self, output: Any) -> Any:
        """The layer's output as the feature map ``shape`` describes: through ``view`` where it has one
        (a transformer's tokens, a Swin stage), else as it is."""
        return output if self.view is None else self.view.to_map(output)

    @property
    def is_alias(self) -> bool:
        """True for a friendly name of another module's output (``block1_conv1`` on VGG)."""
        return self.name != self.module

    @property
    def is_map_larger_than_1x1(self) -> bool:
        """A feature map with more than one position (a 1x1 output is a vector in disguise)."""
        return self.is_spatial and math.prod(self.shape[1:]) > 1

    def as_json(self) -> dict:
        return {"name": self.name, "type": self.type,
                "shape": list(self.shape) if self.shape is not None else None}


def discover_layers(module: nn.Module, dummy_input: torch.Tensor,
                    aliases: Sequence[LayerAlias] = (), hidden: Iterable[str] = (),
                    channels_last: bool | Collection[str] = False) -> list[LayerInfo]:
    """All layers of ``module`` in the order their outputs are produced, from one forward pass on
    ``dummy_input`` (eval mode, no gradients; hooks removed and the mode restored afterwards).

    Every submodule that runs gets an entry under its path, listed unless it is in ``hidden``; an
    alias gets a listed entry of its own just before its target module's entry. In a vision
    transformer, token and channels-last outputs get a :class:`LayerView` and the shape of its map;
    with ``channels_last`` (a Keras model: NHWC), every B x H x W x C output is seen as B x C x H x W
    (given module paths: theirs only, an ONNX graph's NHWC nodes).
    """
    by_target = {alias.target: alias for alias in aliases}
    hidden = set(hidden)
    with evaluating(module), torch.no_grad(), record_call_order(module) as calls:
        module(dummy_input)
    if dummy_input.dim() == 5 and any("Attention" in type(call.module).__name__ for call in calls):
        raise InputError(f"model: {type(module).__name__} is a video transformer (attention over a clip's tokens: "
                         "swin3d, mvit); convscope sees video networks of 3-D convolutions (r3d_18, mc3_18, "
                         "r2plus1d_18, s3d) and image transformers, not these yet", parameter="model")
    grid = patch_grid(calls)
    layers = []
    for call in calls:
        view: LayerView | None = layer_view(call.shape, grid)
        nhwc = channels_last is True or (not isinstance(channels_last, bool) and call.path in channels_last)
        if nhwc and call.shape is not None and len(call.shape) == 3:
            view = ChannelsLast()
        shape = view.shape(call.shape) if view is not None else call.shape
        if len(call.levels) > 1:
            view = PyramidLevels(tuple(key for key, _ in call.levels))
            shape = PyramidLevels.stacked_shape(call.levels)
        if call.path in by_target:
            alias = by_target[call.path]
            source = module.get_submodule(alias.source)
            layers.append(LayerInfo(alias.name, alias.type, shape, call.path, kind=module_kind(source),
                                    source=alias.source, kernel=_kernel(source), calls=call.calls, view=view))
        layers.append(LayerInfo(call.path, type(call.module).__name__, shape, call.path,
                                listed=call.path not in hidden, kind=module_kind(call.module), source=call.path,
                                kernel=_kernel(call.module), calls=call.calls, view=view))
    return layers


def _kernel(module: nn.Module) -> tuple[int, ...] | None:
    return tuple(module.kernel_size) if module_kind(module) == "conv" and hasattr(module, "kernel_size") else None


def warn_if_called_again(layer: LayerInfo) -> None:
    """A :class:`ConvscopeWarning` when ``layer``'s module runs more than once in one forward pass
    (ResNet's shared ``relu`` in each block): convscope shows its first call."""
    if layer.calls > 1:
        warnings.warn(f"layer {layer.name!r} runs {layer.calls} times in one forward pass; convscope shows its "
                      "first call", ConvscopeWarning, stacklevel=3)


def unknown_layer(name: str, candidates: Sequence[str]) -> LayerError:
    """The error for an unknown layer name, suggesting the closest valid names."""
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    if not close:
        lowered = name.lower()
        close = [c for c in candidates if lowered in c.lower()][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else "; `convscope layers` lists them"
    return LayerError(f"unknown layer {name!r}{hint}")


def select_layers(spec: str | Sequence[str], layers: Sequence[LayerInfo], kind: str | None = None) -> list[str]:
    """Resolve a layer spec against ``layers`` (all entries, as :func:`discover_layers` returns them)
    to layer names in network order.

    ``spec``: names, comma-separated lists and glob patterns (``block3_*``, matched against listed
    names), or ``all`` for every listed layer whose output is a feature map. With ``kind``
    (``conv``), patterns and ``all`` keep only the layers of that kind (names given one by one are
    kept as they are, for the caller to judge). Unknown names and patterns that match nothing raise
    :class:`LayerError`.
    """
    items = split_spec(spec)
    if not items:
        raise LayerError("empty layer list")
    listed = [layer.name for layer in layers if layer.listed]
    order = {layer.name: i for i, layer in enumerate(layers)}
    kinds = {layer.name: layer.kind for layer in layers}
    chosen: list[str] = []
    for item in items:
        if item == "all":
            matches = [layer.name for layer in layers
                       if layer.listed and layer.is_spatial and (kind is None or layer.kind == kind)]
        elif any(ch in item for ch in "*?["):
            matches = [m for m in fnmatch.filter(listed, item) if kind is None or kinds[m] == kind]
            if not matches:
                what = "layer" if kind is None else f"{kind} layer"
                raise LayerError(f"layer pattern {item!r} matches no {what}; `convscope layers` lists them")
        elif item in order:
            matches = [item]
        else:
            raise unknown_layer(item, listed + [name for name in order if name not in set(listed)])
        chosen.extend(m for m in matches if m not in chosen)
    return sorted(chosen, key=order.__getitem__)


# -- the default layers of each technique ------------------------------------------------------------
def named_layers(layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """The listed layers a technique chooses its defaults from: on a model with aliases only the
    aliases (VGG's Keras names), otherwise every listed layer."""
    listed = [layer for layer in layers if layer.listed]
    aliases = [layer for layer in listed if layer.is_alias]
    return aliases or listed


def transformer_blocks(layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """A vision transformer's blocks, in the order the network reaches them: each module that holds an
    attention module, where its output is seen as a map (a token grid); empty for other networks."""
    by_module = {layer.module: layer for layer in layers if not layer.is_alias}
    blocks = []
    for layer in layers:
        if layer.type == "MultiheadAttention" or layer.type.endswith("Attention"):
            block = by_module.get(layer.module.rpartition(".")[0])
            if block is not None and block.view is not None and block not in blocks:
                blocks.append(block)
    return sorted(blocks, key=list(layers).index)


def default_activation_layers(layers: Sequence[LayerInfo]) -> list[str]:
    """Every convolution and pooling layer with a feature map larger than 1x1 (VGG19: the 21 layers
    block1_conv1 ... block5_pool); in a vision transformer, also each block's token grid."""
    return [layer.name for layer in named_layers(layers)
            if (layer.kind in ("conv", "pool") and layer.is_map_larger_than_1x1)
            or layer in transformer_blocks(layers)]


def default_filter_layers(layers: Sequence[LayerInfo]) -> list[str]:
    """The first convolution of each stage: for each output resolution, in the order the network
    reaches them, the first conv with a kernel larger than 1x1 that outputs it (the first 1x1 conv
    where there is none). Convs with a 1x1 output (squeeze-and-excitation) are never chosen, nor a
    shortcut's 1x1 projection. VGG: block1_conv1 ... block5_conv1; ResNet: the stem conv, then the
    3x3 conv of each stage's first block. A vision transformer: its patch embedding and the blocks
    ending each quarter of its depth (whose channels are then optimized as they are, after the block)."""
    stages: dict[tuple[int, ...], list[LayerInfo]] = {}
    for layer in named_layers(layers):
        if layer.kind == "conv" and layer.is_map_larger_than_1x1:
            stages.setdefault(layer.shape[1:], []).append(layer)
    chosen = []
    for convs in stages.values():
        wide = [conv for conv in convs if conv.kernel is not None and max(conv.kernel) > 1]
        chosen.append((wide or convs)[0])
    blocks = transformer_blocks(layers)
    chosen += [blocks[len(blocks) * quarter // 4 - 1] for quarter in range(1, 5) if len(blocks) * quarter // 4]
    return [layer.name for layer in sorted(dict.fromkeys(chosen), key=list(layers).index)]


def block_outputs(layers: Sequence[LayerInfo]) -> list[LayerInfo]:
    """Each block's output: a listed feature map of a module at a numbered place in a container
    (``_blocks.3``, ``layer1.0``) that holds a convolution and is not one; a vision transformer's
    blocks."""
    convs = [layer.module for layer in layers if layer.kind == "conv"]
    blocks = [layer for layer in layers
              if layer.listed and layer.is_spatial and layer.kind != "conv" and not layer.is_alias
              and layer.module.rpartition(".")[2].isdigit()
              and any(conv.startswith(layer.module + ".") for conv in convs)]
    return sorted(dict.fromkeys([*blocks, *transformer_blocks(layers)]), key=list(layers).index)


def default_atlas_layers(layers: Sequence[LayerInfo]) -> list[str]:
    """Every convolution (its feature map) and every block output, in network order (the atlas adds
    the class scores); on a model with aliases (VGG's Keras names), the aliased convs."""
    named = set(named_layers(layers))
    convs = [layer for layer in layers if layer in named and layer.kind == "conv" and layer.is_spatial]
    return [layer.name for layer in sorted(dict.fromkeys([*convs, *block_outputs(layers)]), key=list(layers).index)]


#: Layers that hand on their input unchanged in eval mode: never the CAM layer themselves.
PASS_THROUGH_TYPES = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "Identity")


def default_cam_layer(layers: Sequence[LayerInfo], num_outputs: int | None = None, within: str | None = None) -> str:
    """The last feature map larger than 1x1 in the forward pass: the tensor that enters the final
    global pooling or flatten, found on the main path even where squeeze-and-excitation blocks pool
    to 1x1 in between. Pass-through layers (dropout, identity) are skipped, and so are trailing maps
    with one channel per class (a conv classifier such as SqueezeNet's), given ``num_outputs``. On a
    model with aliases, the last such alias. ``within``: only the layers under that module path (a
    segmentation model's ``backbone``: its last stage), where it has any. A vision transformer's is
    :func:`last_block_norm`."""
    first_norm = last_block_norm(layers)
    if first_norm is not None:
        return first_norm
    maps = [layer for layer in named_layers(layers)
            if layer.is_map_larger_than_1x1 and layer.type not in PASS_THROUGH_TYPES]
    inside = [layer for layer in maps if within is not None and layer.name.startswith(within + ".")]
    maps = inside or maps
    if not maps:
        raise InputError("layer: the model has no layer with a spatial output; name one", parameter="layer")
    while len(maps) > 1 and num_outputs is not None and maps[-1].shape[0] == num_outputs:
        maps.pop()
    return maps[-1].name


def last_block_norm(layers: Sequence[LayerInfo]) -> str | None:
    """A vision transformer's default CAM layer, as pytorch-grad-cam's tutorials choose it: the first
    norm of the last block (the block holding the last attention module) whose output is seen as a
    map (``encoder.layers.encoder_layer_11.ln_1`` on torchvision's ViT, ``features.7.1.norm1`` on
    Swin); None for a network without one."""
    attention = [layer for layer in layers if layer.type == "MultiheadAttention" or layer.type.endswith("Attention")]
    if not attention or not any(layer.view is not None for layer in layers):
        return None
    block = attention[-1].module.rpartition(".")[0]
    norms = [layer for layer in layers if layer.module.startswith(block + ".") and "Norm" in layer.type
             and layer.view is not None and layer.is_map_larger_than_1x1]
    return norms[0].name if norms else None


def preactivation(layers: Sequence[LayerInfo], name: str) -> LayerInfo:
    """The pre-activation of conv layer ``name``: the conv itself (for an alias, the conv it is named
    after), or the batch norm that directly follows it in the forward pass with as many channels; a
    transformer's layer seen as a map is its own."""
    by_name = {layer.name: layer for layer in layers}
    if by_name[name].view is not None:  # a transformer's token grid: its channels as they are
        return by_name[name]
    if by_name[name].kind != "conv":
        raise InputError(f"layers: {name} is not a convolution layer (filters are drawn for conv layers and "
                         "a transformer's token grids)", parameter="layers")
    modules = [layer for layer in layers if not layer.is_alias]
    position = next(i for i, layer in enumerate(modules) if layer.module == by_name[name].source)
    conv = modules[position]
    if position + 1 < len(modules):
        following = modules[position + 1]
        if following.kind == "norm" and following.shape is not None and conv.shape is not None \
                and following.shape[0] == conv.shape[0]:
            return following
    return conv


def producing_conv(layers: Sequence[LayerInfo], name: str) -> str:
    """The convolution whose channels layer ``name`` shows: ``name`` itself for a conv; otherwise
    the last conv before it in the forward pass with as many channels (the conv under a norm, an
    activation or a pooling layer: EfficientNet's ``_act1`` -> ``_conv_head``); a transformer's layer
    seen as a map, itself. Its alias where it has one. InputError naming ``layer`` where there is none."""
    by_name = {layer.name: layer for layer in layers}
    target = by_name[name]
    if target.kind == "conv" or target.view is not None:  # a transformer's grid: its own channels are drawn
        return name
    modules = [layer for layer in layers if not layer.is_alias]
    position = next(i for i, layer in enumerate(modules) if layer.module == target.module)
    channels = target.shape[0] if target.shape else None
    for layer in reversed(modules[:position]):
        if layer.kind == "conv" and layer.shape is not None and layer.shape[0] == channels:
            aliases = [alias.name for alias in layers if alias.is_alias and alias.source == layer.module]
            return aliases[0] if aliases else layer.name
    raise InputError(f"layer {name}: no convolution before it has its {channels} channels, so its channels "
                     "have no filter pictures", parameter="layer")
