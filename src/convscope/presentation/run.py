"""``convscope run``: predictions, intermediate outputs, filters and class activation maps for some
images, written into one folder with a browsable ``index.html`` (see :mod:`convscope.presentation.report`).

Every section is planned (and so checked) before the first one runs, through the same plans as the
single commands (:mod:`convscope.presentation.plans`)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from PIL import Image

from ..catalog import (
    ACTIVATIONS_DIR,
    ATTRIBUTE_DIR,
    ATTRIBUTION_METHOD_NAMES,
    CAM_DIR,
    CONCEPTS_DIR,
    EVALUATE_DIR,
    EXAMPLES_DIR,
    EXPLAIN_DIR,
    FILTERS_DIR,
    IMAGES_DIR,
    OBJECTIVES,
    SANITY_SEEDS,
    TRUST_METHODS,
)
from ..clips import Clip
from ..errors import InputError, check_options
from ..images import ImageSource, as_list
from ..layers import default_activation_layers
from ..model import Model, as_model
from ..techniques.cams import DEFAULT_METHOD as DEFAULT_CAM_METHOD
from ..techniques.cams import METHODS as CAM_METHODS
from ..techniques.concepts import check_concepts, concepts
from ..techniques.evaluate import class_independent, group_title, method_title
from ..techniques.explain import DEFAULT_TOP as EXPLAIN_TOP
from ..techniques.explain import Explanation
from ..techniques.filters import DEFAULT_SIZE
from ..techniques.metrics import SANITY_THRESHOLD, SanityResult
from ..techniques.units import LOGITS, input_kernels
from .drawing import PICTURE_COLUMNS, PICTURE_MARGIN, frame_strip, grid_geometry, grid_layout
from .files import prepare_out_dir, save_animation, save_image
from .filter_cache import FilterSettings, cached_filter_result, layer_folder, missing_steps
from .plans import (
    EXPLAIN_FILTER_METHOD,
    ActivationsPlan,
    AttributePlan,
    CamPlan,
    EvaluatePlan,
    ExplainPlan,
    FiltersPlan,
    plan_activations,
    plan_attribute,
    plan_cam,
    plan_evaluate,
    plan_explain,
    plan_filters,
)
from .report import (
    ActivationLayer,
    ActivationsSection,
    CamEntry,
    CamSection,
    FilterLayer,
    FilterScore,
    FiltersSection,
    Report,
    ReportImage,
    TrustImage,
    TrustRow,
    TrustSection,
    WhyChannel,
    WhyThisClass,
    write_report,
)
from .writers import concept_names, image_stems, report_size, write_concept_files, write_filter_grids

PHOTO_LIMIT = (960, 720)  # the size photos are shown at in the report
CAM_TOP = 3  # classes per image in the report
#: What "Which map to trust" measures.
TRUST_METRICS = ("deletion", "insertion", "drop", "sanity")
FILTER_METHOD = EXPLAIN_FILTER_METHOD  # the report's filter pictures and "Why this class" share the cache


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("convscope", "torch", "torchvision", "numpy", "pillow", "matplotlib", "jinja2"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


@dataclass(frozen=True)
class ReportOptions:
    """What a report shows (the user's options of :func:`run_all`).

    ``layers``: the intermediate outputs shown (default: every conv and pooling layer); ``filters``:
    whether to draw filters at all, with ``filters_steps``, ``filters_size``, ``filters_count`` per
    layer and ``objective`` (``mean`` or ``neuron``; flat or unreached ``mean`` pictures are drawn
    again with ``neuron``); ``method`` and ``top`` (default 3) classes per image for the maps;
    ``attribution``: the pixel attribution shown beside each image's maps, for its top class (None:
    none); ``concepts``: that many concepts shared by the images, in a section of their own (None:
    none); ``trust``: the "Which map to trust" section (``trust_methods``, default
    :data:`~convscope.catalog.TRUST_METHODS`, or ``all``, measured and ranked for each image's top
    class; see :mod:`convscope.techniques.evaluate`); ``dataset``: the folder of a dataset run made
    with examples, whose examples the filter pictures link to.
    """

    layers: str | Sequence[str] | None = None
    filters: bool = True
    filters_steps: int | None = None
    filters_size: int = DEFAULT_SIZE
    filters_count: str | int | None = None
    objective: str = OBJECTIVES[0]
    method: str = DEFAULT_CAM_METHOD
    top: int | None = None
    attribution: str | None = ATTRIBUTION_METHOD_NAMES[0]
    concepts: int | None = None
    trust: bool = True
    trust_methods: str | Sequence[str] = TRUST_METHODS
    sanity_seeds: int = SANITY_SEEDS
    dataset: str | Path | None = None


def run_all(model: Model, photos: Sequence[Image.Image], names: Sequence[str], out: str | Path,
            options: ReportOptions | None = None, *, say: Callable[[str], None] = print,
            progress: Callable[[int], None] | None = None, on_filter_layers: Callable[[int], None] | None = None,
            command: str | None = None, on_timings: Callable[[dict[str, float]], None] | None = None,
            **keywords: Any) -> Path:
    """Run everything for ``photos`` and write ``out/index.html``; returns its path.

    ``options`` (:class:`ReportOptions`; or its fields as ``keywords``, which replace those of
    ``options``) say what is shown. ``say`` receives one line per stage; ``progress`` the filter
    steps as they are done, after ``on_filter_layers`` received the total number of steps.
    ``command`` is the command line shown in the report (None: called from Python). Everything is
    checked before the first section runs.
    """
    options = check_options(ReportOptions, options, keywords)
    clock = SectionClock()
    if model.preprocessing.channels == 1:  # a grayscale model: its photos (and overlays) in gray
        photos = [photo.map(gray) if isinstance(photo, Clip) else gray(photo) for photo in photos]
    x = model.preprocess(photos, names=names)
    dataset_examples = example_links(options.dataset, out) if options.dataset is not None else None
    # a classifier's report shows its top classes; other targets, the ones they choose (a multilabel
    # model's classes above the threshold, a segmentation's largest class)
    default_top = min(CAM_TOP, len(model.labels)) if model.target.ranks_classes else None
    top = default_top if options.top is None else options.top
    cam_plan = plan_cam(model, top=top, method=options.method)
    attribute_plan = None if options.attribution in (None, "none") else plan_attribute(model, options.attribution)
    if options.concepts is not None:
        check_concepts(model, cam_plan.layer, options.concepts, "concepts")
    layers = options.layers
    if layers is None:  # the default layers, and the CAM layer whose channels "Why this class" links to
        layers = list(dict.fromkeys([*default_activation_layers(model.all_layers()), cam_plan.layer]))
    activations_plan = plan_activations(model, (1, *x.shape[1:]), layers)  # one image at a time
    filters_plan = plan_filters(model, filters=options.filters_count, steps=options.filters_steps,
                                size=options.filters_size, method=FILTER_METHOD,
                                objective=options.objective) if options.filters else None
    explain_plan = plan_explain(model, cam_plan.layer, top=min(EXPLAIN_TOP, model.layer(cam_plan.layer).shape[0]),
                                filter_steps=options.filters_steps)
    if not options.filters:  # the pictures are the slow part: --no-filters skips them here too
        explain_plan = dataclasses.replace(explain_plan, filter_layer=None, filters=None)
    # Only the sanity check's classifier step (its verdict): the whole cascade doubles `make demo`'s
    # time (measured: 63 s -> 137 s on 2 cores); `convscope evaluate` runs all of it.
    trust_plan = plan_evaluate(model, cam_plan.layer, options.trust_methods, TRUST_METRICS, cascade=False,
                               sanity_seeds=options.sanity_seeds) if options.trust else None
    out = prepare_out_dir(out, ACTIVATIONS_DIR, FILTERS_DIR, CAM_DIR, EXPLAIN_DIR, IMAGES_DIR,
                          *([EVALUATE_DIR] if options.trust else []), *([ATTRIBUTE_DIR] if attribute_plan else []))
    stems = image_stems(names)
    clock.lap("planning")

    say("[1/6] predictions")
    ranked = model.predict(x, top=model.shown(5))
    images = []
    for stem, name, photo, predictions in zip(stems, names, photos, ranked):
        size = report_size(photo.width, photo.height, PHOTO_LIMIT)
        if isinstance(photo, Clip):  # the clip as a strip of frames and as an animation
            frames = [frame.resize(size, Image.BILINEAR) for frame in photo.frames]
            path = save_image(frame_strip(frames), out / IMAGES_DIR / f"{stem}.jpg", quality=90)
            animation = save_animation(frames, out / IMAGES_DIR / f"{stem}.webp")
            images.append(ReportImage(name, stem, _rel(path, out), *size, predictions, frames=len(frames),
                                      animation=_rel(animation, out)))
            continue
        shown = photo.resize(size, Image.BILINEAR)
        path = save_image(shown, out / IMAGES_DIR / f"{stem}.jpg", quality=90)
        images.append(ReportImage(name, stem, _rel(path, out), shown.width, shown.height, predictions))
    if filters_plan is not None and model.target.ranks_classes:  # what each image's top class looks like
        classes = list(dict.fromkeys(p.index for predictions in ranked for p in predictions[:1]))
        filters_plan = dataclasses.replace(filters_plan, layers=[*filters_plan.layers, (LOGITS, classes)])
    clock.lap("predictions")

    say(f"[2/6] intermediate outputs: {len(activations_plan.layers)} layers x {len(names)} images")
    activations = _activations_section(model, activations_plan, x, names, stems, out)
    clock.lap("intermediate outputs")

    explanations = explain_plan.explain(model, x, ranked)
    clock.lap("why this class")
    class_pictures: dict[int, str] = {}
    if filters_plan is None:
        say("[3/6] filters: skipped")
        filters_section = FiltersSection(FILTER_METHOD, 0, options.filters_size, "-", [], options.objective)
    else:
        settings = {name: filters_plan.settings_for(name) for name, _ in filters_plan.layers}
        to_compute = missing_steps(model, dict(filters_plan.layers), out / FILTERS_DIR, settings)
        say(f"[3/6] filters: {len(filters_plan.layers)} layers, "
            f"{sum(len(c) for _, c in filters_plan.layers)} filters"
            f"{'' if to_compute == filters_plan.total_steps else ' (some from the cache in filters/)'}")
        for note in filters_plan.notes:
            say(f"      note: {note}")
        if on_filter_layers is not None:
            on_filter_layers(to_compute + explain_plan.missing_steps(model, explanations, out / FILTERS_DIR))
        filters_section, class_pictures = _filters_section(model, filters_plan, settings, out, progress, say)
    clock.lap("filters")

    title = CAM_METHODS[cam_plan.method].title
    say(f"[4/6] class activation maps ({title}, layer {cam_plan.layer})")
    _add_cams(model, cam_plan, x, photos, stems, ranked, images, out)
    if attribute_plan is not None:
        say(f"      and pixel attributions ({attribute_plan.settings.method.title}) for each image's top class")
        _add_attributions(model, attribute_plan, x, photos, stems, ranked, images, out)
    concepts_section = None
    if options.concepts:
        say(f"      and {options.concepts} concepts shared by the images (Deep Feature Factorization)")
        concepts_section = _concepts_section(model, options.concepts, x, photos, stems, out)
    clock.lap("class activation maps")

    say(f"[5/6] why this class: the top {explain_plan.top} channels of {explain_plan.layer} for each image's top class")
    _add_why(model, explain_plan, explanations, photos, names, stems, images, activations, dataset_examples, out,
             progress, class_pictures)
    clock.lap("why this class")

    trust_section = None
    if trust_plan is not None:
        say(f"[6/6] which map to trust: {len(trust_plan.methods)} methods for each image's top class")
        trust_section = _trust_section(model, trust_plan, x, photos, names, stems, ranked, out)
        clock.lap("which map to trust")

    report = Report(model.name, model.weights, list(model.input_size), images, activations, filters_section,
                    CamSection(title, cam_plan.layer, cam_plan.alpha, cam_plan.top), trust_section,
                    round(clock.elapsed(), 1), package_versions(), command, dataset_examples,
                    clock.rounded(), concepts_section)
    written = write_report(out, report)
    clock.lap("the page")
    if on_timings is not None:
        on_timings(clock.rounded())
    return written


def gray(photo: Image.Image) -> Image.Image:
    """A photo as a grayscale model sees it, in RGB."""
    return photo.convert("L").convert("RGB")


class SectionClock:
    """Where a report's time went: seconds per section, summed when a section is timed twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self._started

    def lap(self, section: str) -> None:
        """The time since the last lap counted for ``section``."""
        now = time.perf_counter()
        self.seconds[section] = self.seconds.get(section, 0.0) + now - self._last
        self._last = now

    def rounded(self) -> dict[str, float]:
        return {section: round(seconds, 1) for section, seconds in self.seconds.items()}


def example_links(dataset: str | Path, out: str | Path) -> dict[str, Any]:
    """What the report needs to link filters to a dataset run's examples (see ``Report.dataset_examples``)."""
    folder = Path(dataset)
    found = sorted((folder / EXAMPLES_DIR).glob("*.json"))
    layers = {}
    for path in found:
        facts = json.loads(path.read_text(encoding="utf-8"))
        if "layer" in facts and "channels" in facts:
            layers[facts["layer"]] = len(facts["channels"])
    if not layers or not (folder / "index.html").exists():
        raise InputError(f"dataset {folder}: holds no dataset examples with their report (make them with "
                         "convscope dataset SOURCE --out DIR --examples)", parameter="dataset")
    index = os.path.relpath(folder.resolve() / "index.html", Path(out).resolve())
    return {"index": Path(index).as_posix(), "layers": layers}


def html_report(model: Model, images: ImageSource | Sequence[ImageSource], out: str | Path = "convscope-out", *,
                names: Sequence[str] | None = None, quiet: bool = True, progress: Callable[[int], None] | None = None,
                on_filter_layers: Callable[[int], None] | None = None, command: str | None = None,
                **options: Any) -> Path:
    """The browsable report of :func:`run_all` for any model and images (paths, PIL images or arrays),
    written to ``out/index.html``; returns its path. ``names`` label the images (default: their file
    names, or ``image1``, ``image2``, ...); ``options`` are the fields of :class:`ReportOptions`
    (``layers``, ``filters``, ``filters_steps``, ``filters_size``, ``method``, ``top``, ...)."""
    chosen = check_options(ReportOptions, None, options)
    sources = as_list(images)
    if not sources:
        raise InputError("images: no images given", parameter="images")
    model = as_model(model)
    photos = model.pictures(sources)
    if names is None:
        names = [os.fspath(s) if isinstance(s, (str, os.PathLike)) else f"image{i + 1}" for i, s in enumerate(sources)]
    elif len(names) != len(photos):
        raise InputError(f"names has {len(names)} entries for {len(photos)} images", parameter="names")
    return run_all(model, photos, names, out, chosen, say=(lambda line: None) if quiet else print,
                   progress=progress, on_filter_layers=on_filter_layers, command=command)


def _activations_section(model: Model, plan: ActivationsPlan, x, names: Sequence[str], stems: Sequence[str],
                         out: Path) -> ActivationsSection:
    """Every image's grids (the first image's where `convscope activations` puts them, the others in
    a folder each), with each channel's min, mean and max for the page."""
    infos = {layer.name: layer for layer in model.layers()}
    layers: dict[str, ActivationLayer] = {}
    for index, stem in enumerate(stems):
        folder = out / ACTIVATIONS_DIR if index == 0 else prepare_out_dir(out / ACTIVATIONS_DIR / stem)
        outputs, written = plan.write(model, x[index:index + 1], folder)
        for grid in written:
            maps = outputs[grid.layer][0].float()
            if grid.layer not in layers:
                channels, height, width = grid.shape[0], grid.shape[-2], grid.shape[-1]
                scale, separator = grid_geometry(height, width)
                layers[grid.layer] = ActivationLayer(grid.layer, infos[grid.layer].type, list(grid.shape),
                                                     [width * scale, height * scale], separator,
                                                     grid_layout(channels, plan.per_row)[1])
            flat = maps.flatten(1)
            stats = zip(flat.amin(dim=1).tolist(), flat.mean(dim=1).tolist(), flat.amax(dim=1).tolist())
            layers[grid.layer].files.append(_rel(grid.png, out))
            if grid.frames:
                layers[grid.layer].frames.append([_rel(path, out) for path in grid.frames])
            layers[grid.layer].stats.append([[round(a, 4), round(b, 4), round(c, 4)] for a, b, c in stats])
    return ActivationsSection(list(names), plan.normalize, plan.per_row, list(layers.values()))


def _filters_section(model: Model, plan: FiltersPlan, settings: dict[str, FilterSettings], out: Path,
                     progress: Callable[[int], None] | None, say: Callable[[str], None]
                     ) -> tuple[FiltersSection, dict[int, str]]:
    """Each layer's pictures from the filter cache in ``out/filters`` (computed where missing, so a
    second run, or pictures ``explain`` made, are reused), drawn as the grid ``convscope filters``
    writes (a first layer's kernels beside); and each class picture's file (class -> path)."""
    layers, results, class_pictures = [], [], {}
    for name, chosen in plan.layers:
        result = cached_filter_result(model, name, chosen, out / FILTERS_DIR, settings[name], plan.precision, progress)
        kernels = input_kernels(model, name)
        png = write_filter_grids(result, out / FILTERS_DIR, kernels=kernels)
        results.append(result)
        if name == LOGITS:
            folder = layer_folder(out / FILTERS_DIR, model, name, settings[name])
            class_pictures = {c: _rel(folder / f"{c}.png", out) for c in chosen}
        dead = sum(result.dead)
        layers.append(FilterLayer(
            result.layer, _rel(png, out), result.size, PICTURE_MARGIN, *grid_layout(len(result.filters),
                                                                                   PICTURE_COLUMNS)[::-1],
            [FilterScore(i, round(float(s), 4), result.objectives[p], result.status(p),
                         result.labels[p] if result.labels else "")
             for p, (i, s) in enumerate(zip(result.filters, result.scores.tolist()))],
            result.redrawn, result.not_reached - dead, dead,
            _rel(png.with_name(f"{png.stem}_kernels.png"), out) if kernels is not None else ""))
    for result in results:
        say(f"      {result.layer}: {result.precision} ({result.precision_reason})")
    used = "/".join(dict.fromkeys(result.precision for result in results))
    section = FiltersSection(plan.method, plan.steps, plan.size, used or plan.precision, layers, plan.objective)
    return section, class_pictures


def _add_cams(model: Model, plan: CamPlan, x, photos: Sequence[Image.Image], stems: Sequence[str], ranked,
              images: list[ReportImage], out: Path) -> None:
    probabilities = {(i, p.index): p.probability for i, predictions in enumerate(ranked) for p in predictions}
    for cam in plan.write(model, x, photos, stems, plan.pairs(ranked), out / CAM_DIR, map_size=PHOTO_LIMIT):
        images[cam.image].cams.append(CamEntry(
            cam.class_index, model.labels[cam.class_index], probabilities[(cam.image, cam.class_index)],
            _rel(cam.overlay, out), _rel(cam.heatmap, out), _rel(cam.color_map, out), _rel(cam.animation, out)))


def _add_attributions(model: Model, plan: AttributePlan, x, photos: Sequence[Image.Image], stems: Sequence[str],
                      ranked, images: list[ReportImage], out: Path) -> None:
    """The pixel attribution of each image's top class, beside its maps: ``out/attribute/...``."""
    for w in plan.write(model, x, photos, stems, plan.pairs(ranked), out / ATTRIBUTE_DIR):
        images[w.image].attribution = {"method": plan.settings.method.title, "class": w.class_index,
                                       "label": model.labels[w.class_index], "overlay": _rel(w.overlay, out),
                                       "heatmap": _rel(w.heatmap, out), "animation": _rel(w.animation, out)}


def _concepts_section(model: Model, n: int, x, photos: Sequence[Image.Image], stems: Sequence[str],
                      out: Path) -> dict[str, Any]:
    """``n`` concepts of the CAM layer shared by the images: ``out/concepts/`` and the section's data."""
    found = concepts(model, x, n)
    pictures, _ = write_concept_files(found, photos, stems, model.labels, prepare_out_dir(out / CONCEPTS_DIR),
                                      alpha=0.5)
    return {"layer": found.layer, "names": concept_names(found, model.labels),
            "pictures": [_rel(p, out) for p in pictures]}


def _add_why(model: Model, plan: ExplainPlan, explanations: Sequence[Explanation], photos: Sequence[Image.Image],
             names: Sequence[str], stems: Sequence[str], images: list[ReportImage], activations: ActivationsSection,
             dataset_examples: dict[str, Any] | None, out: Path, progress: Callable[[int], None] | None,
             class_pictures: dict[int, str] | None = None) -> None:
    """"Why this class" under each image's top-1 map: ``out/explain/<stem>_<class>.png`` and ``.json``,
    and the channels with their filter picture, their tile among the intermediate outputs and their
    dataset examples, where those exist; the class's picture (``class_pictures``: class -> path)."""
    written = plan.write(model, explanations, photos, names, stems, out, progress)
    tiles = {layer.name for layer in activations.layers}
    examples = (dataset_examples or {}).get("layers", {})
    for w in written:
        e = w.explanation
        largest = max((abs(c.contribution) for c in e.shown), default=0.0) or 1.0
        channels = [WhyChannel(kind, c.index, round(c.contribution, 4), None if c.share is None else round(c.share, 4),
                               list(c.peak), round(100 * abs(c.contribution) / largest, 1),
                               _rel(w.pictures[c.index], out) if c.index in w.pictures else None,
                               e.layer in tiles,
                               f"{dataset_examples['index']}#examples/{e.layer}/{c.index}"
                               if c.index < examples.get(e.layer, 0) else None)
                    for kind, c in e.sides()]
        images[e.image].why = WhyThisClass(e.class_index, e.label, e.layer, round(e.score, 4), round(e.total, 4),
                                           plan.filter_layer, _rel(w.figure, out), _rel(w.json, out), channels,
                                           (class_pictures or {}).get(e.class_index))


def _trust_section(model: Model, plan: EvaluatePlan, x, photos: Sequence[Image.Image], names: Sequence[str],
                   stems: Sequence[str], ranked, out: Path) -> TrustSection:
    _, written = plan.write(model, x, photos, names, stems, ranked, out / EVALUATE_DIR)
    images = []
    for w in written:
        evaluation = w.evaluation
        rows = [_trust_row(group) for group in evaluation.groups()]
        images.append(TrustImage(evaluation.name, stems[evaluation.image], evaluation.class_index, evaluation.label,
                                 _rel(w.methods, out), _rel(w.curves, out), rows,
                                 recommendation(evaluation.groups()), evaluation.notes))
    return TrustSection(plan.layer, plan.steps, images, [method_title(name) for name in plan.methods],
                        plan.sanity_seeds, SANITY_THRESHOLD)


def _trust_row(group: list) -> TrustRow:
    best = group[0]
    titles = group_title(group)
    independent = _class_independent(group)
    checked = best.sanity is not None and bool(best.sanity.spearman) and not independent
    spearman = best.sanity.spearman[0] if checked else None
    spread = best.sanity.spread[0] if checked and best.sanity.spread else None
    cascade = "" if best.sanity is None or independent else ", ".join(
        f"{stage} {value:.2f}" for stage, value in zip(best.sanity.stages, best.sanity.spearman))
    return TrustRow(titles, _r(best.deletion), _r(best.insertion), _r(best.score), _r(best.average_drop, 1),
                    _r(best.increase, 0), best.sanity.passed if checked else None, _r(spearman, 2),
                    sanity_verdict(titles, best.sanity, len(group) > 1, independent), best.empty, cascade,
                    _r(spread, 2), independent)


def _class_independent(group: list) -> bool:
    """Whether the maps of a group ignore the class by construction (Eigen-CAM, FEM, KPCA-CAM)."""
    return all(class_independent(m.method) for m in group)


def sanity_verdict(titles: str, sanity: SanityResult | None, several: bool = False,
                   class_independent: bool = False) -> str:
    """The sanity check in words: does the map depend on the classifier, i.e. on why the class was
    chosen? The correlation is the mean over the randomizations, with its spread and the threshold."""
    changes, they, does = ("change", "they show", "do") if several else ("changes", "it shows", "does")
    if class_independent:
        return (f"{titles} {does} not depend on the class by construction: {they} what the layer responds to, "
                "never why this class was chosen.")
    if sanity is None or not sanity.spearman:
        return ""
    spearman = sanity.spearman[0]
    spread = f" \u00b1 {sanity.spread[0]:.2f}" if sanity.spread else ""
    measured = (f"Spearman {spearman:.2f}{spread} over {sanity.seeds} randomization{'s' * (sanity.seeds > 1)}; "
                f"below {SANITY_THRESHOLD} passes")
    if sanity.passed:
        return (f"{titles} {changes} when the classifier is randomized ({measured}): the map follows the reason "
                "this class was chosen.")
    return (f"{titles} barely {changes} when the classifier is randomized ({measured}): {they} what the layer "
            "responds to, not why this class was chosen.")


def recommendation(groups: list[list]) -> str:
    """convscope's advice for one image: the best-ranked map that depends on the class and passed the
    sanity check; a map that ignores the class by construction is never recommended. Where no
    class-dependent map passed, it says so and names the best-ranked class-dependent map with that
    caveat."""
    dependent = [group for group in groups if not _class_independent(group) and not group[0].empty]
    trusted = [group for group in dependent if group[0].sanity is not None and group[0].sanity.passed]
    if trusted:
        return (f"convscope recommends {group_title(trusted[0])}: the best-ranked map{_score(trusted[0])} that "
                "depends on the class and passed the sanity check, so it reflects why this class was chosen.")
    if dependent:
        return (f"No class-dependent map passed the sanity check here, so none can be recommended for why this "
                f"class was chosen; the best-ranked class-dependent map is {group_title(dependent[0])}"
                f"{_score(dependent[0])}, but it shows what the layer responds to more than the reason.")
    return ("No class-dependent map is available here (every map is empty or ignores the class), so none can be "
            "recommended for why this class was chosen.")


def _score(group: list) -> str:
    return "" if group[0].score is None else f" (score {group[0].score:.3f})"


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else Path(path).relative_to(root).as_posix()
