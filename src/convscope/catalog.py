"""The names and defaults the command line offers, importable without torch.

``convscope --help`` and a usage error answer before torch is imported (0.1 s instead of several
seconds), so the parser takes its choices and defaults from here. The modules that own these
values import them from here (one definition each); the two registries -- the CAM methods of
:mod:`convscope.techniques.cams` and the filter recipes of :mod:`convscope.techniques.filter_recipes`
-- are the truth for Python, and a test checks that the built-in names listed here agree with them.
"""

from __future__ import annotations

#: What a map explains (convscope/targets.py registers each; a test checks the two agree) and the
#: multilabel target's default threshold on the sigmoid probability.
#: A Keras or ONNX model's input normalizations (``models/keras_source.PREPROCESS``).
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")
#: Model files convscope opens (``--model path`` or the first IMAGE): Keras's, then ONNX.
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5", ".onnx")
TARGET_NAMES = ("class", "softmax", "rest", "multilabel", "segmentation", "embedding", "output", "detection")
TARGET_THRESHOLD = 0.5

#: The embedded default model and its weights.
DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_WEIGHTS = "imagenet"

#: Intermediate outputs: tiles per row, normalization, colormap.
PER_ROW = 16
NORMALIZATIONS = ("channel", "layer")
NORMALIZE = "channel"
CMAP = "viridis"

#: Filters: how many, picture size, what a picture maximizes, and each built-in recipe's default steps
#: (the first is the default recipe).
DEFAULT_FILTERS = 64
DEFAULT_SIZE = 64
OBJECTIVES = ("mean", "neuron")
RECIPE_STEPS = {"lucid": 64, "classic": 40, "maco": 64, "accentuate": 64}
#: The recipes that start from a photo (``--from``): not for pictures of every unit (the atlas).
PHOTO_RECIPES = ("accentuate",)

#: Class activation maps: the built-in methods in the order they are offered (the first is the
#: default), and the heatmap's weight in an overlay.
CAM_METHOD_NAMES = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam", "eigencam",
                    "gradcam-elementwise", "eigengradcam", "segeigencam", "kpcacam", "fem", "cam", "ablationcam",
                    "fullgrad", "finercam", "shapleycam", "smoothgradcam++", "sscam", "iscam")
#: The CAM methods that draw copies of the input (noisy or scaled), with torchcam's default number of copies.
SAMPLED_CAM_METHODS = {"smoothgradcam++": 4, "sscam": 35, "iscam": 10}
#: The pixel attributions (techniques/attributions.py registers each; a test checks the two agree).
ATTRIBUTION_METHOD_NAMES = ("saliency", "inputxgradient", "integratedgradients", "smoothgrad", "guidedbackprop",
                            "deconvolution", "guidedgradcam", "occlusion")
#: Concepts per factorization by default (pytorch-grad-cam's run_dff_on_image).
CONCEPTS_N = 5
#: What "which map to trust" ranks: every layer map and every pixel attribution.
RANKED_METHOD_NAMES = CAM_METHOD_NAMES + ATTRIBUTION_METHOD_NAMES
#: The signed overlay's strength at the largest magnitude, and the attributions' option defaults.
ATTRIBUTION_ALPHA = 0.6
ATTRIBUTION_DEFAULTS = {"steps": 50, "samples": 50, "sigma": 0.15, "window": 16, "stride": 8}
#: How the maps of several layers are fused: the first is the default (pytorch-grad-cam's mean).
FUSE_MODES = ("mean", "max")
CAM_ALPHA = 0.4
#: The methods the report's "Which map to trust" ranks by default, chosen for cost: the single-pass
#: gradient maps (``run --trust``: all, none or a list).
TRUST_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "gradcam-elementwise", "eigengradcam",
                 "segeigencam")

#: Which map to trust: deletion / insertion steps, the default metrics and every metric.
STEPS = 20
DEFAULT_METRICS = ("deletion", "insertion", "drop", "sanity")
METRIC_NAMES = ("deletion", "insertion", "drop", "sanity", "pointing")
#: Randomizations the sanity check averages (``--sanity-seeds``).
SANITY_SEEDS = 5

#: Precisions a call can compute in.
PRECISIONS = ("auto", "fp32", "bf16", "tf32")

#: The bundled sample photos (``sample:NAME`` on the command line).
SAMPLES = ("chelsea", "coffee", "grace_hopper")

#: Dataset examples per channel; channels shown by ``explain``.
EXAMPLES_TOP = 9
EXPLAIN_TOP = 6

#: Each technique's default precision: filters measure the fastest (``auto``); the maps and their
#: evaluations (``cam``, ``evaluate``, ``explain``, ``dataset``) are exact by default.
FILTERS_PRECISION = "auto"
MAPS_PRECISION = "fp32"

#: The sub-folders of an output folder, one per kind of file.
ACTIVATIONS_DIR = "activations"
FILTERS_DIR = "filters"
ATTRIBUTE_DIR = "attribute"
CONCEPTS_DIR = "concepts"
CAM_DIR = "cam"
EXPLAIN_DIR = "explain"
EVALUATE_DIR = "evaluate"
IMAGES_DIR = "images"
DATASET_DIR = "dataset"
EXAMPLES_DIR = "examples"
ATLAS_DIR = "atlas"

#: The atlas's pictures by default: steps and picture size (class pictures are seen at the model's
#: input size whatever their size), and units per picture shard.
ATLAS_STEPS = 64
ATLAS_SIZE = 64
ATLAS_UNITS_PER_SHARD = 64

#: The metrics a dataset run can store per image, and the smallest and largest filter picture: one
#: definition for the library and the command line's early checks.
DATASET_METRICS = ("drop", "deletion", "insertion")
FILTER_SIZES = (16, 1024)
