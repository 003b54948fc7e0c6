"""The ``convscope`` command line.

Every command shares ``--model``, ``--weights``, ``--device`` and ``--debug``. Errors convscope
raises on purpose print one line on stderr and exit with 2 (bad usage or input) or 1 (failure
while running); ``--debug`` shows the traceback. Images may be files or ``sample:NAME`` for the
photos that ship with installed packages (``sample:chelsea``, ``sample:coffee``, ``sample:grace_hopper``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import ConvscopeError, InputError
from .images import ImageSource, load_image
from .output import check_out_dir, prepare_out_dir
from .samples import SAMPLES, sample_array

SAMPLE_PREFIX = "sample:"


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


def _add_out_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="convscope-out", metavar="DIR", help="output folder (default convscope-out)")


def _print_predictions(names: Sequence[str], ranked: Sequence[Sequence], top: int) -> None:
    for name, preds in zip(names, ranked):
        print(name)
        for rank, p in enumerate(preds[:top], 1):
            print(f"  {rank:>2}. {p.label:<30} {p.probability:7.2%}  (class {p.index})")


def _model_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("model")
    group.add_argument("--model", default="efficientnet_lite0", metavar="NAME",
                       help="efficientnet_lite0 (default, offline ImageNet weights), vgg16, vgg19, "
                            "torchvision:<name> or timm:<name>")
    group.add_argument("--weights", default="imagenet", metavar="SPEC",
                       help="imagenet (default), random (untrained, seeded) or a path to a state dict "
                            "(.pth/.pt/.safetensors)")
    group.add_argument("--device", default="cpu", metavar="DEV",
                       help="torch device: cpu (default), cuda, cuda:1, mps or auto")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    return common


def _resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"--device: unknown device {name!r} (cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: CUDA is not available on this machine")
    return name


def _load(args: argparse.Namespace):
    from .models import load_model

    return load_model(args.model, args.weights, device=_resolve_device(args.device))


def image_source(arg: str) -> ImageSource:
    """A command-line image: a file path, or ``sample:NAME`` for a bundled sample photo."""
    if arg.startswith(SAMPLE_PREFIX) and not os.path.exists(arg):
        name = arg[len(SAMPLE_PREFIX):]
        if name not in SAMPLES:
            raise InputError(f"{arg}: unknown sample; choose from "
                             f"{', '.join(SAMPLE_PREFIX + s for s in SAMPLES)}")
        return sample_array(name)
    return arg


# -- commands ----------------------------------------------------------------------------------
def cmd_layers(args: argparse.Namespace) -> int:
    model = _load(args)
    layers = model.layers()
    if args.json:
        print("[\n" + ",\n".join("  " + json.dumps(layer.as_json()) for layer in layers) + "\n]")
        return 0
    rows = [(layer.name, layer.type, "x".join(map(str, layer.shape)) if layer.shape else "-") for layer in layers]
    widths = [max(len(r[i]) for r in rows + [("layer", "type", "output")]) for i in range(3)]
    print(f"{'layer':<{widths[0]}}  {'type':<{widths[1]}}  output (C x H x W)")
    for name, kind, shape in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape}")
    print(f"{len(rows)} layers; {model.name}, weights {model.weights}, input {model.input_size[0]}x{model.input_size[1]}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    images = [load_image(image_source(arg)) for arg in args.images]  # bad images fail before any work
    model = _load(args)
    if args.top > len(model.labels):
        raise InputError(f"--top {args.top}: the model has only {len(model.labels)} classes")
    x = model.preprocess(images)
    results = model.predict(x, top=args.top)
    if args.json:
        print(json.dumps([{"image": image, "predictions": [p.as_json() for p in preds]}
                          for image, preds in zip(args.images, results)], indent=2))
        return 0
    _print_predictions(args.images, results, args.top)
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    from .intermediate import activations, check_memory, default_layers
    from .jobs import write_activation_grids
    from .output import save_npy
    from .render import colormap_lut

    image = load_image(image_source(args.image))
    colormap_lut(args.cmap)
    check_out_dir(args.out)
    model = _load(args)
    names = default_layers(model) if args.layers is None else model.select_layers(args.layers)
    flat = [name for name in names if not model.layer(name).is_spatial]
    if flat:
        raise InputError(f"--layers: {flat[0]} outputs {list(model.layer(flat[0]).shape or [])}, not a "
                         "C x H x W feature map")
    if not names:
        raise InputError("--layers: no convolution or pooling layers found; name layers with --layers")
    x = model.preprocess(image)
    check_memory(model, names, x.shape)
    out = prepare_out_dir(args.out, "activations")
    outputs = activations(model, x, names)
    if args.save_raw:
        save_npy(x.float().cpu().numpy(), out / "input.npy")
    written = write_activation_grids(outputs, out / "activations", per_row=args.per_row,
                                     normalize=args.normalize, cmap=args.cmap, save_raw=args.save_raw)
    for grid in written:
        print(f"{grid.layer:<28} {'x'.join(map(str, grid.shape)):>14}  {grid.png}")
    print(f"{len(written)} layer grids in {out / 'activations'}")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    from .cams import METHOD_NAMES, cam_layer, compute_cam
    from .jobs import write_cam_files

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, got {args.alpha}")
    photos = [load_image(image_source(arg)) for arg in args.images]
    check_out_dir(args.out)
    model = _load(args)
    layer = cam_layer(model, args.layer)
    fixed_classes = [model.class_index(value) for value in args.classes or []]
    if args.top is not None and args.top > len(model.labels):
        raise InputError(f"--top {args.top}: the model has only {len(model.labels)} classes")
    out = prepare_out_dir(args.out, "cam")
    x = model.preprocess(photos)
    ranked = model.predict(x, top=min(max(5, args.top or 1), len(model.labels)))
    _print_predictions(args.images, ranked, 5)
    if fixed_classes:
        per_image = [fixed_classes for _ in photos]
    else:
        per_image = [[p.index for p in preds[:args.top or 1]] for preds in ranked]
    pairs = [(i, c) for i, classes in enumerate(per_image) for c in classes]
    written = write_cam_files(model, x, photos, args.images, pairs, out, layer=layer, method=args.method,
                              precision=args.precision, alpha=args.alpha, save_raw=args.save_raw,
                              compute=compute_cam)
    print(f"{METHOD_NAMES[args.method]} on layer {layer}: {len(written)} maps in {out / 'cam'}")
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    from .featurevis import (DEFAULT_STEPS, MAX_SIZE, MIN_SIZE, default_filter_layers, parse_filter_spec,
                             preactivation_path, render_filters, total_steps)
    from .jobs import write_filter_grids
    from .precision import resolve_precision

    steps = args.steps or DEFAULT_STEPS[args.method]
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise InputError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {args.size}")
    check_out_dir(args.out)
    model = _load(args)
    names = default_filter_layers(model) if args.layers is None else model.select_layers(args.layers)
    if not names:
        raise InputError("--layers: no convolution layers found")
    plans = []
    for name in names:
        path = preactivation_path(model, name)
        plans.append((name, parse_filter_spec(args.filters, model.layer(path).shape[0])))
    precision = resolve_precision(args.precision, model.device)
    out = prepare_out_dir(args.out, "filters")
    show = not args.quiet and sys.stderr.isatty()
    total = total_steps([len(chosen) for _, chosen in plans], steps)
    from tqdm import tqdm

    with tqdm(total=total, disable=not show, unit="step", desc="filters", leave=False) as bar:
        for name, chosen in plans:
            bar.set_description(name)
            result = render_filters(model, name, chosen, steps=steps, size=args.size, method=args.method,
                                    seed=args.seed, precision=precision, progress=bar.update)
            written = write_filter_grids(result, out / "filters", save_raw=args.save_raw)
            if not args.quiet:
                bar.write(f"{name:<28} {len(chosen):>3} filters  mean score {result.scores.mean():8.3f}  {written}")
    if not args.quiet:
        print(f"{len(plans)} filter grids in {out / 'filters'} ({args.method}, {steps} steps, "
              f"{args.size} px, {precision})")
    return 0


def _run_report(model, photos, names, out, filters_steps, quiet: bool) -> int:
    from tqdm import tqdm

    from .pipeline import run_all

    show = not quiet and sys.stderr.isatty()
    say = (lambda line: None) if quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with tqdm(total=0, disable=not show, unit="step", desc="filters", leave=False) as bar:
        def set_total(total: int) -> None:
            bar.total = total
            bar.refresh()

        report = run_all(model, photos, names, out, filters_steps=filters_steps, say=say, progress=bar.update,
                         on_filter_layers=set_total)
    print(f"Report: {report.resolve()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    photos = [load_image(image_source(arg)) for arg in args.images]
    check_out_dir(args.out)
    model = _load(args)
    return _run_report(model, photos, args.images, args.out, args.filters_steps, args.quiet)


def cmd_demo(args: argparse.Namespace) -> int:
    from .models import load_model
    from .samples import DEMO_SAMPLES

    names = [SAMPLE_PREFIX + name for name in DEMO_SAMPLES]
    photos = [load_image(sample_array(name)) for name in DEMO_SAMPLES]
    check_out_dir(args.out)
    if not args.quiet:
        print(f"convscope demo: efficientnet_lite0 (ImageNet weights, offline) on {', '.join(names)}",
              file=sys.stderr)
    model = load_model("efficientnet_lite0", "imagenet", device=_resolve_device(args.device))
    return _run_report(model, photos, names, args.out, args.filters_steps, args.quiet)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convscope", description="See what a convolutional network sees: layer outputs, "
                                                   "filters and class activation maps.")
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _model_options()

    p = sub.add_parser("layers", parents=[common], help="list the layers: name, type, output shape",
                       description="List the model's layers in network order with their type and the "
                                   "shape of their output for one image. VGG conv and pool layers are "
                                   "listed under their Keras names (block1_conv1 ...).")
    p.add_argument("--json", action="store_true", help='print a JSON array of {"name", "type", "shape"}')
    p.set_defaults(handler=cmd_layers)

    p = sub.add_parser("predict", parents=[common], help="top-K classes for images",
                       description="Print the K most probable classes of each image. IMAGE is a file "
                                   "or sample:chelsea, sample:coffee, sample:grace_hopper.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--top", type=_positive_int, default=5, metavar="K", help="how many classes (default 5)")
    p.add_argument("--json", action="store_true",
                   help='print a JSON array: {"image", "predictions": [{"index", "label", "probability"}]}')
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("activations", parents=[common], help="every channel of conv and pool layers as image grids",
                       description="Draw the output of each convolution and pooling layer for one image: "
                                   "every channel a tile, one PNG grid per layer in DIR/activations/.")
    p.add_argument("image", metavar="IMAGE", help="an image file or sample:NAME")
    p.add_argument("--layers", metavar="SPEC",
                   help="layer names, comma lists, globs (block3_*) or 'all' (default: every conv and pool layer)")
    _add_out_option(p)
    p.add_argument("--per-row", type=_positive_int, default=16, metavar="N", help="tiles per row (default 16)")
    p.add_argument("--normalize", choices=("channel", "layer"), default="channel",
                   help="scale each channel on its own (default) or the whole layer with one scale")
    p.add_argument("--cmap", default="viridis", metavar="NAME", help="matplotlib colormap (default viridis; gray, ...)")
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/activations/<layer>.npy (float32)")
    p.set_defaults(handler=cmd_activations)

    p = sub.add_parser("filters", parents=[common], help="what each filter responds to (gradient ascent)",
                       description="Draw what each filter of a conv layer responds to: start from a gray "
                                   "picture and change it by gradient ascent to maximize the filter's mean "
                                   "pre-activation. One PNG grid (8 columns) per layer in DIR/filters/.")
    p.add_argument("--layers", metavar="SPEC",
                   help="conv layer names, comma lists or globs (default: the first conv of each block)")
    p.add_argument("--filters", metavar="SPEC",
                   help="a count (the first N) or indices and ranges such as 0-15,32 (default 64)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="optimization steps (default 64 for lucid, 40 for classic; more gives better pictures)")
    p.add_argument("--size", type=_positive_int, default=64, metavar="PX", help="picture size (default 64)")
    p.add_argument("--method", choices=("lucid", "classic"), default="lucid",
                   help="lucid (default; Fourier + decorrelated colour + transforms + Adam) or classic "
                        "(pixel-space RMS-normalized ascent)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto (default: bf16 where the hardware is fast at it), fp32 or bf16")
    _add_out_option(p)
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/filters/<layer>.npy (float32 N x 3 x S x S) and <layer>.json (scores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(handler=cmd_filters)

    p = sub.add_parser("run", parents=[common], help="everything for some images, as a browsable HTML report",
                       description="Run predictions, intermediate outputs, filters and class activation maps, "
                                   "and write DIR/index.html beside the images it links "
                                   "to (DIR/activations/, DIR/filters/, DIR/cam/).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample:NAME")
    _add_out_option(p)
    p.add_argument("--filters-steps", type=_positive_int, metavar="N",
                   help="optimization steps for the filters (default 64)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("demo", help="the full report on the default model and the sample photos",
                       description="Run `convscope run` on the embedded default model (EfficientNet-Lite0) with "
                                   "the sample photos (a cat and a coffee) and print where the report is.")
    _add_out_option(p)
    p.add_argument("--filters-steps", type=_positive_int, metavar="N",
                   help="optimization steps for the filters (default 64)")
    p.add_argument("--device", default="cpu", metavar="DEV", help="torch device (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    p.set_defaults(handler=cmd_demo)

    from .cams import METHODS

    p = sub.add_parser("cam", parents=[common], help="class activation maps (Grad-CAM and family)",
                       description="Show which parts of each image made the network choose a class: a "
                                   "heatmap and an overlay on the photo per image and class, in DIR/cam/.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample:NAME")
    p.add_argument("--layer", metavar="NAME",
                   help="the feature maps to explain (default: the last spatial layer before global pooling)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", action="append", metavar="C",
                       help="class index or label; repeat for several (default: the top-1 prediction)")
    which.add_argument("--top", type=_positive_int, metavar="K", help="maps for the K most probable classes")
    p.add_argument("--method", choices=METHODS, default="gradcam", help="default gradcam")
    p.add_argument("--alpha", type=float, default=0.4, metavar="A", help="heatmap weight in the overlay (default 0.4)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32 (default) or bf16 autocast with channels_last")
    _add_out_option(p)
    p.add_argument("--save-raw", action="store_true",
                   help="also write DIR/input.npy and DIR/cam/<stem>_<class>.npy (float32 H x W in [0, 1])")
    p.set_defaults(handler=cmd_cam)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except ConvscopeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"convscope: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"convscope: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
