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
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .drawing import colorize, overlay, picture_grid, render_grid
from .errors import ConvscopeError, ImageError, InputError, LayerError, WeightsError
from .images import Preprocessing, load_image
from .layers import LayerInfo
from .model import Model, Prediction
from .models import load_model
from . import dataset, metrics
from .notebook import (Activations, CamMaps, Evaluations, Explanations, FilterPictures, activations, cam, evaluate,
                       explain, filters)
from .run import html_report
from .techniques.cams import METHODS as CAM_METHODS
from .techniques.cams import CamResult, compute_cam
from .techniques.filters import FilterResult, optimize_filters

try:
    __version__ = version("convscope")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "CAM_METHODS", "CamResult", "cam", "compute_cam",
    "ConvscopeError", "ImageError", "InputError", "LayerError", "WeightsError",
    "FilterResult", "filters", "optimize_filters",
    "LayerInfo", "Model", "Prediction", "Preprocessing", "activations", "load_image", "load_model",
    "render_grid", "picture_grid", "overlay", "colorize", "html_report",
    "Activations", "CamMaps", "FilterPictures", "Evaluations", "evaluate", "metrics", "dataset", "__version__",
    "Explanations", "explain",
]
