"""The Keras model source: a ``.keras`` (or ``.h5``) file, or a ``keras.Model`` in memory, run on
Keras 3's PyTorch backend (``pip install 'convscope[keras]'``).

On that backend a Keras model and every one of its layers are ``torch.nn.Module``\\ s: forward hooks on a
layer fire and gradients flow through it, but the model's ``named_modules()`` lists none of its layers.
:class:`KerasNetwork` is the torch module convscope sees: it registers the layers under ``layers.<name>``
(the Keras names are the listed layer names), takes the NCHW RGB input every technique makes, hands
the model NHWC (BGR for ``caffe`` preprocessing), and explains a final softmax ``Dense`` layer by its
logits (the layer without its softmax, as the Keras Grad-CAM tutorial does), never changing the model.
Layer outputs are NHWC: the :class:`~convscope.model.Model` is ``channels_last``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..images import Preprocessing
from ..layers import LayerAlias
from ..model import IMAGENET_MEAN, IMAGENET_STD, Model
from .registry import register_model_file, register_model_object

#: Files read as Keras models.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")

#: Keras's preprocessing modes as convscope's RGB-in-[0, 1] normalization ``(x - mean) / std`` (and
#: whether the model takes BGR): ``caffe`` BGR minus the ImageNet means in 0-255 units, ``tf`` [-1, 1],
#: ``torch`` the ImageNet mean and std, ``none`` the pixels in 0-255 (models that rescale inside).
PREPROCESS: dict[str, tuple[tuple[float, ...], tuple[float, ...], bool]] = {
    "caffe": ((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255,) * 3, True),
    "tf": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), False),
    "torch": (IMAGENET_MEAN, IMAGENET_STD, False),
    "none": ((0.0, 0.0, 0.0), (1 / 255,) * 3, False),
}

#: ``keras.applications`` model names (lower case, by prefix) -> the preprocessing Keras documents for them.
APPLICATION_PREPROCESS = (
    ("vgg16", "caffe"), ("vgg19", "caffe"), ("resnet50v2", "tf"), ("resnet101v2", "tf"), ("resnet152v2", "tf"),
    ("resnet", "caffe"), ("mobilenetv3", "none"), ("mobilenet", "tf"), ("inception", "tf"), ("xception", "tf"),
    ("nasnet", "tf"), ("densenet", "torch"), ("efficientnet", "none"), ("convnext", "none"), ("regnet", "none"),
)


def import_keras() -> Any:
    """Keras on its PyTorch backend: ``KERAS_BACKEND=torch`` set before its first import; an
    InputError when it is missing or was imported with another backend."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise InputError("model: Keras models need Keras 3: pip install 'convscope[keras]'",
                         parameter="model") from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise InputError(f"model: Keras was imported with the {backend} backend; convscope runs Keras models on its "
                         "PyTorch backend: set KERAS_BACKEND=torch before Keras is first imported (or let convscope "
                         "import it)", parameter="model")
    return keras


def is_keras_model(value: Any) -> bool:
    """Whether ``value`` is a ``keras.Model`` (without importing Keras)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, keras.Model)


def guessed_preprocess(model: Any) -> str | None:
    """The preprocessing Keras documents for a ``keras.applications`` model, from its name; None when
    the name is not one of theirs."""
    name = str(getattr(model, "name", "")).lower()
    return next((mode for prefix, mode in APPLICATION_PREPROCESS if name.startswith(prefix)), None)


class KerasNetwork(nn.Module):
    """A Keras model as a torch module taking NCHW RGB input (see the module notes)."""

    def __init__(self, model: Any, bgr: bool = False) -> None:
        super().__init__()
        keras = import_keras()
        self.keras_model = model
        self.layers = nn.ModuleDict({layer.name: layer for layer in model.layers})
        self.bgr = bgr
        last = model.layers[-1]
        self.head = last if isinstance(last, keras.layers.Dense) and \
            getattr(last.activation, "__name__", "") == "softmax" else None
        # the same layers up to the head's input (a new Keras graph over them: the model is not changed)
        self.features = keras.Model(model.inputs, last.input) if self.head is not None else None

    def __reduce__(self) -> tuple:
        """Pickled as its Keras model (Keras pickles it whole): the registered layers, the head and the
        features are rebuilt from it, so that they stay the model's own layers (a Ray actor's copy)."""
        return (KerasNetwork, (self.keras_model, self.bgr))

    def forward(self, x: torch.Tensor) -> Any:
        nhwc = x.permute(0, 2, 3, 1)
        if self.bgr:
            nhwc = nhwc.flip(-1)
        if self.head is None:
            return self.keras_model(nhwc)
        features = self.features(nhwc)
        logits = features @ self.head.kernel.value
        return logits + self.head.bias.value if self.head.use_bias else logits


def fused_activation(layer: Any) -> bool:
    """Whether a Keras layer is a convolution with a non-linear activation fused into it."""
    activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
    return hasattr(layer, "convolution_op") and hasattr(layer, "kernel") and activation != "linear"


def convolution_before_activation(layer: Any, inputs: Any) -> torch.Tensor:
    """A Keras convolution's output before its fused activation, from the layer's inputs (its own
    ``convolution_op`` and bias: what a torch model's conv outputs before its ReLU module)."""
    output = layer.convolution_op(inputs[0], layer.kernel)
    return output + layer.bias.value if layer.use_bias else output


def keras_model(model: Any, name: str, preprocess: str | None = None,
                input_size: int | tuple[int, int] | None = None) -> Model:
    """A Keras model as a convscope :class:`~convscope.model.Model`: Keras layer names, its
    preprocessing (``preprocess``, or the one Keras documents for a ``keras.applications`` name, or
    ``torch``'s), its input size (from its input shape, else ``input_size``, else 224)."""
    guessed = guessed_preprocess(model)
    mode = preprocess or guessed or "torch"
    if mode not in PREPROCESS:
        raise InputError(f"preprocess {mode!r}: choose caffe, tf, torch or none", parameter="preprocess")
    mean, std, bgr = PREPROCESS[mode]
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else tuple(model.input_shape[0])
    if len(shape) != 4:
        raise InputError(f"model {name}: takes input of shape {shape}, not images (batch x height x width x "
                         "channels)", parameter="model")
    height, width, channels = shape[1:]
    fixed = height is not None and width is not None
    if not fixed:
        size = input_size or 224
        height, width = (size, size) if isinstance(size, int) else size
    if channels == 1:
        mean, std = mean[:1], std[:1]
    network = KerasNetwork(model, bgr).eval()
    aliases = [LayerAlias(layer.name, f"layers.{layer.name}", type(layer).__name__, f"layers.{layer.name}")
               for layer in model.layers]
    hidden = [path for path, _ in network.named_modules() if path]
    result = Model(network, name=name, weights="keras", preprocessing=Preprocessing((int(height), int(width)),
                                                                                     mean, std),
                   aliases=aliases, hidden=hidden, channels_last=True)
    result.fixed_input_size = fixed
    result.preactivations = {f"layers.{layer.name}": convolution_before_activation for layer in model.layers
                             if fused_activation(layer)}
    if preprocess is None:
        why = f"as Keras documents for {model.name}" if guessed else \
            f"{model.name} is not a keras.applications name: the ImageNet mean and std"
        result.loading_note = f"preprocessing: {mode} ({why}; --preprocess sets it)"
    return result


@register_model_object(is_keras_model)
def load_keras_object(model: Any, preprocess: str | None = None,
                      input_size: int | tuple[int, int] | None = None) -> Model:
    """A ``keras.Model`` in memory."""
    return keras_model(model, model.name, preprocess, input_size)


@register_model_file(*KERAS_SUFFIXES)
def load_keras_file(path: str, preprocess: str | None = None,
                    input_size: int | tuple[int, int] | None = None) -> Model:
    """A ``.keras`` / ``.h5`` file (Keras's safe mode: a file whose layers would run code is refused)."""
    file = Path(path)
    if file.is_dir():
        hint = " (a TensorFlow SavedModel: export it with model.save('model.keras') or to ONNX)" \
            if (file / "saved_model.pb").exists() else ""
        raise InputError(f"model {path}: is a folder, not a Keras file{hint}", parameter="model")
    if not file.exists():
        raise InputError(f"model {path}: no such file", parameter="model")
    keras = import_keras()
    try:
        model = keras.models.load_model(file, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError, AttributeError) as exc:
        raise InputError(f"model {path}: {_reason(exc)}", parameter="model") from None
    return keras_model(model, file.name, preprocess, input_size)


def _reason(exc: BaseException) -> str:
    """Keras's error in one line: a class it cannot find, code it will not run, or what it said."""
    text = " ".join(str(exc).split())
    located = re.search(r"Could not locate class '([^']+)'|Unknown layer: '([^']+)'", text)
    if located:
        found = located.group(1) or located.group(2)
        return (f"its layer class {found!r} cannot be found; import the module that defines it and pass it: "
                f"keras.models.load_model(path, custom_objects={{{found!r}: {found}}}), then "
                "convscope.load_model(model)")
    if "safe_mode" in text or "unsafe" in text.lower():
        return "it holds code (a Lambda layer) that would run when loaded; convscope loads Keras files in safe mode"
    return f"not a readable Keras file ({text[:200]})"
