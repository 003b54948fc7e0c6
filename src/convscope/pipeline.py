"""``convscope run``: predictions, intermediate outputs, filters and class activation maps for some
images, written into one folder with a browsable ``index.html`` (see :mod:`convscope.report`)."""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from PIL import Image

from .cams import METHOD_NAMES, cam_layer, compute_cam
from .featurevis import (DEFAULT_SIZE, DEFAULT_STEPS, default_filter_layers, parse_filter_spec, preactivation_path,
                         render_filters, total_steps)
from .intermediate import activations, check_memory, default_layers
from .jobs import (image_stems, report_size, write_activation_grids, write_cam_files,
                   write_filter_grids)
from .model import Model
from .output import prepare_out_dir, save_image
from .precision import resolve_precision
from .render import PICTURE_COLUMNS, PICTURE_MARGIN, grid_geometry, grid_layout
from .report import write_report

PHOTO_LIMIT = (960, 720)  # the size photos are shown at in the report
CAM_TOP = 3  # classes per image in the report
CAM_METHOD = "gradcam"
CAM_ALPHA = 0.4
NORMALIZE = "channel"
PER_ROW = 16


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("convscope", "torch", "torchvision", "numpy", "pillow", "matplotlib", "jinja2"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return versions


def run_all(model: Model, photos: Sequence[Image.Image], names: Sequence[str], out: str | Path, *,
            filters_steps: int | None = None, say: Callable[[str], None] = print,
            progress: Callable[[int], None] | None = None, on_filter_layers: Callable[[int], None] | None = None,
            filters_count: str | int | None = None) -> Path:
    """Run everything for ``photos`` and write ``out/index.html``; returns its path.

    ``say`` receives one line per stage; ``progress`` the filter steps as they are done, after
    ``on_filter_layers`` received the total number of steps.
    """
    started = time.perf_counter()
    out = prepare_out_dir(out, "activations", "filters", "cam", "images")
    stems = image_stems(names)
    x = model.preprocess(photos)
    activation_layers = default_layers(model)
    check_memory(model, activation_layers, (1, *x.shape[1:]))  # one image at a time
    filter_layers = default_filter_layers(model)
    filter_plans = [(name, parse_filter_spec(filters_count, model.layer(preactivation_path(model, name)).shape[0]))
                    for name in filter_layers]
    precision = resolve_precision("auto", model.device)

    say("[1/4] predictions")
    ranked = model.predict(x, top=min(5, len(model.labels)))
    images = []
    for stem, name, photo, preds in zip(stems, names, photos, ranked):
        shown = photo.resize(report_size(photo.width, photo.height, PHOTO_LIMIT), Image.BILINEAR)
        path = save_image(shown, out / "images" / f"{stem}.jpg", quality=90)
        images.append({"name": name, "stem": stem, "file": _rel(path, out), "width": shown.width,
                       "height": shown.height, "predictions": [p.as_json() for p in preds]})

    say(f"[2/4] intermediate outputs: {len(activation_layers)} layers x {len(names)} images")
    infos = {layer.name: layer for layer in model.layers()}
    layers: dict[str, dict] = {}
    for index, stem in enumerate(stems):
        # The first image's grids are where `convscope activations` puts them; the others in a folder each.
        folder = out / "activations" if index == 0 else prepare_out_dir(out / "activations" / stem)
        outputs = activations(model, x[index:index + 1], activation_layers)
        for grid in write_activation_grids(outputs, folder, per_row=PER_ROW, normalize=NORMALIZE):
            maps = outputs[grid.layer][0].float()
            if grid.layer not in layers:
                channels, height, width = grid.shape
                scale, separator = grid_geometry(height, width)
                layers[grid.layer] = {"name": grid.layer, "type": infos[grid.layer].type, "shape": list(grid.shape),
                                      "tile": [width * scale, height * scale], "separator": separator,
                                      "columns": grid_layout(channels, PER_ROW)[1], "files": [], "stats": []}
            stats = zip(maps.amin(dim=(1, 2)).tolist(), maps.mean(dim=(1, 2)).tolist(),
                        maps.amax(dim=(1, 2)).tolist())
            layers[grid.layer]["files"].append(_rel(grid.png, out))
            layers[grid.layer]["stats"].append([[round(a, 4), round(b, 4), round(c, 4)] for a, b, c in stats])
        del outputs

    steps = filters_steps or DEFAULT_STEPS["lucid"]
    say(f"[3/4] filters: {len(filter_plans)} layers, {sum(len(c) for _, c in filter_plans)} filters")
    if on_filter_layers is not None:
        on_filter_layers(total_steps([len(chosen) for _, chosen in filter_plans], steps))
    filter_sections = []
    for name, chosen in filter_plans:
        result = render_filters(model, name, chosen, steps=steps, size=DEFAULT_SIZE, method="lucid",
                                precision=precision, progress=progress)
        png = write_filter_grids(result, out / "filters")
        filter_sections.append({"name": name, "file": _rel(png, out), "size": result.size,
                                "margin": PICTURE_MARGIN, "columns": grid_layout(len(chosen), PICTURE_COLUMNS)[1],
                                "filters": [{"index": i, "score": round(float(s), 4)}
                                                          for i, s in zip(result.filters, result.scores.tolist())]})

    layer = cam_layer(model)
    say(f"[4/4] class activation maps ({METHOD_NAMES[CAM_METHOD]}, layer {layer})")
    pairs = [(i, p.index) for i, preds in enumerate(ranked) for p in preds[:CAM_TOP]]
    cams = write_cam_files(model, x, photos, names, pairs, out, layer=layer, method=CAM_METHOD,
                           precision="fp32", alpha=CAM_ALPHA, save_raw=False, compute=compute_cam,
                           map_size=PHOTO_LIMIT)
    probabilities = {(i, p.index): p.probability for i, preds in enumerate(ranked) for p in preds}
    for written_cam in cams:
        images[written_cam.image].setdefault("cams", []).append({
            "class": written_cam.class_index, "label": model.labels[written_cam.class_index],
            "probability": probabilities[(written_cam.image, written_cam.class_index)],
            "overlay": _rel(written_cam.overlay, out), "heatmap": _rel(written_cam.heatmap, out),
            "map": _rel(written_cam.color_map, out)})

    context = {
        "model": model.name, "weights": model.weights, "input_size": list(model.input_size),
        "images": images,
        "activations": {"images": list(names), "normalize": NORMALIZE, "per_row": PER_ROW,
                        "layers": list(layers.values())},
        "filters": {"method": "lucid", "steps": steps, "size": DEFAULT_SIZE,
                    "precision": precision, "layers": filter_sections},
        "cam": {"method": METHOD_NAMES[CAM_METHOD], "layer": layer, "alpha": CAM_ALPHA, "top": CAM_TOP},
        "seconds": round(time.perf_counter() - started, 1),
        "versions": package_versions(),
        "command": " ".join(["convscope", *sys.argv[1:]]) if sys.argv else "convscope",
    }
    return write_report(out, context)


def _rel(path: Path | None, root: Path) -> str | None:
    return None if path is None else Path(path).relative_to(root).as_posix()


