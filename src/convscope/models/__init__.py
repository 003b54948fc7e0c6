"""Models: :func:`load_model` by name (``efficientnet_lite0``, the default; ``vgg16``, ``vgg19``;
``torchvision:<name>``; ``timm:<name>`` when timm is installed) with ``imagenet``, ``random`` or file
weights, or a ``torch.nn.Module`` wrapped as it is. This package holds the registry
(:mod:`.registry`), one module per model source that registers its builders with
:func:`register_model` (:mod:`.bundled`, :mod:`.torchvision_source`, :mod:`.timm_source`; a Keras or
ONNX source is one more such module, imported below), the architectures convscope ships
(:mod:`.efficientnet_lite`, :mod:`.vgg`) and safe weight loading (:mod:`.weights`). It turns names
and files into a :class:`~convscope.model.Model` and nothing else: no drawing, no command line, no
techniques.
"""

from __future__ import annotations

from ..catalog import DEFAULT_MODEL, DEFAULT_WEIGHTS
from .registry import MODELS, RANDOM_SEED, ModelBuilder, load_model, register_model
from .weights import NAMED_WEIGHTS

# The model sources register their builders on import, in the order load_model's error message lists them.
# isort: off
from . import bundled  # noqa: F401
from . import torchvision_source  # noqa: F401
from . import timm_source  # noqa: F401
from . import keras_source  # noqa: F401
from . import onnx_source  # noqa: F401
# isort: on

#: The models ``load_model`` knows by full name.
BUILTIN_MODELS = tuple(name for name in MODELS if not name.endswith(":"))

__all__ = ["load_model", "register_model", "MODELS", "ModelBuilder", "RANDOM_SEED", "DEFAULT_MODEL", "DEFAULT_WEIGHTS",
           "BUILTIN_MODELS", "NAMED_WEIGHTS"]
