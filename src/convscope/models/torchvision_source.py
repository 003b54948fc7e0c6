"""The ``torchvision:`` model source: any torchvision classification, segmentation, detection or video model
by name, its pretrained weights (ImageNet; COCO, with the VOC classes for segmentation) fetched into torch's
cache (a clear WeightsError offline), preprocessing and labels from
torchvision's weights metadata.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import socket
import urllib.error
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..images import Preprocessing
from ..model import IMAGENET_MEAN, IMAGENET_STD, Model
from .registry import build_seeded, load_file_weights, register_model
from .vgg import keras_aliases
from .weights import apply_state_dict


@register_model("torchvision:")
def _torchvision(name: str, spec: str) -> Model:
    return build_torchvision_model(name, spec, f"torchvision:{name}")


def build_torchvision_model(name: str, spec: str, display_name: str, keras_names: bool = False) -> Model:
    """torchvision's classification model ``name`` with weights ``spec``, shown as ``display_name``;
    ``keras_names`` adds Keras layer names (VGG). InputError for an unknown name."""
    import torchvision.models as tvm

    segmentation = tvm.list_models(module=tvm.segmentation)
    detection = tvm.list_models(module=tvm.detection)
    video = tvm.list_models(module=tvm.video)
    available = tvm.list_models(module=tvm) + segmentation + detection + video
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown torchvision classification, segmentation, detection or video model {name!r}{hint}")
    weights_enum = tvm.get_model_weights(name).DEFAULT
    options: dict = {}
    if name in segmentation:  # no backbone weights fetched; the auxiliary head its pretrained weights have
        options = {"weights_backbone": None, "aux_loss": spec == "imagenet" and _has_aux_head(name)}
    elif name in detection:  # no backbone weights fetched; every box returned (--score-threshold chooses)
        options = {"weights_backbone": None, _score_option(name): 0.0}
    module = build_seeded(lambda: tvm.get_model(name, weights=None, **options))
    if spec == "imagenet":
        apply_state_dict(module, _fetch_torchvision_weights(weights_enum, display_name), "imagenet", display_name)
    elif spec != "random":
        load_file_weights(module, spec, display_name)
    labels = weights_enum.meta.get("categories")
    transforms = weights_enum.transforms()
    crop = getattr(transforms, "crop_size", None) or getattr(transforms, "resize_size", None) or [224]
    size = (crop[0], crop[0])
    mean = tuple(getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(getattr(transforms, "std", IMAGENET_STD))
    if name in detection:  # a detector normalizes and resizes inside: it takes RGB in [0, 1]
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        size = (DETECTION_SIZES.get(name, DETECTION_SIZE),) * 2
    frames = VIDEO_FRAMES if name in video else None  # Kinetics-400 clips: 16 frames of 112 x 112
    aliases, hidden = keras_aliases(module) if keras_names else ([], [])
    outputs = len(labels) if name in segmentation + detection and labels else _out_features(module)
    return Model(module, name=display_name, weights=spec, preprocessing=Preprocessing(size, mean, std, frames),
                 labels=labels if labels and len(labels) == outputs else None, aliases=aliases, hidden=hidden)


#: The clip length torchvision's video models are trained and evaluated on.
VIDEO_FRAMES = 16


#: The input a detector is given (it resizes inside, to 800 px for the R-CNNs): the SSDs' own sizes.
DETECTION_SIZE = 512
DETECTION_SIZES = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320,
                   "fasterrcnn_mobilenet_v3_large_320_fpn": 320}


def _score_option(name: str) -> str:
    """The keyword of torchvision's detector ``name`` that drops weak boxes (R-CNNs: ``box_score_thresh``)."""
    return "box_score_thresh" if "rcnn" in name else "score_thresh"


def _has_aux_head(name: str) -> bool:
    """Whether torchvision's segmentation model ``name`` takes ``aux_loss`` (its pretrained weights then
    include the auxiliary classifier)."""
    import inspect

    import torchvision.models as tvm

    return "aux_loss" in inspect.signature(tvm.segmentation.__dict__[name]).parameters


def _fetch_torchvision_weights(weights_enum, model_name: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict, from torch's cache or downloaded into it (torch's own
    "Downloading ..." line on stdout is kept off convscope's output)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return weights_enum.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, socket.error, TimeoutError, ConnectionError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
        raise WeightsError(
            f"{model_name}: ImageNet weights are not cached at {cache} and cannot be downloaded "
            f"({getattr(exc, 'reason', exc)}); use weights=random (untrained) or weights=PATH "
            "(a .pth/.pt/.safetensors state dict)", mentions=["weights"]) from None


def _out_features(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub.out_features
    return last
