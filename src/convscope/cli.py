"""The ``convscope`` command line.

Every command shares ``--device`` and ``--debug``, the model commands ``--model`` and ``--weights``.
Errors convscope raises on purpose print one line on stderr and exit with 2 (bad usage or input) or
1 (failure while running); ``--debug`` shows the traceback. An error about a Python parameter is
worded with the command's flag (``alpha`` -> ``--alpha``). Images may be files or ``sample:NAME``
for the photos that ship with installed packages (``sample:chelsea``, ``sample:coffee``,
``sample:grace_hopper``). Choices and defaults come from the library's own constants.

(Seven commands with their help texts make this module about 450 lines; each command is a short
function over :mod:`convscope.plans`.)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch
from PIL import Image
from tqdm import tqdm

from . import __version__, models
from .drawing import NORMALIZATIONS
from .errors import ConvscopeError, ConvscopeWarning, InputError
from .files import check_out_dir, prepare_out_dir, save_npy
from .images import ImageSource, load_image
from .metrics import STEPS
from .model import Model
from .plans import (CAM_ALPHA, CMAP, NORMALIZE, PER_ROW, check_top, plan_activations, plan_cam, plan_evaluate,
                    plan_filters)
from .precision import PRECISIONS
from .run import run_all
from .samples import DEMO_SAMPLES, SAMPLES, sample_array
from .techniques.cams import METHODS as CAM_METHODS
from .techniques.evaluate import DEFAULT_METRICS, METRIC_NAMES, Evaluation
from .techniques.filter_recipes import RECIPES
from .techniques.filters import DEFAULT_FILTERS, DEFAULT_SIZE
from .writers import image_stems

SAMPLE_PREFIX = "sample:"
#: Python parameters whose flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"classes": "--class", "filters_steps": "--filters-steps"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flag_for(parameter: str) -> str:
    """The command-line flag of a library parameter: ``per_row`` -> ``--per-row``."""
    return FLAG_NAMES.get(parameter, "--" + parameter.replace("_", "-"))


def _print_predictions(names: Sequence[str], ranked: Sequence[Sequence], top: int) -> None:
    for name, preds in zip(names, ranked):
        print(name)
        for rank, p in enumerate(preds[:top], 1):
            print(f"  {rank:>2}. {p.label:<30} {p.probability:7.2%}  (class {p.index})")


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"device: unknown device {name!r} (cpu, cuda, cuda:N, mps or auto)",
                         parameter="device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name}: CUDA is not available on this machine", parameter="device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                         parameter="device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {name}: MPS (Apple GPUs) is not available on this machine", parameter="device")
    return name


def _load(args: argparse.Namespace) -> Model:
    return models.load_model(args.model, args.weights, device=_resolve_device(args.device))


def image_source(arg: str) -> ImageSource:
    """A command-line image: a file path, or ``sample:NAME`` for a bundled sample photo."""
    if arg.startswith(SAMPLE_PREFIX) and not os.path.exists(arg):
        name = arg[len(SAMPLE_PREFIX):]
        if name not in SAMPLES:
            raise InputError(f"{arg}: unknown sample; choose from "
                             f"{', '.join(SAMPLE_PREFIX + s for s in SAMPLES)}")
        return sample_array(name)
    return arg


def _photos_then_model(args: argparse.Namespace) -> tuple[list[Image.Image], Model]:
    """The command's images (bad ones fail first), the output folder checked, then the model; with
    ``--crop`` each photo is cut to its centred box of the model's aspect ratio (pictures of the
    photo, such as overlays, then show what the model saw)."""
    photos = [load_image(image_source(arg)) for arg in args.images]
    check_out_dir(args.out)
    model = _load(args)
    if args.crop:
        photos = [model.preprocessing.centre_crop(photo) for photo in photos]
    return photos, model


def _save_input(x: torch.Tensor, out: Path) -> None:
    """``DIR/input.npy``: the model input of all images (``--save-raw``)."""
    save_npy(x.float().cpu().numpy(), out / "input.npy")


# -- commands ----------------------------------------------------------------------------------
def cmd_layers(args: argparse.Namespace) -> int:
    model = _load(args)
    layers = model.layers()
    if args.json:
        print("[\n" + ",\n".join("  " + json.dumps(layer.as_json()) for layer in layers) + "\n]")
        return 0
    rows = [(layer.name, layer.type, "x".join(map(str, layer.shape)) if layer.shape else "-") for layer in layers]
    widths = [max(len(r[i]) for r in rows + [("layer", "type", "output")]) for i in range(3)]
    try:
        model.check_convolutional()
        layout = "C x H x W"
    except InputError:  # a transformer: tokens or channels-last maps, shown as the module returns them
        layout = "per item, as the module returns it"
    print(f"{'layer':<{widths[0]}}  {'type':<{widths[1]}}  output ({layout})")
    for name, kind, shape in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape}")
    print(f"{len(rows)} layers; {model.name}, weights {model.weights}, input {model.input_size[0]}x{model.input_size[1]}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    images = [load_image(image_source(arg)) for arg in args.images]  # bad images fail before any work
    model = _load(args)
    check_top(model, args.top)
    x = model.preprocess(images, crop=args.crop, names=args.images)
    results = model.predict(x, top=args.top)
    if args.json:
        print(json.dumps([{"image": image, "predictions": [p.as_json() for p in preds]}
                          for image, preds in zip(args.images, results)], indent=2))
        return 0
    _print_predictions(args.images, results, args.top)
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    image = load_image(image_source(args.image))
    check_out_dir(args.out)
    model = _load(args)
    x = model.preprocess(image, crop=args.crop, names=[args.image])
    plan = plan_activations(model, x.shape, args.layers, per_row=args.per_row, normalize=args.normalize,
                            cmap=args.cmap, save_raw=args.save_raw)
    out = prepare_out_dir(args.out, "activations")
    if args.save_raw:
        _save_input(x, out)
    _, written = plan.write(model, x, out / "activations")
    for grid in written:
        print(f"{grid.layer:<28} {'x'.join(map(str, grid.shape)):>14}  {grid.png}")
    print(f"{len(written)} layer grids in {out / 'activations'}")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_cam(model, args.layer, args.classes or (), args.top, method=args.method, precision=args.precision,
                    alpha=args.alpha, save_raw=args.save_raw)
    if CAM_METHODS[plan.method].class_independent and (args.classes or args.top):
        print(f"convscope: note: {CAM_METHODS[plan.method].title} does not depend on the class: its map is the "
              "same for every class", file=sys.stderr)
    out = prepare_out_dir(args.out, "cam")
    x = model.preprocess(photos, names=args.images)
    ranked = model.predict(x, top=min(max(5, plan.top), len(model.labels)))
    _print_predictions(args.images, ranked, 5)
    if args.save_raw:
        _save_input(x, out)
    with _progress_bar(False, "masked inputs") as bar:  # Score-CAM: one forward pass per channel
        written = plan.write(model, x, photos, image_stems(args.images), plan.pairs(ranked), out / "cam",
                             progress=bar.update)
    print(f"{CAM_METHODS[plan.method].title} on layer {plan.layer}: {len(written)} maps in {out / 'cam'} "
          f"({_precisions([(w.precision, w.precision_reason) for w in written])})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_evaluate(model, args.layer, args.methods, args.metrics, args.classes or (), args.steps, args.boxes,
                         args.precision)
    x = model.preprocess(photos, names=args.images)
    ranked = model.predict(x, top=1)
    plan.boxes(model, args.images, photos, plan.classes_for(ranked))  # a bad boxes file fails before any work
    out = prepare_out_dir(args.out, "evaluate")
    say = (lambda line: None) if args.json else (lambda line: print(f"  ... {line}", file=sys.stderr, flush=True))
    metrics_json, written = plan.write(model, x, photos, args.images, image_stems(args.images), ranked,
                                       out / "evaluate", progress=say)
    if args.json:
        print(json.dumps([row for w in written for row in w.evaluation.as_json()], indent=2))
        return 0
    for w in written:
        _print_evaluation(w.evaluation)
    print(f"metrics of {len(written)} image-class pairs in {metrics_json}")
    return 0


def _print_evaluation(evaluation: Evaluation) -> None:
    """The methods best first, identical maps on one line, every metric and the sanity verdict."""
    print(f"{evaluation.name}: class {evaluation.class_index} {evaluation.label} (layer {evaluation.layer})")
    print(f"   {'method':<36} {'deletion':>8} {'insertion':>9} {'score':>7} {'drop %':>7} {'incr %':>7}  sanity")
    for rank, group in enumerate(evaluation.groups(), 1):
        best = group[0]
        cells = [_cell(best.deletion), _cell(best.insertion), _cell(best.score), _cell(best.average_drop, 1),
                 _cell(best.increase, 0)]
        sanity = "-" if best.sanity is None else (
            f"{'passed' if best.sanity.passed else 'FAILED'} (Spearman {best.sanity.spearman[0]:.2f} after the "
            "classifier is randomized)" if best.sanity.spearman else "-")
        pointing = "" if best.pointing is None else f"  pointing {'hit' if best.pointing[0] else 'miss'} " \
                                                     f"{best.pointing[1]:.2f}"
        name = " = ".join(m.title for m in group) + (" (empty)" if best.empty else "")
        print(f"{rank:>2}. {name:<36} {cells[0]:>8} {cells[1]:>9} {cells[2]:>7} {cells[3]:>7} {cells[4]:>7}  "
              f"{sanity}{pointing}")
    for note in evaluation.notes:
        print(f"   note: {note}")


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _precisions(used: Sequence[tuple[str, str]]) -> str:
    """The precisions used and why, once each: ``bf16: auto: bf16 measured 1.8x faster than fp32 here``."""
    return "; ".join(f"{precision}: {reason}" if reason != "as asked" else precision
                     for precision, reason in dict.fromkeys(used))


def _progress_bar(quiet: bool, unit: str = "steps") -> tqdm:
    """A progress bar on stderr when it is a terminal and not ``--quiet``."""
    return tqdm(total=None, disable=quiet or not sys.stderr.isatty(), unit=f" {unit}", leave=False)


def cmd_filters(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    model = _load(args)
    plan = plan_filters(model, args.layers, args.filters, steps=args.steps, size=args.size, method=args.method,
                        seed=args.seed, precision=args.precision, save_raw=args.save_raw)
    for note in plan.notes:
        print(f"convscope: note: {note}", file=sys.stderr)
    out = prepare_out_dir(args.out, "filters")
    used = []
    with _progress_bar(args.quiet) as bar:
        bar.total = plan.total_steps
        for result, written in plan.write(model, out / "filters", progress=bar.update):
            used.append((result.precision, result.precision_reason))
            if not args.quiet:
                bar.write(f"{result.layer:<28} {len(result.filters):>3} filters  mean score "
                          f"{result.scores.mean():8.3f}  {result.precision}  {written}")
    if not args.quiet:
        print(f"{len(plan.layers)} filter grids in {out / 'filters'} ({plan.method}, {plan.steps} steps, "
              f"{plan.size} px, {_precisions(used)})")
    return 0


def _run_report(args: argparse.Namespace, model: Model, photos: list[Image.Image], names: Sequence[str]) -> int:
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with _progress_bar(args.quiet) as bar:
        def set_total(total: int) -> None:
            bar.total = total
            bar.refresh()

        options = {"layers": args.layers, "filters": not args.no_filters, "filters_size": args.size,
                   "cam_method": args.cam_method, "top": args.top} if args.command == "run" else {}
        report = run_all(model, photos, names, args.out, filters_steps=args.filters_steps, say=say,
                         progress=bar.update, on_filter_layers=set_total,
                         command=shlex.join(["convscope", *args.argv]), **options)
    print(f"Report: {report.resolve()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    return _run_report(args, model, photos, args.images)


def cmd_demo(args: argparse.Namespace) -> int:
    names = [SAMPLE_PREFIX + name for name in DEMO_SAMPLES]
    photos = [load_image(sample_array(name)) for name in DEMO_SAMPLES]
    check_out_dir(args.out)
    if not args.quiet:
        print(f"convscope demo: {models.DEFAULT_MODEL} (ImageNet weights, offline) on {', '.join(names)}",
              file=sys.stderr)
    model = models.load_model(models.DEFAULT_MODEL, models.DEFAULT_WEIGHTS, device=_resolve_device(args.device))
    return _run_report(args, model, photos, names)


# -- parser ------------------------------------------------------------------------------------
def _shared_options() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers, each option defined once: ``run`` (--device, --debug), ``model`` (--model,
    --weights), ``out`` (--out), ``quiet`` (--quiet)."""
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--device", default="cpu", metavar="DEV", help="torch device: cpu (default), cuda, cuda:1, mps or auto")
    run.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    model = argparse.ArgumentParser(add_help=False)
    group = model.add_argument_group("model")
    group.add_argument("--model", default=models.DEFAULT_MODEL, metavar="NAME",
                       help=f"{models.DEFAULT_MODEL} (default, offline ImageNet weights), vgg16, vgg19, "
                            "torchvision:<name> or timm:<name>")
    group.add_argument("--weights", default=models.DEFAULT_WEIGHTS, metavar="SPEC",
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
    return {"run": run, "model": model, "out": out, "quiet": quiet, "images": images}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convscope", description="See what a convolutional network sees: layer outputs, "
                                                   "filters and class activation maps.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    shared = _shared_options()
    on_model = [shared["model"], shared["run"]]

    p = sub.add_parser("layers", parents=on_model, help="list the layers: name, type, output shape",
                       description="List the model's layers in network order with their type and the "
                                   "shape of their output for one image. VGG conv and pool layers are "
                                   "listed under their Keras names (block1_conv1 ...).")
    p.add_argument("--json", action="store_true", help='print a JSON array of {"name", "type", "shape"}')
    p.set_defaults(handler=cmd_layers)

    p = sub.add_parser("predict", parents=[*on_model, shared["images"]], help="top-K classes for images",
                       description="Print the K most probable classes of each image. IMAGE is a file "
                                   "or sample:chelsea, sample:coffee, sample:grace_hopper.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top", type=_positive_int, default=5, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true",
                   help='print a JSON array: {"image", "predictions": [{"index", "label", "probability"}]}')
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("activations", parents=[*on_model, shared["out"], shared["images"]],
                       help="every channel of conv and pool layers as image grids",
                       description="Draw the output of each convolution and pooling layer for one image: "
                                   "every channel a tile, one PNG grid per layer in DIR/activations/.")
    p.add_argument("image", metavar="IMAGE", help="an image file or sample:NAME")
    p.add_argument("--layers", metavar="SPEC",
                   help="layer names, comma lists, globs (block3_*) or 'all' (default: every conv and pool layer)")
    p.add_argument("--per-row", type=_positive_int, default=PER_ROW, metavar="N",
                   help=f"tiles per row (default {PER_ROW})")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default=NORMALIZE,
                   help="scale each channel on its own (default) or the whole layer with one scale")
    p.add_argument("--cmap", default=CMAP, metavar="NAME", help=f"matplotlib colormap (default {CMAP}; gray, ...)")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/activations/<layer>.npy (float32)")
    p.set_defaults(handler=cmd_activations)

    default_recipe = next(iter(RECIPES.values()))
    p = sub.add_parser("filters", parents=[*on_model, shared["out"], shared["quiet"]],
                       help="what each filter responds to (gradient ascent)",
                       description="Draw what each filter of a conv layer responds to: start from a gray "
                                   "picture and change it by gradient ascent to maximize the filter's mean "
                                   "pre-activation. One PNG grid (8 columns) per layer in DIR/filters/.")
    p.add_argument("--layers", metavar="SPEC",
                   help="conv layer names, comma lists or globs (default: the first conv of each block)")
    p.add_argument("--filters", metavar="SPEC",
                   help=f"a count (the first N) or indices and ranges such as 0-15,32 (default {DEFAULT_FILTERS})")
    steps = ", ".join(f"{r.default_steps} for {r.name}" for r in RECIPES.values())
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help=f"optimization steps (default {steps}; more gives better pictures)")
    p.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"picture size (default {DEFAULT_SIZE})")
    p.add_argument("--method", choices=tuple(RECIPES), default=default_recipe.name,
                   help="lucid (default; Fourier + decorrelated colour + transforms + Adam) or classic "
                        "(pixel-space RMS-normalized ascent)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default: the fastest measured on this model and layer, never slower than "
                        "fp32), fp32 (TF32 off), bf16 or tf32 (CUDA GPUs)")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/filters/<layer>.npy (float32 N x 3 x S x S) and <layer>.json (scores)")
    p.set_defaults(handler=cmd_filters)

    report_steps = f"optimization steps for the filters (default {default_recipe.default_steps})"
    p = sub.add_parser("run", parents=[*on_model, shared["out"], shared["quiet"], shared["images"]],
                       help="everything for some images, as a browsable HTML report",
                       description="Run predictions, intermediate outputs, filters and class activation maps, "
                                   "and write DIR/index.html beside the images it links "
                                   "to (DIR/activations/, DIR/filters/, DIR/cam/).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample:NAME")
    p.add_argument("--layers", metavar="SPEC",
                   help="the intermediate outputs shown: names, comma lists, globs or 'all' (default: every "
                        "conv and pool layer)")
    p.add_argument("--filters-steps", type=_positive_int, metavar="N", help=report_steps)
    p.add_argument("--size", type=_positive_int, default=DEFAULT_SIZE, metavar="PX",
                   help=f"filter picture size (default {DEFAULT_SIZE}; raised where a layer needs more)")
    p.add_argument("--no-filters", action="store_true", help="skip the filters section (the slowest)")
    p.add_argument("--cam-method", choices=tuple(CAM_METHODS), default=next(iter(CAM_METHODS)),
                   help=f"class activation map method (default {next(iter(CAM_METHODS))})")
    p.add_argument("--top", type=_positive_int, metavar="K", help="maps for the K most probable classes (default 3)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("demo", parents=[shared["run"], shared["out"], shared["quiet"]],
                       help="the full report on the default model and the sample photos",
                       description="Run `convscope run` on the embedded default model (EfficientNet-Lite0) with "
                                   "the sample photos (a cat and a coffee) and print where the report is.")
    p.add_argument("--filters-steps", type=_positive_int, metavar="N", help=report_steps)
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("cam", parents=[*on_model, shared["out"], shared["images"]], help="class activation maps (Grad-CAM and family)",
                       description="Show which parts of each image made the network choose a class: a "
                                   "heatmap and an overlay on the photo per image and class, in DIR/cam/.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample:NAME")
    p.add_argument("--layer", metavar="NAME",
                   help="the feature maps to explain (default: the last spatial layer before global pooling)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", action="append", metavar="C",
                       help="class index or label; repeat for several (default: the top-1 prediction)")
    which.add_argument("--top", type=_positive_int, metavar="K", help="maps for the K most probable classes")
    p.add_argument("--method", choices=tuple(CAM_METHODS), default=next(iter(CAM_METHODS)),
                   help=f"default {next(iter(CAM_METHODS))}")
    p.add_argument("--alpha", type=float, default=CAM_ALPHA, metavar="A",
                   help=f"heatmap weight in the overlay (default {CAM_ALPHA})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (default; TF32 off), bf16 autocast with channels_last, tf32 (CUDA GPUs), or "
                        "auto (the fastest measured on this work, never slower than fp32)")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/cam/<stem>_<class>.npy (float32 H x W in [0, 1])")
    p.set_defaults(handler=cmd_cam)

    p = sub.add_parser("evaluate", parents=[*on_model, shared["out"], shared["images"]],
                       help="which map to trust: every CAM method measured and ranked",
                       description="Draw every CAM method's map for each image and class, measure them (deletion "
                                   "and insertion AUCs, Average Drop, Increase in Confidence, the randomization "
                                   "sanity check, the pointing game with --boxes) and rank them by insertion - "
                                   "deletion. Writes DIR/evaluate/metrics.json and, per image and class, "
                                   "<stem>_<class>_curves.png and <stem>_<class>_methods.png.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample:NAME")
    p.add_argument("--methods", default="all", metavar="LIST",
                   help=f"all (default) or a comma list of {', '.join(CAM_METHODS)}")
    p.add_argument("--class", dest="classes", action="append", metavar="C",
                   help="class index or label; repeat for several (default: each image's top-1 prediction)")
    p.add_argument("--layer", metavar="NAME", help="the feature maps to explain (default: as for cam)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), metavar="LIST",
                   help=f"comma list of {', '.join(METRIC_NAMES)} (default {','.join(DEFAULT_METRICS)}; "
                        "pointing with --boxes)")
    p.add_argument("--boxes", metavar="FILE",
                   help='JSON {image file name: {class index or label: [x0, y0, x1, y1]}} in the photo\'s pixels, '
                        "for the pointing game")
    p.add_argument("--steps", type=_positive_int, default=STEPS, metavar="N",
                   help=f"deletion and insertion steps (default {STEPS})")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="fp32 (default), bf16, tf32 or auto")
    p.add_argument("--json", action="store_true", help="print the objects of metrics.json on stdout")
    p.set_defaults(handler=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            if not args.debug:  # other libraries' warnings are noise here; convscope's own are one line
                warnings.simplefilter("ignore")
            warnings.simplefilter("always", ConvscopeWarning)
            return args.handler(args)
    except ConvscopeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"convscope: error: {_one_line(exc.worded_for(flag_for))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"convscope: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _print_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    print(f"convscope: warning: {_one_line(str(message))}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
