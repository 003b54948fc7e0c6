"""Class activation maps: Grad-CAM and its family.

All methods work on one layer's feature maps ``A`` (B x K x h x w) and, for the gradient methods,
``g = dY_c/dA`` where ``Y_c`` is the class score before softmax:

* ``gradcam``   (Selvaraju et al. 2017): ``w_k = mean_ij g_kij``;        map = ReLU(sum_k w_k A_k)
* ``gradcam++`` (Chattopadhay et al. 2018): ``alpha = g^2 / (2 g^2 + sum_ij A_k * g^3)`` (0 where the
  denominator is 0), ``w_k = sum_ij alpha * ReLU(g)``;                    map = ReLU(sum_k w_k A_k)
* ``xgradcam``  (Fu et al. 2020): ``w_k = sum_ij (A_kij / sum_ij A_kij) g_kij``; map = ReLU(sum_k w_k A_k)
* ``layercam``  (Jiang et al. 2021): map = ReLU(sum_k ReLU(g_k) * A_k)  (element-wise)
* ``hirescam``  (Draelos & Carin 2020): map = ReLU(sum_k g_k * A_k)     (element-wise)
* ``scorecam``  (Wang et al. 2020): each channel, upsampled to the input and min-max normalized to
  [0, 1], masks the input; ``w_k = Y_c(x * M_k) - Y_c(x * 0)`` (softmax-free, relative to the
  all-zero baseline);                                                     map = ReLU(sum_k w_k A_k)
* ``eigencam``  (Muhammad & Yeasin 2020): the projection of the centred activations (hw x K) on
  their first principal component, signed to correlate positively with sum_k A_k; then ReLU.

Every map is then upsampled bilinearly (align_corners=False) to the input size and min-max
normalized per image (an all-zero map stays zero; a constant positive map becomes all ones).

Gradients come from ``torch.autograd.grad`` on the target layer's output, which the forward hook
detaches and hands on as a clone: the backward pass stops at the layer, no parameter's ``.grad``
is filled, frozen models work, and an in-place op after the layer cannot change ``A``.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .hooks import capture_outputs, evaluating
from .images import ImageSource
from .intermediate import as_input, as_model
from .model import Model
from .precision import autocast, prepare_input, resolve_precision

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam")
GRADIENT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "xgradcam": "XGrad-CAM",
                "layercam": "Layer-CAM", "hirescam": "HiResCAM", "scorecam": "Score-CAM", "eigencam": "Eigen-CAM"}
#: Masked inputs per forward pass in Score-CAM (bounds its memory).
SCORECAM_BATCH = 32


@dataclass
class CamResult:
    """A batch of maps: ``maps`` B x H x W in [0, 1] at the input size, ``low_res`` B x h x w (after
    ReLU, before upsampling), the class of each image, the layer, the method and the logits."""

    maps: torch.Tensor
    low_res: torch.Tensor
    classes: list[int]
    layer: str
    method: str
    logits: torch.Tensor


# -- weights and maps from A and g (B x K x h x w) --------------------------------------------------
def _weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return torch.relu((weights[:, :, None, None] * acts).sum(dim=1))


def map_from_gradients(method: str, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The low-resolution map (B x h x w, after ReLU) of a gradient method."""
    if method == "gradcam":
        return _weighted_sum(grads.mean(dim=(2, 3)), acts)
    if method == "gradcam++":
        g2, g3 = grads.pow(2), grads.pow(3)
        denominator = 2 * g2 + acts.sum(dim=(2, 3), keepdim=True) * g3
        alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
        return _weighted_sum((alpha * torch.relu(grads)).sum(dim=(2, 3)), acts)
    if method == "xgradcam":
        total = acts.sum(dim=(2, 3), keepdim=True)
        share = torch.where(total != 0, acts / torch.where(total != 0, total, 1.0), 0.0)
        return _weighted_sum((share * grads).sum(dim=(2, 3)), acts)
    if method == "layercam":
        return torch.relu((torch.relu(grads) * acts).sum(dim=1))
    if method == "hirescam":
        return torch.relu((grads * acts).sum(dim=1))
    raise InputError(f"not a gradient method: {method!r}")


def eigen_map(acts: torch.Tensor) -> torch.Tensor:
    """Eigen-CAM: per image, project the centred (hw x K) activations on their first principal
    component; the sign makes the map correlate positively with sum_k A_k; then ReLU."""
    maps = []
    for a in acts.float():
        k, h, w = a.shape
        matrix = a.reshape(k, h * w).T
        centred = matrix - matrix.mean(dim=0, keepdim=True)
        if not torch.any(centred != 0):
            maps.append(torch.zeros(h, w, dtype=torch.float32, device=a.device))
            continue
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = centred @ vh[0]
        total = matrix.sum(dim=1)
        if torch.dot(projection, total - total.mean()) < 0:
            projection = -projection
        maps.append(torch.relu(projection).reshape(h, w))
    return torch.stack(maps)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalization to [0, 1]; all-zero stays zero, constant positive becomes ones."""
    flat = maps.flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    spread = high - low
    normalized = torch.where(spread > 0, (flat - low) / torch.where(spread > 0, spread, 1.0),
                             (high > 0).to(flat.dtype).expand_as(flat))
    return normalized.view_as(maps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x h x w -> B x H x W, bilinear with align_corners=False, then min-max per map."""
    resized = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(resized)


# -- running the model -----------------------------------------------------------------------------
@contextmanager
def _differentiable_from(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``module`` so that its (first) output becomes a leaf ``A`` that requires grad: gradient
    recording starts there, the rest of the network sees a clone of it (in-place ops downstream cannot
    touch ``A``), and backward stops at it. Run the forward under ``torch.no_grad()``."""
    holder: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if "acts" in holder:
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise InputError("the CAM layer must output a B x C x H x W feature map")
        acts = output.detach().requires_grad_(True)
        holder["acts"] = acts
        torch.set_grad_enabled(True)
        return acts.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


def resolve_classes(model: Model, classes: Sequence[int | str] | int | str | None, batch: int,
                    logits: torch.Tensor) -> list[int]:
    """One class index per image: None -> each image's top-1; an index or label per image."""
    if classes is None:
        return logits.argmax(dim=1).tolist()
    if isinstance(classes, (int, str)) or (isinstance(classes, torch.Tensor) and classes.dim() == 0):
        raise InputError(f"classes must be a list with one class per image ({batch}), got {classes!r}")
    values = classes.tolist() if isinstance(classes, torch.Tensor) else list(classes)
    if len(values) != batch:
        raise InputError(f"classes has {len(values)} entries for a batch of {batch} images: give one class per image")
    return [model.class_index(value) for value in values]


def default_cam_layer(model: Model) -> str:
    """The last layer with a spatial output larger than 1x1 before the network turns to vectors
    (global pooling, flatten or a linear layer); on a model with aliases, the last such alias."""
    candidates = model.layers()
    if model.aliases:
        names = {alias.name for alias in model.aliases}
        candidates = [layer for layer in candidates if layer.name in names]
    chosen = None
    for layer in candidates:
        if layer.is_spatial and layer.shape[1] * layer.shape[2] > 1:
            chosen = layer.name
        elif chosen is not None:
            break
    if chosen is None:
        raise InputError("the model has no layer with a spatial output; name one with --layer")
    return chosen


def cam_layer(model: Model, layer: str | None = None) -> str:
    """The layer to explain: ``layer`` checked to output a feature map, or the default layer."""
    if layer is None:
        return default_cam_layer(model)
    info = model.layer(layer)
    if not info.is_spatial:
        raise InputError(f"--layer {layer}: outputs {list(info.shape or [])}, not a C x H x W feature map")
    return layer


def compute_cam(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
                classes: Sequence[int | str] | None = None, layer: str | None = None,
                method: str = "gradcam", precision: str = "fp32",
                scorecam_batch: int = SCORECAM_BATCH) -> CamResult:
    """Class activation maps with everything around them (see :class:`CamResult`)."""
    model = as_model(model)
    if method not in METHODS:
        raise InputError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    if precision not in ("fp32", "bf16"):
        raise InputError(f"--precision must be fp32 or bf16, got {precision!r}")
    precision = resolve_precision(precision, model.device)
    layer = cam_layer(model, layer)
    x = as_input(model, x)
    target = model.submodule(layer)
    size = (x.shape[2], x.shape[3])
    with evaluating(model.module):
        if method in GRADIENT_METHODS:
            with _differentiable_from(target) as holder, torch.no_grad(), autocast(model.device, precision):
                logits = model.module(prepare_input(x, precision))
                chosen = resolve_classes(model, classes, x.shape[0], logits)
                index = torch.tensor(chosen, device=logits.device)[:, None]
                score = logits.float().gather(1, index).sum()
                (grads,) = torch.autograd.grad(score, holder["acts"])
            acts, grads = holder["acts"].detach().float(), grads.float()
            low_res = map_from_gradients(method, acts, grads)
            logits = logits.detach()
        else:
            with torch.no_grad(), autocast(model.device, precision), \
                    capture_outputs({layer: target}) as captured:
                logits = model.module(prepare_input(x, precision))
                chosen = resolve_classes(model, classes, x.shape[0], logits)
                acts = captured[layer].float()
                if method == "eigencam":
                    low_res = eigen_map(acts)
                else:
                    low_res = _score_cam(model, x, acts, logits, chosen, precision, scorecam_batch)
    return CamResult(upsample(low_res, size), low_res.float(), chosen, layer, method, logits.float())


def _score_cam(model: Model, x: torch.Tensor, acts: torch.Tensor, logits: torch.Tensor, classes: list[int],
               precision: str, batch_size: int) -> torch.Tensor:
    """Score-CAM weights by masked forward passes, ``batch_size`` masked inputs at a time.

    A constant channel needs no forward pass: its mask is all zeros (weight 0) or, if positive, all
    ones, whose masked input is the image itself (weight ``Y_c(x) - Y_c(0)``, from ``logits``).
    """
    if batch_size < 1:
        raise InputError(f"scorecam_batch must be at least 1, got {batch_size}")
    size = (x.shape[2], x.shape[3])
    baseline = model.module(prepare_input(torch.zeros_like(x[:1]), precision)).float()
    maps = []
    for image, image_acts, image_logits, cls in zip(x, acts, logits, classes):
        flat = image_acts.flatten(1)
        high = flat.max(dim=1).values
        varying = torch.nonzero(high > flat.min(dim=1).values).flatten()
        weights = torch.where(high > 0, image_logits[cls].float() - baseline[0, cls], 0.0)
        for start in range(0, varying.numel(), batch_size):
            channels = varying[start:start + batch_size]
            masks = F.interpolate(image_acts[channels, None], size=size, mode="bilinear", align_corners=False)
            masked = image[None] * minmax(masks[:, 0]).to(x.dtype)[:, None]
            scores = model.module(prepare_input(masked, precision)).float()[:, cls]
            weights[channels] = scores - baseline[0, cls]
        maps.append(_weighted_sum(weights[None], image_acts[None])[0])
    return torch.stack(maps)


def cam(model: Model | nn.Module, x: torch.Tensor | ImageSource | Sequence[ImageSource],
        classes: Sequence[int | str] | None = None, layer: str | None = None,
        method: str = "gradcam", precision: str = "fp32") -> torch.Tensor:
    """Class activation maps, B x H x W in [0, 1] at the input size.

    ``classes``: one class (index or label) per image, or None for each image's top-1 prediction;
    a list of another length is an error. ``layer``: default the last spatial layer before the
    global pooling. ``method``: one of :data:`METHODS`. ``precision``: ``fp32`` or ``bf16``
    (autocast with channels_last input; the maps are computed in fp32).
    """
    return compute_cam(model, x, classes, layer, method, precision).maps
