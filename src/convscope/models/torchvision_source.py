"""The ``torchvision:`` model source: any torchvision classification model by name, its ImageNet
weights fetched into torch's cache (a clear WeightsError offline), preprocessing and labels from
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

    available = tvm.list_models(module=tvm)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown torchvision classification model {name!r}{hint}")
    weights_enum = tvm.get_model_weights(name).DEFAULT
    module = build_seeded(lambda: tvm.get_model(name, weights=None))
    if spec == "imagenet":
        apply_state_dict(module, _fetch_torchvision_weights(weights_enum, display_name), "imagenet", display_name)
    elif spec != "random":
        load_file_weights(module, spec, display_name)
    labels = weights_enum.meta.get("categories")
    transforms = weights_enum.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (crop[0], crop[0]) if crop else (224, 224)
    mean = tuple(getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(getattr(transforms, "std", IMAGENET_STD))
    aliases, hidden = keras_aliases(module) if keras_names else ([], [])
    return Model(module, name=display_name, weights=spec, preprocessing=Preprocessing(size, mean, std),
                 labels=labels if labels and len(labels) == _out_features(module) else None,
                 aliases=aliases, hidden=hidden)


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
