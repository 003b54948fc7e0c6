"""The command line's checks that need no model, made before a command imports torch.

The library checks every setting itself, for Python callers; the command line makes the checks that
need no model (nor torch, numpy or PIL) right after parsing, so that a bad value is answered in a
tenth of a second instead of after torch is imported and the model loaded. Each raises the
library's error in the library's words, naming the Python parameter (``alpha must be between 0 and
1, got 7.0``), and :func:`convscope.cli.main.main` words it with the command's flag as it words
every error (``--alpha must be ...``). ``tests/test_cli.py`` checks that the two agree.

Checks that need the model (a class, a layer, ``--top`` against the class count, filter indices
against the layer) or the files themselves (images, ``--out``, ``--boxes``, ``--labels``, the
dataset source) are left to the command.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ..catalog import (
    CMAP,
    DATASET_METRICS,
    DEFAULT_MODEL,
    FILTER_SIZES,
    MODEL_FILE_SUFFIXES,
    RANKED_METHOD_NAMES,
    SAMPLES,
)
from ..errors import InputError, check_at_least, check_between
from ..specs import check_fuse, check_metrics, check_samples, filter_spec, parse_box, parse_methods, parse_metrics

#: How an image argument names a bundled sample photo.
SAMPLE_PREFIX = "sample:"
#: More images than this make a report too large to open: ``convscope dataset`` is for them.
MAX_REPORT_IMAGES = 16


def sample_name(arg: str) -> str | None:
    """The sample photo an image argument names (``sample:NAME``, unless a file has that name), or
    None for a file; InputError for an unknown sample."""
    if not arg.startswith(SAMPLE_PREFIX) or os.path.exists(arg):
        return None
    name = arg[len(SAMPLE_PREFIX):]
    if name not in SAMPLES:
        raise InputError(f"{arg}: unknown sample; choose from {', '.join(SAMPLE_PREFIX + s for s in SAMPLES)}")
    return name


def check_methods(methods: str) -> None:
    """``all`` or a comma list of the CAM methods the command line offers."""
    parse_methods(methods, RANKED_METHOD_NAMES)


def check_dataset_metrics(metrics: str) -> None:
    """``none`` or a comma list of the metrics a dataset run stores, as :func:`convscope.dataset.run`."""
    parse_metrics(metrics, DATASET_METRICS)


def check_filter_size(size: int) -> None:
    """The filter pictures' size, as :func:`convscope.techniques.filters.check_filter_settings`."""
    check_between("size", size, *FILTER_SIZES, " pixels")


def check_colormap(name: str) -> None:
    """A matplotlib colormap, as :func:`convscope.presentation.drawing.colormap_lut`. Imports
    matplotlib (about 0.5 s, numpy included) only for a name other than the default: the command
    imports it anyway, so only a bad name is answered sooner, never a good one later."""
    if name == CMAP:
        return
    from matplotlib import colormaps

    try:
        colormaps[name]
    except KeyError:
        raise InputError(f"cmap: unknown colormap {name!r} (any matplotlib colormap, e.g. viridis, gray, magma, "
                         "inferno, plasma, jet, turbo)",
                         parameter="cmap") from None


def check_target(args: argparse.Namespace) -> None:
    """The target flags agree with each other: the threshold a probability, ``--reference`` for the
    embedding target only (and needed by it), ``--region`` for segmentation only, a box well formed."""
    target = "multilabel" if args.multilabel else args.target
    if args.multilabel and args.target not in (None, "multilabel"):
        raise InputError(f"multilabel: a multilabel model, but target {args.target} asked for", parameter="multilabel")
    check_between("threshold", args.threshold, 0, 1)
    check_between("score_threshold", args.score_threshold, 0, 1)
    if target == "embedding" and args.reference is None:
        raise InputError("reference: the embedding target compares with a reference image's embedding; give "
                         "--reference IMAGE or DIR", parameter="reference")
    if args.reference is not None:
        if target not in (None, "embedding"):
            raise InputError(f"reference {args.reference}: only the embedding target compares with a reference, "
                             f"not {target}", parameter="reference")
        if sample_name(args.reference) is None and not os.path.exists(args.reference):
            raise InputError(f"reference {args.reference}: no such file or folder", parameter="reference")
    if args.region is not None:
        if target not in (None, "segmentation"):
            raise InputError(f"region {args.region}: only the segmentation target sums over a region, not {target}",
                             parameter="region")
        box = parse_box(args.region)
        if box is None and not os.path.exists(args.region):
            raise InputError(f"region {args.region}: neither a box x0,y0,x1,y1 nor a mask image file",
                             parameter="region")
        if box is not None and not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(f"region {args.region}: a box x0,y0,x1,y1 needs x0 < x1 and y0 < y1", parameter="region")


def _images(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "images", None) or ([args.image] if getattr(args, "image", None) else []))


def _check_run(args: argparse.Namespace) -> None:
    if not args.no_filters:
        check_filter_size(args.size)
    if args.trust != "none":
        check_methods(args.trust)


def _check_filters(args: argparse.Namespace) -> None:
    check_filter_size(args.size)
    if args.filters is not None:
        filter_spec(args.filters)


def _check_evaluate(args: argparse.Namespace) -> None:
    check_methods(args.methods)
    regions = args.target in ("segmentation", "detection") or args.region is not None  # flags that promise them
    check_metrics(args.metrics, args.boxes is not None or regions)


def _check_cam(args: argparse.Namespace) -> None:
    check_between("alpha", args.alpha, 0, 1)
    check_fuse(args.fuse, len(args.layer or ()))
    check_samples(args.method, args.samples)


def _check_concepts(args: argparse.Namespace) -> None:
    check_between("alpha", args.alpha, 0, 1)
    check_at_least("n", args.n, 1)


def _check_dataset(args: argparse.Namespace) -> None:
    check_at_least("workers", args.workers, 0)
    check_dataset_metrics(args.metrics)
    if args.examples is not None:
        check_at_least("examples_top", args.examples_top, 1)


def _check_atlas(args: argparse.Namespace) -> None:
    check_at_least("workers", args.workers, 0)
    check_filter_size(args.size)


#: Per command, its checks that need no model (after its images, which are checked first).
COMMAND_CHECKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "activations": lambda args: check_colormap(args.cmap),
    "filters": _check_filters,
    "run": _check_run,
    "cam": _check_cam,
    "concepts": _check_concepts,
    "evaluate": _check_evaluate,
    "dataset": _check_dataset,
    "atlas": _check_atlas,
}


def check_args(args: argparse.Namespace) -> None:
    """Every check of the parsed ``args`` that needs no model, each raising the library's InputError:
    the number of images of a report, the ``sample:NAME`` images, then the command's settings."""
    images = _images(args)
    if getattr(args, "images", None) and len(args.images) > 1 and args.images[0].lower().endswith(MODEL_FILE_SUFFIXES) \
            and args.model == DEFAULT_MODEL:  # `convscope run model.keras IMAGE...`: the first is the model
        args.model, args.images = args.images[0], args.images[1:]
        images = images[1:]
    if args.command == "run" and len(images) > MAX_REPORT_IMAGES:
        raise InputError(f"{len(images)} images make a report too large to open ({MAX_REPORT_IMAGES} at most); "
                         "for a folder of images use `convscope dataset FOLDER`")
    for arg in images:
        sample_name(arg)
    if hasattr(args, "target"):
        check_target(args)
    COMMAND_CHECKS.get(args.command, lambda args: None)(args)
