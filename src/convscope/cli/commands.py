"""The commands of ``convscope``: one ``cmd_<name>`` function each, over the plans of
:mod:`convscope.presentation.plans` (and :mod:`convscope.dataset`), with the printing of its results.
:mod:`convscope.cli.main` parses the command line without importing torch and imports this module
when a command runs."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from .. import dataset, models
from ..catalog import (
    ACTIVATIONS_DIR,
    ATTRIBUTE_DIR,
    CAM_DIR,
    CONCEPTS_DIR,
    DEFAULT_WEIGHTS,
    EVALUATE_DIR,
    EXPLAIN_DIR,
    FILTERS_DIR,
)
from ..clips import Clip, is_clip_source, probe_clip
from ..dataset.atlas import AtlasOptions, atlas, read_timing
from ..dataset.pipeline import DatasetOptions
from ..dataset.report import write_dataset_report, write_example_filters
from ..dataset.shards import SHARD_SIZE
from ..dataset.sources import folder_images
from ..errors import InputError
from ..images import ImageSource, load_image
from ..model import Model, Prediction
from ..presentation.files import check_out_dir, prepare_out_dir, save_npy
from ..presentation.plans import (
    check_top,
    plan_activations,
    plan_attribute,
    plan_cam,
    plan_evaluate,
    plan_explain,
    plan_filters,
)
from ..presentation.run import ReportOptions, run_all
from ..presentation.writers import concept_names, image_stems, write_concept_files
from ..samples import DEMO_SAMPLES, sample_array
from ..targets import TargetOptions, region_mask
from ..techniques.cams import AUGMENTATIONS
from ..techniques.cams import METHODS as CAM_METHODS
from ..techniques.evaluate import Evaluation, class_independent, group_title
from ..techniques.explain import Explanation
from .checks import SAMPLE_PREFIX, sample_name


def _print_predictions(names: Sequence[str], ranked: Sequence[Sequence[Prediction]], top: int) -> None:
    """Each image's ``top`` predictions (more where its target chooses more), the chosen ones marked
    ``*`` where the target chooses other than the first."""
    for name, preds in zip(names, ranked):
        print(name)
        shown = max(top, max((rank for rank, p in enumerate(preds, 1) if p.chosen), default=0))
        mark = any(p.chosen for p in preds[1:])
        for rank, p in enumerate(preds[:shown], 1):
            value = f"{p.value:.4f}" if p.kind in ("similarity", "value") else f"{p.value:7.2%}"
            unit = " of the pixels" if p.kind == "pixels" else ""
            star = (" *" if p.chosen else "  ") if mark else ""
            print(f"  {rank:>2}. {p.label:<30} {value}{unit}  (class {p.index}){star}")


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
    """The model, with the target the flags ask for or the one its output calls for: said in one line on
    stdout unless it is a class's logit (or the command prints JSON)."""
    model = models.load_model(args.model, None if args.weights == DEFAULT_WEIGHTS else args.weights,
                              device=_resolve_device(args.device), preprocess=getattr(args, "preprocess", None),
                              input_size=_input_size(getattr(args, "input_size", None)))
    if model.loading_note is not None and not getattr(args, "json", False):
        print(model.loading_note)
    if hasattr(args, "target"):
        region = None if args.region is None else region_mask(args.region, model.input_size)
        reference, reference_name = _reference(model, args.reference) if args.reference else (None, "the reference")
        options = TargetOptions(args.threshold, region, reference, reference_name, args.score_threshold)
        model.use_target(args.target, options, args.multilabel)
        if model.target.name != "class" and not getattr(args, "json", False):  # a classifier's is no news
            print(model.describe_target())
    return model


def _input_size(text: str | None) -> tuple[int, int] | None:
    """``--input-size H,W`` (or one number for both) as (H, W)."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise InputError(f"input_size {text!r}: give H,W or one positive number", parameter="input_size")
    values = [int(part) for part in parts]
    return (values[0], values[-1])


def _reference(model: Model, arg: str) -> tuple[torch.Tensor, str]:
    """The embedding a ``--reference`` names: an image's (file or sample), or a folder's images' mean."""
    path = Path(arg)
    files = [str(p) for p in folder_images(path)] if path.is_dir() else [arg]
    if not files:
        raise InputError(f"reference {arg}: the folder holds no images", parameter="reference")
    embeddings = torch.cat([model.outputs(model.preprocess([load_image(image_source(f)) for f in files[i:i + 16]]))
                            for i in range(0, len(files), 16)])
    name = path.name if len(files) == 1 else f"{path.name} ({len(files)} images)"
    return embeddings.flatten(1).mean(dim=0), name


def image_source(arg: str) -> ImageSource:
    """A command-line image: a file path, or ``sample:NAME`` for a bundled sample photo."""
    name = sample_name(arg)
    return arg if name is None else sample_array(name)


def _read_inputs(args: Sequence[str]) -> list[Image.Image | ImageSource]:
    """The command's images read (bad ones fail first); a clip (a video file, a frame folder, a
    ``.npy`` volume) checked and kept as its source: its frames are read once the model says how many."""
    inputs = []
    for arg in args:
        source = image_source(arg)
        if is_clip_source(source):
            probe_clip(source)
            inputs.append(source)
        else:
            inputs.append(load_image(source))
    return inputs


def _photos_then_model(args: argparse.Namespace) -> tuple[list[Image.Image | Clip], Model]:
    """The command's images or clips (bad ones fail first), the output folder checked, then the model;
    with ``--crop`` each photo is cut to its centred box of the model's aspect ratio (pictures of the
    photo, such as overlays, then show what the model saw)."""
    inputs = _read_inputs(args.images)
    check_out_dir(args.out)
    model = _load(args)
    photos = model.pictures(inputs, args.images)
    if args.crop:
        crop = model.preprocessing.centre_crop
        photos = [photo.map(crop) if isinstance(photo, Clip) else crop(photo) for photo in photos]
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
    # a transformer's tokens and channels-last maps are shown as the maps convscope sees (D x h x w)
    print(f"{'layer':<{widths[0]}}  {'type':<{widths[1]}}  output (C x H x W)")
    for name, kind, shape in rows:
        print(f"{name:<{widths[0]}}  {kind:<{widths[1]}}  {shape}")
    height, width = model.input_size
    print(f"{len(rows)} layers; {model.name}, weights {model.weights}, input {height}x{width}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    inputs = _read_inputs(args.images)  # bad images fail before any work
    model = _load(args)
    images = model.pictures(inputs, args.images)
    top = model.shown(5) if args.top is None else check_top(model, args.top)
    x = model.preprocess(images, crop=args.crop, names=args.images)
    results = model.predict(x, top=top)
    if args.json:
        print(json.dumps([{"image": image, "predictions": [p.as_json() for p in preds]}
                          for image, preds in zip(args.images, results)], indent=2))
        return 0
    _print_predictions(args.images, results, top)
    return 0


def cmd_activations(args: argparse.Namespace) -> int:
    inputs = _read_inputs([args.image])
    check_out_dir(args.out)
    model = _load(args)
    (image,) = model.pictures(inputs, [args.image])
    x = model.preprocess(image, crop=args.crop, names=[args.image])
    plan = plan_activations(model, x.shape, args.layers, per_row=args.per_row, normalize=args.normalize,
                            cmap=args.cmap, save_raw=args.save_raw)
    out = prepare_out_dir(args.out, ACTIVATIONS_DIR)
    if args.save_raw:
        _save_input(x, out)
    _, written = plan.write(model, x, out / ACTIVATIONS_DIR)
    for grid in written:
        print(f"{grid.layer:<28} {'x'.join(map(str, grid.shape)):>14}  {grid.png}")
    print(f"{len(written)} layer grids in {out / 'activations'}")
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_cam(model, args.layer, args.classes or (), args.top, method=args.method, precision=args.precision,
                    alpha=args.alpha, save_raw=args.save_raw, aug_smooth=args.aug_smooth,
                    eigen_smooth=args.eigen_smooth, seed=args.seed, samples=args.samples, fuse=args.fuse)
    if CAM_METHODS[plan.method].class_independent and (args.classes or args.top):
        print(f"convscope: note: {CAM_METHODS[plan.method].title} does not depend on the class: its map is the "
              "same for every class", file=sys.stderr)
    out = prepare_out_dir(args.out, CAM_DIR)
    x = model.preprocess(photos, names=args.images)
    ranked = model.predict(x, top=model.shown(max(5, plan.top or 1)))
    _print_predictions(args.images, ranked, 5)
    pairs = plan.pairs(ranked, args.images, model.labels)
    if args.save_raw:
        _save_input(x, out)
    cost = plan.settings.passes_per_image(model)
    if cost is not None:  # the methods that run the model once per channel or copy say so before they start
        per_map, how = cost
        maps = len(pairs)
        runs = maps * (len(AUGMENTATIONS) if plan.settings.aug_smooth else 1)
        augmented = f" x {len(AUGMENTATIONS)} augmentations" if plan.settings.aug_smooth else ""
        print(f"{plan.settings.method.title}: up to {per_map * runs:,} forward passes (per map: {how}; "
              f"{maps} map{'s' if maps != 1 else ''}{augmented})", file=sys.stderr, flush=True)
    unit = "masked inputs" if plan.settings.method.masks_input else "noisy copies"
    with _progress_bar(False, unit) as bar:  # the methods that run the model once per channel or copy
        written = plan.write(model, x, photos, image_stems(args.images), pairs, out / CAM_DIR,
                             progress=bar.update)
    print(f"{CAM_METHODS[plan.method].title} on {CAM_METHODS[plan.method].where(plan.layer)}: {len(written)} maps in "
          f"{out / 'cam'} "
          f"({_precisions([(w.precision, w.precision_reason) for w in written])})")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_attribute(model, args.method, args.classes or (), args.top, alpha=args.alpha, save_raw=args.save_raw,
                          steps=args.steps, samples=args.samples, sigma=args.sigma, seed=args.seed,
                          window=args.window, stride=args.stride, layer=args.layer)
    out = prepare_out_dir(args.out, ATTRIBUTE_DIR)
    x = model.preprocess(photos, names=args.images)
    ranked = model.predict(x, top=model.shown(max(5, plan.top or 1)))
    _print_predictions(args.images, ranked, 5)
    written = plan.write(model, x, photos, image_stems(args.images), plan.pairs(ranked, args.images, model.labels),
                         out / ATTRIBUTE_DIR)
    for w in written:
        if w.gap is not None:
            share = f" ({abs(w.gap / w.change):.1%} of it)" if w.change else ""
            print(f"{w.heatmap.name.removesuffix('_heatmap.png')}: the score rose {w.change:+.4g} from the black "
                  f"baseline; the attributions sum to {w.change + w.gap:+.4g}, a completeness gap of {w.gap:+.4g}"
                  f"{share} (more --steps narrow it)")
    print(f"{plan.settings.method.title}: {len(written)} attributions in {out / ATTRIBUTE_DIR}")
    return 0


def cmd_concepts(args: argparse.Namespace) -> int:
    from ..techniques.concepts import concepts

    photos, model = _photos_then_model(args)
    x = model.preprocess(photos, names=args.images)
    found = concepts(model, x, args.n, args.layer)
    out = prepare_out_dir(args.out, CONCEPTS_DIR)
    pictures, table = write_concept_files(found, photos, image_stems(args.images), model.labels, out / CONCEPTS_DIR,
                                          alpha=args.alpha)
    for name in concept_names(found, model.labels):
        print(name)
    if found.top is None:
        print(f"(layer {found.layer} does not feed global average pooling and one Linear layer: the concepts have no "
              "class labels)")
    print(f"{len(found.vectors)} concepts of layer {found.layer}: {len(pictures)} pictures and {table.name} in "
          f"{out / CONCEPTS_DIR}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_evaluate(model, args.layer, args.methods, args.metrics, args.classes or (), args.steps, args.boxes,
                         args.precision, sanity_seeds=args.sanity_seeds)
    x = model.preprocess(photos, names=args.images)
    ranked = model.predict(x, top=1)
    plan.boxes(model, args.images, photos, plan.classes_for(ranked))  # a bad boxes file fails before any work
    out = prepare_out_dir(args.out, EVALUATE_DIR)
    say = (lambda line: None) if args.json else (lambda line: print(f"  ... {line}", file=sys.stderr, flush=True))
    metrics_json, written = plan.write(model, x, photos, args.images, image_stems(args.images), ranked,
                                       out / EVALUATE_DIR, progress=say)
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
        sanity = "-" if best.sanity is None or not best.sanity.spearman else (
            f"{'passed' if best.sanity.passed else 'FAILED'} (Spearman {best.sanity.spearman[0]:.2f} "
            f"\u00b1 {best.sanity.spread[0]:.2f} over {best.sanity.seeds} randomizations of the classifier)")
        if all(class_independent(m.method) for m in group):
            sanity = "ignores the class"
        pointing = "" if best.pointing is None else f"  pointing {'hit' if best.pointing[0] else 'miss'} " \
                                                     f"{best.pointing[1]:.2f}"
        name = group_title(group) + (" (empty)" if best.empty else "")
        print(f"{rank:>2}. {name:<36} {cells[0]:>8} {cells[1]:>9} {cells[2]:>7} {cells[3]:>7} {cells[4]:>7}  "
              f"{sanity}{pointing}")
    for note in evaluation.notes:
        print(f"   note: {note}")


def cmd_explain(args: argparse.Namespace) -> int:
    photos, model = _photos_then_model(args)
    plan = plan_explain(model, args.layer, args.classes or (), args.top, args.precision, args.filters_steps)
    x = model.preprocess(photos, names=args.images)
    explanations = plan.explain(model, x, model.predict(x, top=1))
    out = prepare_out_dir(args.out, EXPLAIN_DIR, FILTERS_DIR)
    with _progress_bar(args.quiet or args.json) as bar:
        _total_of(bar)(plan.missing_steps(model, explanations, out / FILTERS_DIR))
        written = plan.write(model, explanations, photos, args.images, image_stems(args.images), out, bar.update)
    if args.json:
        print(json.dumps([json.loads(w.json.read_text(encoding="utf-8")) for w in written], indent=2))
        return 0
    for w in written:
        _print_explanation(args.images[w.explanation.image], w.explanation)
        print(f"   figure {w.figure}, table {w.json}")
    return 0


def _print_explanation(name: str, explanation: Explanation) -> None:
    """The class and its score, then the top channels and those most against it, with their shares."""
    print(f"{name}: class {explanation.class_index} {explanation.label}, score {explanation.score:.4g} "
          f"(p {explanation.probability:.1%}); layer {explanation.layer}: contributions sum to {explanation.total:.4g}")
    print(f"   {'':<8} {'channel':>7} {'contribution':>12} {'share':>8}  peak (row, column)")
    for kind, c in explanation.sides():
        share = "-" if c.share is None else f"{c.share:.1%}"
        print(f"   {kind:<8} {c.index:>7} {c.contribution:>+12.4g} {share:>8}  {c.peak}")


def _cell(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _precisions(used: Sequence[tuple[str, str]]) -> str:
    """The precisions used and why, once each: ``bf16: auto: bf16 measured 1.8x faster than fp32 here``."""
    return "; ".join(f"{precision}: {reason}" if reason != "as asked" else precision
                     for precision, reason in dict.fromkeys(used))


def _total_of(bar: tqdm) -> Callable[[int], None]:
    """A callback that sets the progress bar's total once the work is known."""
    def set_total(total: int) -> None:
        bar.total = total
        bar.refresh()
    return set_total


def _progress_bar(quiet: bool, unit: str = "steps") -> tqdm:
    """A progress bar on stderr when it is a terminal and not ``--quiet``."""
    return tqdm(total=None, disable=quiet or not sys.stderr.isatty(), unit=f" {unit}", leave=False)


def cmd_filters(args: argparse.Namespace) -> int:
    check_out_dir(args.out)
    model = _load(args)
    plan = plan_filters(model, args.layers, args.filters, steps=args.steps, size=args.size, method=args.method,
                        seed=args.seed, precision=args.precision, save_raw=args.save_raw, objective=args.objective,
                        classes=args.classes, diversity=args.diversity, direction=args.direction,
                        transparency=args.transparency, photo=None if args.photo is None else image_source(args.photo),
                        reg_layer=args.reg_layer)
    for note in plan.notes:
        print(f"convscope: note: {note}", file=sys.stderr)
    out = prepare_out_dir(args.out, FILTERS_DIR)
    used = []
    with _progress_bar(args.quiet) as bar:
        _total_of(bar)(plan.total_steps)
        for result, written in plan.write(model, out / FILTERS_DIR, progress=bar.update):
            used.append((result.precision, result.precision_reason))
            if not args.quiet:
                dead = sum(result.dead)
                notes = "".join([f"  {result.redrawn} redrawn with neuron" if result.redrawn else "",
                                 f"  {result.not_reached - dead} not reached" if result.not_reached - dead else "",
                                 f"  {dead} dead (all weights zero)" if dead else ""])
                bar.write(f"{result.layer:<28} {len(result.filters):>3} pictures  mean score "
                          f"{result.scores.mean():8.3f}  {result.precision}  {written}{notes}")
    if not args.quiet:
        print(f"{len(plan.layers)} filter grids in {out / 'filters'} ({plan.method}, {plan.steps} steps, "
              f"{plan.size} px, {_precisions(used)})")
    return 0


def _report_options(args: argparse.Namespace) -> ReportOptions:
    """The report's options from ``run``'s flags (``demo`` has only ``--filters-steps``)."""
    if args.command != "run":
        return ReportOptions(filters_steps=args.filters_steps)
    return ReportOptions(layers=args.layers, filters=not args.no_filters, filters_steps=args.filters_steps,
                         filters_size=args.size, objective=args.objective, method=args.cam_method, top=args.top,
                         dataset=args.dataset, trust=args.trust != "none", trust_methods=args.trust,
                         sanity_seeds=args.sanity_seeds, attribution=args.attribution, concepts=args.concepts)


def _run_report(args: argparse.Namespace, model: Model, photos: list[Image.Image], names: Sequence[str]) -> int:
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    with _progress_bar(args.quiet) as bar:
        report = run_all(model, photos, names, args.out, _report_options(args), say=say, progress=bar.update,
                         on_filter_layers=_total_of(bar), command=shlex.join(["convscope", *args.argv]),
                         on_timings=_print_timings if args.timings else None)
    print(f"Report: {report.resolve()}")
    return 0


def _print_timings(seconds: dict[str, float]) -> None:
    """Where the report's time went, a line per section, on stderr (``--timings``)."""
    width = max(map(len, seconds))
    print(f"time: {sum(seconds.values()):.1f} s", file=sys.stderr)
    for section, spent in seconds.items():
        print(f"  {section:<{width}}  {spent:7.1f} s", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:  # at most MAX_REPORT_IMAGES images, checked in convscope.cli.checks
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


def _dataset_options(args: argparse.Namespace) -> DatasetOptions:
    """The dataset run's options from ``dataset``'s flags."""
    return DatasetOptions(labels=args.labels, method=args.cam_method, layer=args.cam_layer, metrics=args.metrics,
                          batch_size=args.batch_size, workers=args.workers, limit=args.limit, restart=args.restart,
                          precision=args.precision, engine=args.engine, ray_address=args.ray_address,
                          examples=args.examples, examples_top=args.examples_top)


def cmd_dataset(args: argparse.Namespace) -> int:
    model = _load(args)
    with _progress_bar(args.quiet, "images") as bar:
        folder = dataset.run(model, args.source, args.out, _dataset_options(args), progress=bar.update,
                             on_total=_total_of(bar))
    if args.examples is not None:
        with _progress_bar(args.quiet, "filter pictures") as bar:
            write_example_filters(model, args.out, progress=bar.update, on_total=_total_of(bar))
    index = write_dataset_report(args.out, model.class_labels)
    result = dataset.summary(dataset.load(folder))
    accuracy = "" if result["accuracy"] is None else \
        f"; top-1 accuracy {result['accuracy']:.1%} on {result['labelled']} labelled images"
    boxes = f" ({result['rows'] - len(result['errors'])} rows: a row per box)" if model.target.finds_entries else ""
    print(f"{result['images']} images in {folder}{boxes}{accuracy}; {len(result['errors'])} unreadable")
    for path, error in result["errors"][:20]:
        print(f"  unreadable: {error}")
    print(f"Report: {index.resolve()}")
    return 0


class _PhaseClock:
    """Says, once per phase, the time left after its first shard (one line on stderr, tty or not)."""

    def __init__(self, shard: dict[str, int], quiet: bool) -> None:
        self.shard, self.quiet = shard, quiet
        self.total: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.said: set[str] = set()

    def on_total(self, phase: str, total: int) -> None:
        self.total[phase] = total
        self.started[phase] = time.perf_counter()

    def progress(self, phase: str, count: int) -> None:
        self.done[phase] = self.done.get(phase, 0) + count
        total, done = self.total.get(phase), self.done[phase]
        if self.quiet or phase in self.said or not total or done < min(total, self.shard[phase]) or done >= total:
            return
        self.said.add(phase)
        spent = time.perf_counter() - self.started[phase]
        left = spent / done * (total - done)
        print(f"convscope: {phase}: {done} of {total} in {spent:.0f} s; about {_duration(left)} left for this phase",
              file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_atlas(args: argparse.Namespace) -> int:
    model = _load(args)
    options = AtlasOptions(layers=args.layers, top=args.top, method=args.method, steps=args.steps, size=args.size,
                           seed=args.seed, units_per_shard=args.units_per_shard, precision=args.precision,
                           labels=args.labels, limit=args.limit, batch_size=args.batch_size, workers=args.workers,
                           engine=args.engine, ray_address=args.ray_address, restart=args.restart)
    clock = _PhaseClock({"images": SHARD_SIZE, "pictures": args.units_per_shard}, args.quiet)
    bars: dict[str, tqdm] = {}

    def bar(phase: str) -> tqdm:
        if phase not in bars:
            for other in bars.values():
                other.close()
            bars[phase] = _progress_bar(args.quiet, phase)
        return bars[phase]

    def progress(phase: str, count: int) -> None:
        bar(phase).update(count)
        clock.progress(phase, count)

    def on_total(phase: str, total: int) -> None:
        _total_of(bar(phase))(total)
        clock.on_total(phase, total)

    try:
        index = atlas(model, args.dataset, args.out, options, progress=progress, on_total=on_total)
    finally:
        for other in bars.values():
            other.close()
    timing = read_timing(args.out)
    layers = len(json.loads((Path(args.out) / "examples" / "filters.json").read_text(encoding="utf-8")))
    print(f"Atlas of {model.name}: {layers} layer{'s' if layers != 1 else ''}; where the time went: "
          + "; ".join(timing.lines()))
    print(f"Atlas: {index.resolve()}")
    return 0
