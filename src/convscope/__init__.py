"""convscope: see what a convolutional network sees.

Python API::

    import convscope
    model = convscope.load_model("efficientnet_lite0")      # or "vgg19", "torchvision:resnet18", an nn.Module
    x = model.preprocess("cat.jpg")                         # B x 3 x H x W
    model.predict(x, top=5)
    model.layers()                                          # name, type, output shape
    outputs = convscope.activations(model, x)               # {layer: B x C x H x W}, conv and pool layers
    convscope.render_grid(outputs["_conv_stem"][0])         # one layer's channels as a PIL image grid
    convscope.cam(model, x, method="gradcam")               # B x H x W class activation maps in [0, 1]
    images, scores = convscope.filters(model, "_conv_stem", filters=16)  # what 16 filters respond to
    convscope.html_report(model, ["cat.jpg"], "out")         # everything, as a browsable out/index.html
    convscope.evaluate(model, x)                            # every CAM method measured and ranked
    convscope.explain(model, x, top=6)                      # the channels that carried the class score
    convscope.atlas(model, "photos/", "out")                # every unit: picture, examples; out/atlas/index.html

The names are loaded on first use (PEP 562), so ``import convscope`` -- and the command line's
``--help`` -- does not import torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it (attribute of the same name).
_PUBLIC = {
    "colorize": "presentation.drawing", "overlay": "presentation.drawing", "picture_grid": "presentation.drawing",
    "render_grid": "presentation.drawing",
    "ConvscopeError": "errors", "ImageError": "errors", "InputError": "errors", "LayerError": "errors",
    "WeightsError": "errors",
    "Preprocessing": "images", "load_image": "images",
    "LayerInfo": "layers",
    "Model": "model", "Prediction": "model",
    "load_model": "models",
    **dict.fromkeys(("Activations", "CamMaps", "Evaluations", "Explanations", "FilterPictures", "activations", "cam",
                     "evaluate", "explain", "filters"), "presentation.notebook"),
    "html_report": "presentation.run",
    "atlas": "dataset.atlas", "AtlasOptions": "dataset.atlas",
    "CamResult": "techniques.cams", "compute_cam": "techniques.cams",
    "AttributionResult": "techniques.attributions", "Attributions": "presentation.notebook",
    "attribute": "presentation.notebook",
    "FilterResult": "techniques.filters", "optimize_filters": "techniques.filters",
}
#: Submodules reachable as attributes (``convscope.dataset.run``, ``convscope.metrics.deletion``).
_SUBMODULES = {"dataset": "dataset", "metrics": "techniques.metrics"}

__all__ = [
    "CAM_METHODS", "CamResult", "cam", "compute_cam",
    "ConvscopeError", "ImageError", "InputError", "LayerError", "WeightsError",
    "FilterResult", "filters", "optimize_filters",
    "LayerInfo", "Model", "Prediction", "Preprocessing", "activations", "load_image", "load_model",
    "render_grid", "picture_grid", "overlay", "colorize", "html_report",
    "Activations", "CamMaps", "FilterPictures", "Evaluations", "evaluate", "metrics", "dataset", "__version__",
    "Explanations", "explain", "AttributionResult", "Attributions", "attribute", "atlas", "AtlasOptions",
]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    elif name == "CAM_METHODS":
        value = importlib.import_module(".techniques.cams", __name__).METHODS
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("convscope")
        except PackageNotFoundError:  # running from a source tree
            value = "0.0.0"
    else:
        raise AttributeError(f"module 'convscope' has no attribute {name!r}")
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
