"""The command line's parser: every command's options, each shared option defined once, choices and
defaults taken from :mod:`convscope.catalog`, without importing torch. The commands themselves are in
:mod:`convscope.cli.commands`, the checks that need no model in :mod:`convscope.cli.checks`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ..catalog import (
    ATLAS_SIZE,
    ATLAS_STEPS,
    ATLAS_UNITS_PER_SHARD,
    ATTRIBUTION_ALPHA,
    ATTRIBUTION_DEFAULTS,
    ATTRIBUTION_METHOD_NAMES,
    CAM_ALPHA,
    CAM_METHOD_NAMES,
    CMAP,
    CONCEPTS_N,
    DEFAULT_FILTERS,
    DEFAULT_METRICS,
    DEFAULT_MODEL,
    DEFAULT_SIZE,
    DEFAULT_WEIGHTS,
    EXAMPLES_TOP,
    EXPLAIN_TOP,
    FILTERS_PRECISION,
    FUSE_MODES,
    MAPS_PRECISION,
    METRIC_NAMES,
    NORMALIZATIONS,
    NORMALIZE,
    OBJECTIVES,
    PER_ROW,
    PHOTO_RECIPES,
    PRECISIONS,
    PREPROCESS_MODES,
    RANKED_METHOD_NAMES,
    RECIPE_STEPS,
    SAMPLED_CAM_METHODS,
    SAMPLES,
    SANITY_SEEDS,
    STEPS,
    TARGET_NAMES,
    TARGET_THRESHOLD,
    TRUST_METHODS,
)

SAMPLE_NAMES = ", ".join(f"sample:{name}" for name in SAMPLES)
#: The IMAGE argument's help, the same in every command.
IMAGE_HELP = f"an image file, or sample:NAME for a bundled photo ({SAMPLE_NAMES})"
IMAGES_HELP = f"image files, or sample:NAME for a bundled photo ({SAMPLE_NAMES})"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("convscope")
        except PackageNotFoundError:  # running from a source tree
            found = "0.0.0"
        print(f"convscope {found}")
        parser.exit(0)


def _comma_list(text: str) -> list[str]:
    values = [value.strip() for value in text.split(",") if value.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected names or indices separated by commas, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers, each option defined once: ``run`` (--device, --debug), ``model`` (--model,
    --weights), ``out`` (--out), ``quiet`` (--quiet)."""
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--device", default="cpu", metavar="DEV",
                     help="torch device: cpu (default), cuda, cuda:1, mps or auto")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                       help=f"{DEFAULT_MODEL} (default, offline ImageNet weights), vgg16, vgg19, "
                            "torchvision:<name>, timm:<name>, or a model file: model.keras (or .h5), model.onnx "
                            "(also given as the first IMAGE)")
    group.add_argument("--preprocess", choices=PREPROCESS_MODES, default=None,
                       help="a Keras or ONNX model's input normalization: caffe (BGR minus the ImageNet means), "
                            "tf ([-1, 1]), torch (ImageNet mean and std) or none (0-255); default: as Keras "
                            "documents for a keras.applications name, else torch")
    group.add_argument("--input-size", default=None, metavar="H,W",
                       help="the input size of a model file whose size is not fixed (an ONNX file with dynamic "
                            "height and width): H,W or one number")
    group.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="SPEC",
                       help="imagenet (default), random (untrained, seeded) or a path to a state dict "
                            "(.pth/.pt/.safetensors)")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", default="convscope-out", metavar="DIR", help="output folder (default convscope-out)")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="no progress output")
    images = argparse.ArgumentParser(add_help=False)
    images.add_argument("--crop", action="store_true",
                        help="resize the short side and cut the centre, as torchvision's weights expect "
                             "(default: the whole image, resized)")
    target = argparse.ArgumentParser(add_help=False)
    group = target.add_argument_group("target (what a map explains)")
    group.add_argument("--target", choices=TARGET_NAMES,
                       help="class (a class's logit), softmax, rest (logit minus cross-entropy), multilabel, "
                            "segmentation, embedding, output or detection (default: chosen from what the model "
                            "returns)")
    group.add_argument("--multilabel", action="store_true",
                       help="a sigmoid model: every class above --threshold gets its map (as --target multilabel)")
    group.add_argument("--threshold", type=float, default=TARGET_THRESHOLD, metavar="P",
                       help=f"multilabel: the sigmoid probability a class must exceed (default {TARGET_THRESHOLD})")
    group.add_argument("--score-threshold", type=float, default=TARGET_THRESHOLD, metavar="P",
                       help=f"detection: the score of the boxes explained (default {TARGET_THRESHOLD})")
    group.add_argument("--reference", metavar="IMAGE|DIR",
                       help="embedding: the image (or folder of images, their mean embedding) each map compares with")
    group.add_argument("--region", metavar="X0,Y0,X1,Y1|MASK",
                       help="segmentation: a box in the model input's pixels or a mask image (nonzero = inside) "
                            "whose summed class logits a map explains (default: the pixels assigned to the class)")
    return {"run": run, "model": model, "out": out, "quiet": quiet, "images": images, "target": target}


def _classes_option(parser: Any, default: str) -> None:
    """``--class C``, repeatable, the same in every command that takes classes but for its default
    (``parser``: a parser or a group of exclusive options)."""
    parser.add_argument("--class", dest="classes", action="append", metavar="C",
                        help=f"class index or label; repeat for several (default: {default})")


def _precision_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--precision`` (see :mod:`convscope.precision`), the same everywhere but for its default."""
    meanings = {"auto": "the fastest measured on this work, never slower than fp32", "fp32": "TF32 off",
                "bf16": "autocast with channels_last", "tf32": "CUDA GPUs"}
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help=", ".join(f"{name} ({'default; ' if name == default else ''}{meaning})"
                                       for name, meaning in meanings.items()))


def _objective_option(parser: argparse.ArgumentParser) -> None:
    """``--objective`` of the filter pictures, the same for ``filters`` and ``run``."""
    parser.add_argument("--objective", choices=OBJECTIVES, default=OBJECTIVES[0],
                        help="what a filter picture maximizes: mean (default; the filter's mean pre-activation, "
                             "flat or unreached pictures drawn again with neuron) or neuron (its centre unit)")


def _timings_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timings", action="store_true",
                   help="print where the time went, per section, at the end (the report's footer says it too)")


def _sanity_seeds_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sanity-seeds", type=_positive_int, default=SANITY_SEEDS, metavar="N",
                   help=f"randomizations the sanity check averages (default {SANITY_SEEDS}); it passes when the mean "
                        "Spearman correlation after the classifier is randomized is below 0.5")


def build_parser(handlers: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser of every command; ``handlers``: command name -> the function that runs it."""
    parser = _Parser(prog="convscope", description="See what a convolutional network sees: layer outputs, "
                                                   "filters and class activation maps.")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    shared = _shared_options()
    on_model = [shared["model"], shared["run"]]

    p = sub.add_parser("layers", parents=on_model, help="list the layers: name, type, output shape",
                       description="List the model's layers in network order with their type and the "
                                   "shape of their output for one image. VGG conv and pool layers are "
                                   "listed under their Keras names (block1_conv1 ...).")
    p.add_argument("--json", action="store_true", help='print a JSON array of {"name", "type", "shape"}')
    p.set_defaults(handler=handlers["layers"])

    p = sub.add_parser("predict", parents=[*on_model, shared["target"], shared["images"]],
                       help="top-K classes for images",
                       description="Print the K most probable classes of each image. IMAGE is a file "
                                   f"or {SAMPLE_NAMES}.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--top", type=_positive_int, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true",
                   help='print a JSON array: {"image", "predictions": [{"index", "label", "probability"}]}')
    p.set_defaults(handler=handlers["predict"])

    p = sub.add_parser("activations", parents=[*on_model, shared["out"], shared["images"]],
                       help="every channel of conv and pool layers as image grids",
                       description="Draw the output of each convolution and pooling layer for one image: "
                                   "every channel a tile, one PNG grid per layer in DIR/activations/.")
    p.add_argument("image", metavar="IMAGE", help=IMAGE_HELP)
    p.add_argument("--layers", metavar="SPEC",
                   help="layer names, comma lists, globs (block3_*) or 'all' (default: every conv and pool layer)")
    p.add_argument("--per-row", type=_positive_int, default=PER_ROW, metavar="N",
                   help=f"tiles per row (default {PER_ROW})")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=NORMALIZE,
                   help="scale each channel on its own (default) or the whole layer with one scale")
    p.add_argument("--cmap", default=CMAP, metavar="NAME", help=f"matplotlib colormap (default {CMAP}; gray, ...)")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/activations/<layer>.npy (float32)")
    p.set_defaults(handler=handlers["activations"])

    default_recipe, default_steps = next(iter(RECIPE_STEPS.items()))
    p = sub.add_parser("filters", parents=[*on_model, shared["out"], shared["quiet"]],
                       help="what each filter, unit or class responds to (gradient ascent)",
                       description="Draw what each filter of a conv layer (or unit of any layer, or class) "
                                   "responds to: start from a gray picture and change it by gradient ascent to "
                                   "maximize the filter's mean pre-activation (a unit's value, a class's logit). "
                                   "One PNG grid (8 columns) per layer in DIR/filters/ (class pictures: "
                                   "logits.png).")
    p.add_argument("--layers", metavar="SPEC",
                   help="layer names (any layer with a feature map or a vector output), comma lists or globs "
                        "of conv layers (default: the first conv of each block)")
    p.add_argument("--filters", metavar="SPEC",
                   help=f"a count (the first N) or indices and ranges such as 0-15,32 (default {DEFAULT_FILTERS})")
    p.add_argument("--classes", type=_comma_list, default=(), metavar="NAMES",
                   help="class pictures: class names or indices, comma-separated (platypus,espresso); the "
                        "class's logit is maximized (DIR/filters/logits.png)")
    p.add_argument("--direction", metavar="FILE.npy",
                   help="draw a direction in the one --layers layer: a .npy of its channel count (the mean "
                        "over positions of the channels' weighted sum is maximized)")
    p.add_argument("--from", dest="photo", metavar="IMAGE",
                   help="--method accentuate: the photo the pictures start from (they stay close to it in the "
                        "model's features)")
    p.add_argument("--reg-layer", metavar="LAYER",
                   help="--method accentuate: the layer where the pictures are held close to the photo "
                        "(default: the feature map a third of the way to the drawn layer)")
    p.add_argument("--transparency", action="store_true",
                   help="also write DIR/filters/<layer>_transparency.png: maco's pictures with their transparency "
                        "map (where the ascent pushed them most) as the alpha channel")
    p.add_argument("--diversity", type=int, default=1, metavar="N",
                   help="N different pictures of each unit, side by side (their Gram-matrix similarity "
                        "penalized; default 1)")
    steps = ", ".join(f"{count} for {name}" for name, count in RECIPE_STEPS.items())
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help=f"optimization steps (default {steps}; more gives better pictures)")
    p.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"picture size (default {DEFAULT_SIZE})")
    p.add_argument("--method", choices=tuple(RECIPE_STEPS), default=default_recipe,
                   help="lucid (default; Fourier + decorrelated colour + transforms + Adam), classic "
                        "(pixel-space RMS-normalized ascent), maco (natural-image magnitude fixed, phase "
                        "optimized; NAdam) or accentuate (from the photo of --from, held close to it)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    _objective_option(p)
    _precision_option(p, FILTERS_PRECISION)
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/filters/<layer>.npy (float32 N x 3 x S x S) and <layer>.json (scores)")
    p.set_defaults(handler=handlers["filters"])

    report_steps = f"optimization steps for the filters (default {default_steps})"
    p = sub.add_parser("run", parents=[*on_model, shared["target"], shared["out"], shared["quiet"], shared["images"]],
                       help="everything for some images, as a browsable HTML report",
                       description="Run predictions, intermediate outputs, filters and class activation maps, "
                                   "and write DIR/index.html beside the images it links "
                                   "to (DIR/activations/, DIR/filters/, DIR/cam/).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--layers", metavar="SPEC",
                   help="the intermediate outputs shown: names, comma lists, globs or 'all' (default: every "
                        "conv and pool layer)")
    p.add_argument("--filters-steps", type=_positive_int, metavar="N", help=report_steps)
    p.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"filter picture size (default {DEFAULT_SIZE}; raised where a layer needs more)")
    p.add_argument("--no-filters", action="store_true", help="skip the filters section (the slowest)")
    _objective_option(p)
    p.add_argument("--dataset", metavar="DIR",
                   help="a dataset run made with --examples: filter pictures link to their dataset examples there")
    p.add_argument("--cam-method", choices=CAM_METHOD_NAMES, default=CAM_METHOD_NAMES[0],
                   help=f"class activation map method (default {CAM_METHOD_NAMES[0]})")
    p.add_argument("--top", type=_positive_int, metavar="K", help="maps for the K most probable classes (default 3)")
    p.add_argument("--attribution", choices=(*ATTRIBUTION_METHOD_NAMES, "none"), default=ATTRIBUTION_METHOD_NAMES[0],
                   help="the pixel attribution beside each image's maps, for its top class "
                        f"(default {ATTRIBUTION_METHOD_NAMES[0]}; none for none)")
    p.add_argument("--concepts", type=int, metavar="N",
                   help="a section of N concepts shared by the images (Deep Feature Factorization; needs "
                        "scikit-learn)")
    p.add_argument("--trust", default=",".join(TRUST_METHODS), metavar="all|none|LIST",
                   help="the methods 'Which map to trust' ranks: all, none (no such section) or a comma list "
                        f"(default {','.join(TRUST_METHODS)})")
    _sanity_seeds_option(p)
    _timings_option(p)
    p.set_defaults(handler=handlers["run"])

    p = sub.add_parser("demo", parents=[shared["run"], shared["out"], shared["quiet"]],
                       help="the full report on the default model and the sample photos",
                       description="Run `convscope run` on the embedded default model (EfficientNet-Lite0) with "
                                   "the sample photos (a cat and a coffee) and print where the report is.")
    p.add_argument("--filters-steps", type=_positive_int, metavar="N", help=report_steps)
    _timings_option(p)
    p.set_defaults(handler=handlers["demo"])

    p = sub.add_parser("cam", parents=[*on_model, shared["target"], shared["out"], shared["images"]],
                       help="class activation maps (Grad-CAM and family)",
                       description="Show which parts of each image made the network choose a class: a "
                                   "heatmap and an overlay on the photo per image and class, in DIR/cam/.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--layer", metavar="NAME", action="append",
                   help="the feature maps to explain (default: the last spatial layer before global pooling); "
                        "give it again for several layers, whose maps are fused (--fuse)")
    p.add_argument("--fuse", choices=FUSE_MODES,
                   help="how the maps of several --layer values are fused: mean (pytorch-grad-cam: each layer's "
                        "map normalized, upsampled, averaged; the default) or max (torchcam's Layer-CAM fusion: "
                        "tanh(2 m), element-wise maximum)")
    which = p.add_mutually_exclusive_group()
    _classes_option(which, "the top-1 prediction")
    which.add_argument("--top", type=_positive_int, metavar="K", help="maps for the K most probable classes")
    p.add_argument("--method", choices=CAM_METHOD_NAMES, default=CAM_METHOD_NAMES[0],
                   help=f"default {CAM_METHOD_NAMES[0]}")
    p.add_argument("--alpha", type=float, default=CAM_ALPHA, metavar="A",
                   help=f"heatmap weight in the overlay (default {CAM_ALPHA})")
    p.add_argument("--aug-smooth", action="store_true",
                   help="the mean map of the image flipped or not and multiplied by 0.9, 1 and 1.1 (6 passes)")
    p.add_argument("--eigen-smooth", action="store_true",
                   help="the first principal component of the map's channel terms instead of their sum "
                        "(pytorch-grad-cam's eigen_smooth; for the methods whose map is such a sum)")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help=f"random seed of the sampled methods ({', '.join(SAMPLED_CAM_METHODS)}; default 0)")
    p.add_argument("--samples", type=_positive_int, metavar="N",
                   help="noisy or scaled copies a sampled method draws (default: torchcam's: "
                        f"{', '.join(f'{name} {n}' for name, n in SAMPLED_CAM_METHODS.items())})")
    _precision_option(p, MAPS_PRECISION)
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/cam/<stem>_<class>.npy (float32 H x W in [0, 1])")
    p.set_defaults(handler=handlers["cam"])

    p = sub.add_parser("attribute", parents=[*on_model, shared["target"], shared["out"], shared["images"]],
                       help="pixel attributions (saliency, integrated gradients, SmoothGrad, guided backprop, ...)",
                       description="How much each input pixel counts for a class: a signed map per image and class "
                                   "(red for, blue against) and an overlay on the photo, in DIR/attribute/.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--method", choices=ATTRIBUTION_METHOD_NAMES, default=ATTRIBUTION_METHOD_NAMES[0],
                   help=f"default {ATTRIBUTION_METHOD_NAMES[0]}")
    which = p.add_mutually_exclusive_group()
    _classes_option(which, "the top-1 prediction")
    which.add_argument("--top", type=_positive_int, metavar="K", help="attributions for the K most probable classes")
    p.add_argument("--steps", type=int, default=ATTRIBUTION_DEFAULTS["steps"], metavar="N",
                   help=f"integratedgradients: Gauss-Legendre points (default {ATTRIBUTION_DEFAULTS['steps']})")
    p.add_argument("--samples", type=int, default=ATTRIBUTION_DEFAULTS["samples"], metavar="N",
                   help=f"smoothgrad: noisy copies (default {ATTRIBUTION_DEFAULTS['samples']})")
    p.add_argument("--sigma", type=float, default=ATTRIBUTION_DEFAULTS["sigma"], metavar="S",
                   help="smoothgrad: the noise's standard deviation as a fraction of the image's range "
                        f"(default {ATTRIBUTION_DEFAULTS['sigma']}, as the paper)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="smoothgrad: random seed (default 0)")
    p.add_argument("--window", type=int, metavar="PX",
                   help=f"occlusion: the occluding square's side (default {ATTRIBUTION_DEFAULTS['window']}, "
                        "or the input's shorter side where smaller)")
    p.add_argument("--stride", type=int, metavar="PX",
                   help=f"occlusion: how far the square moves (default {ATTRIBUTION_DEFAULTS['stride']}, "
                        "or the window where smaller)")
    p.add_argument("--layer", metavar="NAME", help="guidedgradcam: the Grad-CAM layer (default: as for cam)")
    p.add_argument("--alpha", type=float, default=ATTRIBUTION_ALPHA, metavar="A",
                   help=f"the overlay's strength at the largest magnitude (default {ATTRIBUTION_ALPHA})")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/attribute/<stem>_<class>_<method>.npy (float32 C x H x W)")
    p.set_defaults(handler=handlers["attribute"])

    p = sub.add_parser("concepts", parents=[*on_model, shared["out"], shared["images"]],
                       help="concepts shared by the images (Deep Feature Factorization)",
                       description="Factorize a layer's activations over all the images into N concepts "
                                   "(non-negative matrix factorization, as pytorch-grad-cam's "
                                   "DeepFeatureFactorization), each labelled by the classes its vector scores "
                                   "highest: DIR/concepts/<stem>_concepts.png and concepts.json. Needs "
                                   "scikit-learn (pip install 'convscope[concepts]').")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--n", type=int, default=CONCEPTS_N, metavar="N", help=f"concepts (default {CONCEPTS_N})")
    p.add_argument("--layer", metavar="NAME", help="the layer to factorize (default: as for cam)")
    p.add_argument("--alpha", type=float, default=0.5, metavar="A", help="the colours' strength (default 0.5)")
    p.set_defaults(handler=handlers["concepts"])

    p = sub.add_parser("evaluate", parents=[*on_model, shared["target"], shared["out"], shared["images"]],
                       help="which map to trust: every CAM method and pixel attribution measured and ranked",
                       description="Draw every CAM method's map for each image and class, measure them (deletion "
                                   "and insertion AUCs, Average Drop, Increase in Confidence, the randomization "
                                   "sanity check, the pointing game with --boxes) and rank them by insertion - "
                                   "deletion. Writes DIR/evaluate/metrics.json and, per image and class, "
                                   "<stem>_<class>_curves.png and <stem>_<class>_methods.png.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    p.add_argument("--methods", default="all", metavar="LIST",
                   help=f"all (default) or a comma list of {', '.join(RANKED_METHOD_NAMES)}")
    _classes_option(p, "each image's top-1 prediction")
    p.add_argument("--layer", metavar="NAME", help="the feature maps to explain (default: as for cam)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                   help=f"comma list of {', '.join(METRIC_NAMES)} (default {','.join(DEFAULT_METRICS)}; "
                        "pointing with --boxes)")
    p.add_argument("--boxes", metavar="FILE",
                   help='JSON {image file name: {class index or label: [x0, y0, x1, y1]}} in the photo\'s pixels, '
                        "for the pointing game")
    p.add_argument("--steps", type=_positive_int, default=STEPS, metavar="N",
                   help=f"deletion and insertion steps (default {STEPS})")
    _precision_option(p, MAPS_PRECISION)
    _sanity_seeds_option(p)
    p.add_argument("--json", action="store_true", help="print the objects of metrics.json on stdout")
    p.set_defaults(handler=handlers["evaluate"])

    p = sub.add_parser("explain",
                       parents=[*on_model, shared["target"], shared["out"], shared["quiet"], shared["images"]],
                       help="why this class: the channels that carried the decision",
                       description="Attribute a class score to the channels of a layer (gradient x activation, "
                                   "summed over positions) and show the top channels, each with its filter picture "
                                   "and where it fired. Writes DIR/explain/<stem>_<class>.png and .json; the filter "
                                   "pictures are cached in DIR/filters/ (convscope run reuses them).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help=IMAGES_HELP)
    _classes_option(p, "each image's top-1 prediction")
    p.add_argument("--layer", metavar="NAME", help="the layer whose channels are ranked (default: as for cam)")
    p.add_argument("--top", type=_positive_int, default=EXPLAIN_TOP, metavar="K",
                   help=f"channels shown for the class (default {EXPLAIN_TOP}; the 2 most against it are shown too)")
    p.add_argument("--filters-steps", type=_positive_int, metavar="N", help=report_steps)
    _precision_option(p, MAPS_PRECISION)
    p.add_argument("--json", action="store_true", help="print the objects of the JSON files on stdout")
    p.set_defaults(handler=handlers["explain"])

    p = sub.add_parser("dataset", parents=[*on_model, shared["target"], shared["out"], shared["quiet"]],
                       help="a whole folder: predictions and class activation maps, as resumable Parquet shards",
                       description="Stream every image of SOURCE (a folder, searched recursively; a glob in quotes; "
                                   "or a text file listing paths) through the model: top-5 predictions, the CAM of "
                                   "the predicted class (and of the true class where it differs) at the layer's "
                                   "resolution, and the chosen metrics, one row per image in "
                                   "DIR/dataset/shard-NNNNN.parquet beside manifest.json. Run it again to resume.")
    p.add_argument("source", metavar="SOURCE", help="a folder, a glob in quotes or a text file listing paths")
    p.add_argument("--labels", metavar="FILE",
                   help="true classes: CSV or JSON, image path -> class index or label (default: class sub-folders)")
    p.add_argument("--cam-method", choices=CAM_METHOD_NAMES, default=CAM_METHOD_NAMES[0],
                   help=f"default {CAM_METHOD_NAMES[0]}")
    p.add_argument("--cam-layer", metavar="NAME", help="the CAM layer (default: as for cam)")
    p.add_argument("--metrics", default="none", metavar="LIST", help="none (default), drop, deletion, insertion")
    p.add_argument("--batch-size", type=_positive_int, metavar="B",
                   help="images per model pass (default 4 on a CPU, where larger batches run slower, 32 on a GPU)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes decoding images while the model runs (default 0: in the main process)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N images (sorted by path)")
    p.add_argument("--restart", action="store_true", help="start again even where a different run was")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: this process and its workers) or ray (the shards on Ray actors; "
                        "pip install 'convscope[ray]')")
    p.add_argument("--ray-address", metavar="ADDR", help="join the Ray cluster there (default: a local Ray)")
    p.add_argument("--examples", nargs="?", const="default", metavar="LAYERS",
                   help="for every channel of these layers (as --layers; default: the filter layers), the images "
                        "that excite it most, with the crop its unit sees: DIR/examples/")
    p.add_argument("--examples-top", type=int, default=EXAMPLES_TOP, metavar="K",
                   help=f"examples per channel (default {EXAMPLES_TOP})")
    _precision_option(p, MAPS_PRECISION)
    p.set_defaults(handler=handlers["dataset"])

    atlas_recipes = tuple(name for name in RECIPE_STEPS if name not in PHOTO_RECIPES)
    p = sub.add_parser("atlas", parents=[*on_model, shared["out"], shared["quiet"]],
                       help="every unit of every layer: feature picture, dataset examples, statistics; a site",
                       description="For every unit of every chosen layer, its feature picture (class pictures for "
                                   "the logits), its top-K dataset examples with their crops, its statistics and, "
                                   "with labels, the class most of its examples belong to; browsed at "
                                   "DIR/atlas/index.html. Image shards and picture shards, written atomically: run "
                                   "it again to resume; --engine ray runs them on a Ray cluster.")
    p.add_argument("--dataset", required=True, metavar="DIR",
                   help="the images: a folder (searched recursively; class sub-folders give labels), a glob in "
                        "quotes or a text file listing paths")
    p.add_argument("--layers", metavar="SPEC",
                   help="layer names, comma lists, globs, 'logits' for the classes (default: every conv layer and "
                        "block output, and the logits)")
    p.add_argument("--top", type=_positive_int, default=EXAMPLES_TOP, metavar="K",
                   help=f"dataset examples per unit (default {EXAMPLES_TOP})")
    p.add_argument("--method", choices=atlas_recipes, default=atlas_recipes[0],
                   help=f"the pictures' recipe (default {atlas_recipes[0]}; as for filters)")
    p.add_argument("--steps", type=_positive_int, default=ATLAS_STEPS, metavar="N",
                   help=f"ascent steps per picture (default {ATLAS_STEPS})")
    p.add_argument("--size", type=_positive_int, default=ATLAS_SIZE, metavar="PX",
                   help=f"picture size (default {ATLAS_SIZE}; raised where a layer needs more; class pictures are "
                        "seen at the model's input size)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--units-per-shard", type=_positive_int, default=ATLAS_UNITS_PER_SHARD, metavar="N",
                   help=f"pictures per picture shard (default {ATLAS_UNITS_PER_SHARD})")
    p.add_argument("--labels", metavar="FILE",
                   help="true classes: CSV or JSON, image path -> class index or label (default: class sub-folders)")
    p.add_argument("--batch-size", type=_positive_int, metavar="B",
                   help="images per model pass (default 4 on a CPU, 32 on a GPU; halved on out-of-memory)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="processes decoding images while the model runs (default 0)")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="only the first N images (sorted by path)")
    p.add_argument("--restart", action="store_true", help="start again even where a different atlas was")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: this process) or ray (the shards on Ray actors; pip install "
                        "'convscope[ray]')")
    p.add_argument("--ray-address", metavar="ADDR", help="join the Ray cluster there (default: a local Ray)")
    _precision_option(p, FILTERS_PRECISION)
    p.set_defaults(handler=handlers["atlas"])
    return parser
