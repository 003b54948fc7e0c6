"""The dataset report: ``DIR/index.html`` for a dataset run, usable at tens of thousands of images.

The summary page holds the counts, the accuracy overall and per class (when labels are known) and
the most frequent confusions; galleries -- most confident mistakes, least confident correct
answers, and one per predicted class -- are pages of at most :data:`PAGE_SIZE` thumbnails (small
JPEGs with the predicted class's map laid over, made once and reused on resume, loaded lazily);
the accuracy table links a gallery per true class; every image has a small page with its
predictions, its map and its metrics. Everything is static HTML with relative links: it works
opened from disk.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment

from ..catalog import DATASET_DIR, EXAMPLES_DIR, FILTERS_DIR
from ..clips import read_clip
from ..errors import ConvscopeError
from ..images import load_image
from ..model import Model
from ..presentation.drawing import confusion_png, thumbnail
from ..presentation.files import prepare_out_dir, safe_name, save_json, write_bytes
from ..presentation.filter_cache import cached_filter_pictures, filter_settings, layer_folder, missing_steps
from ..presentation.html import environment as html_environment
from .channel_examples import read_layer
from .shards import load, summary, write_thumbnail

PAGE_SIZE = 200
#: The most confident mistakes on the summary page; bins of each class's confidence histogram; true
#: classes in the confusion matrix picture (the most frequent).
STRIP = 12
CONFIDENCE_BINS = 10
CONFUSION_CLASSES = 40
#: Channels on one page of a layer's dataset examples.
CHANNELS_PER_PAGE = 64
CONFUSIONS = 20


#: The columns the pages show (the maps are read only to remake a missing thumbnail).
SHOWN = ("path", "error", "width", "height", "top_classes", "top_probabilities", "true_class", "correct",
         "cam_class", "drop", "deletion", "insertion", "box", "thumb")


def write_dataset_report(out: str | os.PathLike, labels: Sequence[str]) -> Path:
    """Write ``out/index.html`` and its pages for the dataset run in ``out``; returns the index.

    Costs no more than a file write per image: the thumbnails the run made are linked, not opened
    (their boxes keep the photo's aspect ratio), and a missing one is remade from its photo."""
    out = Path(out)
    folder = out / DATASET_DIR
    settings = _settings(folder)
    table = load(out)
    rows = table.select([name for name in SHOWN if name in table.column_names]).to_pylist()
    thumbs, pages = prepare_out_dir(folder, "thumbs", "pages") / "thumbs", folder / "pages"
    made = {entry.name for entry in os.scandir(thumbs)}
    environment = html_environment()
    image_page = environment.get_template("dataset_image.html.j2")
    items: dict[int, dict[str, Any]] = {}
    for index, row in enumerate(rows):
        if row["error"] is not None:
            continue
        thumb = row.get("thumb") or f"{index:06d}.jpg"  # a row's own (a detector's box); earlier runs': by row
        if thumb not in made:
            try:
                _remake_thumbnail(table.slice(index, 1).to_pylist()[0], thumbs / thumb)
            except ConvscopeError:  # the photo changed or went away since the run
                continue
        name = Path(row["path"]).name
        if row.get("box") is not None:
            name += f" (box {', '.join(f'{v:.0f}' for v in row['box'])})"
        found = bool(row["top_classes"])  # a detector's image without a box has none
        item = {"name": name, "thumb": f"../thumbs/{thumb}", "aspect": f"{row['width']} / {row['height']}",
                "page": f"image-{index:06d}.html",
                "predicted": _label(labels, row["top_classes"][0]) if found else "no box above the threshold",
                "probability": row["top_probabilities"][0] if found else 0.0,
                "true": labels[row["true_class"]] if row["true_class"] is not None else None}
        items[index] = item
        metrics = [(name_, row[name_]) for name_ in ("drop", "deletion", "insertion") if row.get(name_) is not None]
        html = image_page.render(
            name=name, path=row["path"], thumb=item["thumb"], aspect=item["aspect"],
            cam_label=_label(labels, row["cam_class"]) if row["cam_class"] is not None else "none (no box)",
            method=settings.get("method", ""),
            cam_layer=settings.get("cam_layer", ""), true=item["true"], correct=row["correct"], metrics=metrics,
            predictions=[{"index": i, "label": _label(labels, i), "probability": p}
                         for i, p in zip(row["top_classes"], row["top_probabilities"])])
        write_bytes(pages / item["page"], html.encode("utf-8"))
    galleries = {}
    for key, title, chosen in _galleries(rows, items, labels):
        if chosen:
            galleries[key] = _write_gallery(environment, pages, key, title, [items[i] for i in chosen])
    facts = summary(table)
    example_layers = _write_example_pages(environment, out, settings.get("examples") or [])
    mistakes = [i for key, _, chosen in _galleries(rows, items, labels) if key == "mistakes" for i in chosen]
    strip = [{**items[i], "thumb": f"{DATASET_DIR}/{items[i]['thumb'].removeprefix('../')}",
              "page": f"{DATASET_DIR}/pages/{items[i]['page']}"} for i in mistakes[:STRIP]]
    confusion = _write_confusion_picture(rows, labels, folder)
    index = environment.get_template("dataset_index.html.j2").render(
        model=settings.get("model", ""), images=facts["images"], errors=facts["errors"], accuracy=facts["accuracy"],
        labelled=facts["labelled"], method=settings.get("method", ""), cam_layer=settings.get("cam_layer", ""),
        strip=strip, confusion=confusion,
        per_class=_per_class(rows, labels, galleries), confusions=_confusions(rows, labels),
        galleries=[g for key, g in galleries.items() if not key.startswith("true-")], page_size=PAGE_SIZE,
        example_layers=example_layers, example_links=_example_links(example_layers))
    return write_bytes(out / "index.html", index.encode("utf-8"))


# -- the dataset examples ------------------------------------------------------------------------------------
def write_example_filters(model: Model, out: str | os.PathLike, progress: Callable[[int], None] | None = None,
                          on_total: Callable[[int], None] | None = None) -> dict[str, str]:
    """The filter picture of every channel with dataset examples, cached under ``out/filters``
    (computed once; a rerun or a resumed run reuses them); writes and returns
    ``out/examples/filters.json``: layer -> the folder of its pictures, relative to ``out``."""
    out = Path(out)
    layers = {}
    for layer in _settings(out / DATASET_DIR).get("examples") or []:
        layers[layer] = range(len(read_layer(out, layer)["channels"]))
    settings = {layer: filter_settings(model, layer) for layer in layers}  # each a forward pass: found once
    if on_total is not None:
        on_total(missing_steps(model, layers, out / FILTERS_DIR, settings))
    folders = {}
    for layer, channels in layers.items():
        cached_filter_pictures(model, layer, list(channels), out / FILTERS_DIR, settings[layer], progress=progress)
        folders[layer] = layer_folder(out / FILTERS_DIR, model, layer, settings[layer]).relative_to(out).as_posix()
    save_json(folders, out / EXAMPLES_DIR / "filters.json")
    return folders


def _write_example_pages(environment: Environment, out: Path, layers: Sequence[str]) -> list[dict]:
    """One set of pages per layer (:data:`CHANNELS_PER_PAGE` channels a page): each channel's filter
    picture (where computed), its examples and the histogram of its maxima; returns the index's rows."""
    filters_file = out / EXAMPLES_DIR / "filters.json"
    filter_folders = json.loads(filters_file.read_text(encoding="utf-8")) if filters_file.exists() else {}
    rows = []
    template = environment.get_template("dataset_examples.html.j2")
    for layer in layers:
        facts = read_layer(out, layer)
        channels = facts["channels"]
        prefix = f"examples-{safe_name(layer)}"
        total = -(-len(channels) // CHANNELS_PER_PAGE)
        names = [f"{prefix}-{number + 1:04d}.html" for number in range(total)]
        for number, name in enumerate(names):
            shown = []
            for entry in channels[number * CHANNELS_PER_PAGE:(number + 1) * CHANNELS_PER_PAGE]:
                channel = entry["channel"]
                picture = f"{filter_folders[layer]}/{channel}.png" if layer in filter_folders else None
                shown.append({**entry, "anchor": f"examples/{layer}/{channel}",
                              "grid": f"../../{facts['folder']}/{channel}.png" if entry["examples"] else None,
                              "filter": f"../../{picture}" if picture and (out / picture).exists() else None,
                              "bars": _histogram_bars(entry["histogram"])})
            html = template.render(layer=layer, facts=facts, channels=shown, page=number + 1, pages=total,
                                   previous=names[number - 1] if number else None,
                                   next=names[number + 1] if number + 1 < total else None,
                                   links=_example_links([{"layer": layer, "prefix": prefix,
                                                          "channels": len(channels)}], ""))
            write_bytes(out / DATASET_DIR / "pages" / name, html.encode("utf-8"))
        rows.append({"layer": layer, "prefix": prefix, "channels": len(channels), "dead": facts["dead"],
                     "rare": facts["rare"], "images": facts["images"], "first_page": f"{DATASET_DIR}/pages/{names[0]}"})
    return rows


def _example_links(layers: Sequence[dict], base: str = f"{DATASET_DIR}/pages/") -> str:
    """JSON for the pages' script that follows ``#examples/<layer>/<channel>`` to the channel's page."""
    return json.dumps({"base": base, "per_page": CHANNELS_PER_PAGE,
                       "layers": {row["layer"]: {"prefix": row["prefix"], "channels": row["channels"]}
                                  for row in layers}}).replace("</", "<\\/")


def _histogram_bars(histogram: dict) -> list[dict]:
    """The histogram as bars of an 100 x 24 SVG: x, width and height of each."""
    counts = histogram["counts"]
    peak = max(counts) or 1
    width = 100 / len(counts)
    return [{"x": round(i * width, 2), "width": round(width - 0.4, 2), "height": round(24 * c / peak, 2)}
            for i, c in enumerate(counts)]


def _label(labels: Sequence[str], index: int) -> str:
    """Class ``index``'s label (``class N`` past the labels: a detector's categories may be unnamed)."""
    return labels[index] if 0 <= index < len(labels) else f"class {index}"


def _remake_thumbnail(row: dict, target: Path) -> None:
    if row["cam_shape"] is not None and len(row["cam_shape"]) == 3:  # a clip's: its middle frame
        clip = read_clip(row["path"], MIDDLE_OF_THREE)
        photo = clip.frames[1]
    else:
        photo = load_image(row["path"])
    write_thumbnail(np.asarray(thumbnail(photo)), row["cam"], row["cam_shape"], target)  # (a detector's box: not
    # redrawn here, the model input's size is not known to the report)


#: Three frames evenly spaced over a clip: the second is its middle one.
MIDDLE_OF_THREE = 3


def _settings(folder: Path) -> dict[str, Any]:
    manifest = folder / "manifest.json"
    return json.loads(manifest.read_text(encoding="utf-8"))["settings"] if manifest.exists() else {}


def _galleries(rows: list[dict], items: dict[int, dict], labels: Sequence[str]) -> list[tuple[str, str, list[int]]]:
    shown = [i for i in items]
    confidence = {i: (rows[i]["top_probabilities"] or [0.0])[0] for i in shown}
    galleries = [
        ("mistakes", "Most confident mistakes",
         sorted((i for i in shown if rows[i]["correct"] is False), key=lambda i: -confidence[i])),
        ("unsure", "Least confident correct answers",
         sorted((i for i in shown if rows[i]["correct"] is True), key=lambda i: confidence[i])),
    ]
    by_class: dict[int, list[int]] = {}
    for i in shown:
        if rows[i]["top_classes"]:
            by_class.setdefault(rows[i]["top_classes"][0], []).append(i)
    for cls in sorted(by_class):
        galleries.append((f"class-{cls}", f"Predicted {_label(labels, cls)} ({cls})",
                          sorted(by_class[cls], key=lambda i: -confidence[i])))
    by_truth: dict[int, list[int]] = {}
    for i in shown:
        if rows[i]["true_class"] is not None:
            by_truth.setdefault(rows[i]["true_class"], []).append(i)
    for cls in sorted(by_truth):  # linked from the accuracy table: mistakes first, then by confidence
        galleries.append((f"true-{cls}", f"True class {labels[cls]} ({cls})",
                          sorted(by_truth[cls], key=lambda i: (rows[i]["correct"], -confidence[i]))))
    return galleries


def _write_gallery(environment: Environment, pages: Path, key: str, title: str, items: list[dict]) -> dict:
    count = len(items)
    total = -(-count // PAGE_SIZE)
    names = [f"{key}-{number + 1:04d}.html" for number in range(total)]
    for number, name in enumerate(names):
        html = environment.get_template("dataset_gallery.html.j2").render(
            title=title, page=number + 1, pages=total, count=count,
            items=items[number * PAGE_SIZE:(number + 1) * PAGE_SIZE],
            previous=names[number - 1] if number else None, next=names[number + 1] if number + 1 < total else None)
        write_bytes(pages / name, html.encode("utf-8"))
    return {"title": title, "count": count, "first_page": f"{DATASET_DIR}/pages/{names[0]}"}


def _per_class(rows: list[dict], labels: Sequence[str], galleries: dict[str, dict]) -> list[dict]:
    """Per true class: images, correct answers, accuracy, its gallery and its confidence histogram."""
    judged = [row for row in rows if row["correct"] is not None]
    totals = Counter(row["true_class"] for row in judged)
    correct = Counter(row["true_class"] for row in judged if row["correct"])
    return [{"index": c, "label": labels[c], "images": n, "correct": correct[c], "accuracy": correct[c] / n,
             "gallery": galleries[f"true-{c}"]["first_page"] if f"true-{c}" in galleries else None,
             "confidence": confidence_histogram([row for row in judged if row["true_class"] == c])}
            for c, n in sorted(totals.items())]


def confidence_histogram(rows: Sequence[dict], bins: int = CONFIDENCE_BINS) -> dict[str, Any]:
    """The top-1 probabilities of ``rows`` in ``bins`` equal bins of [0, 1], right and wrong answers
    apart: counts per bin and the bars of a 100 x 24 SVG (wrong answers stacked on right ones)."""
    right, wrong = [0] * bins, [0] * bins
    for row in rows:
        probability = (row["top_probabilities"] or [0.0])[0]
        (right if row["correct"] else wrong)[min(bins - 1, int(probability * bins))] += 1
    peak = max((r + w for r, w in zip(right, wrong)), default=0) or 1
    width = 100 / bins
    bars = []
    for i, (r, w) in enumerate(zip(right, wrong)):
        right_height, wrong_height = 24 * r / peak, 24 * w / peak
        bars.append({"x": round(i * width, 2), "width": round(width - 0.4, 2),
                     "right_y": round(24 - right_height, 2), "right": round(right_height, 2),
                     "wrong_y": round(24 - right_height - wrong_height, 2), "wrong": round(wrong_height, 2)})
    said = ", ".join(f"{i / bins:.1f}-{(i + 1) / bins:.1f}: {r} right {w} wrong"
                     for i, (r, w) in enumerate(zip(right, wrong)) if r or w)
    return {"right": right, "wrong": wrong, "bars": bars, "said": said}


def _write_confusion_picture(rows: list[dict], labels: Sequence[str], folder: Path) -> dict[str, Any] | None:
    """``confusion.png``: the :data:`CONFUSION_CLASSES` most frequent true classes against what was
    predicted for them (other predicted classes in one column); None without labels."""
    judged = [row for row in rows if row["correct"] is not None and row["top_classes"]]
    if not judged:
        return None
    classes = [c for c, _ in Counter(row["true_class"] for row in judged).most_common(CONFUSION_CLASSES)]
    position = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes) + 1), np.int64)
    for row in judged:
        if row["true_class"] in position:
            counts[position[row["true_class"]], position.get(row["top_classes"][0], len(classes))] += 1
    names = [_label(labels, c) for c in classes]
    write_bytes(folder / "confusion.png", confusion_png(counts, names, [*names, "other"]))
    return {"src": f"{DATASET_DIR}/confusion.png", "classes": len(classes), "images": int(counts.sum()),
            "diagonal": int(np.trace(counts[:, :len(classes)])),
            "total_classes": len({row["true_class"] for row in judged})}


def _confusions(rows: list[dict], labels: Sequence[str]) -> list[dict]:
    pairs = Counter((row["true_class"], row["top_classes"][0]) for row in rows if row["correct"] is False)
    return [{"true": labels[t], "predicted": labels[p], "count": n} for (t, p), n in pairs.most_common(CONFUSIONS)]


__all__ = ["write_dataset_report", "write_example_filters", "PAGE_SIZE", "CHANNELS_PER_PAGE"]
