"""The atlas's site: ``DIR/atlas/index.html``, one static page that browses every unit.

Routes are the page's fragment: ``#/`` the layers with their counts, ``#/<layer>`` a layer's units as
a grid of feature pictures (sortable by their statistics), ``#/<layer>/<unit>`` one unit (its
picture, statistics, name, dataset examples with their crops, each example linked to its page of the
dataset report). A search box finds a unit by number (in every layer) or by name (a class of the
logits, or the label-based name of a unit: the class most of its examples belong to).

The data are scripts, not JSON, so that the page works opened from disk (a browser refuses to
``fetch`` files there): ``data/index.js`` (the layers, and the named units for search) and
``data/layer-NNN.js`` per layer, loaded when the layer is opened. Pictures are files, loaded lazily.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..catalog import ATLAS_DIR, DATASET_DIR, EXAMPLES_DIR
from ..model import Model
from ..presentation.files import prepare_out_dir, write_bytes
from ..presentation.html import environment
from ..techniques.units import LOGITS, reads_class_scores
from .channel_examples import read_layer
from .shards import load

#: A unit gets a label-based name when at least this share of its examples have one true class.
NAMED_SHARE = 0.5


def unit_name(classes: Sequence[int | None], labels: Sequence[str]) -> tuple[str, int] | None:
    """The label-based name of a unit from its examples' true classes: the most frequent class and
    its count, when it holds at least :data:`NAMED_SHARE` of the examples (None otherwise, or without
    labels)."""
    known = [c for c in classes if c is not None]
    if not known:
        return None
    cls, count = Counter(known).most_common(1)[0]
    if count < NAMED_SHARE * len(classes) or count < 2 and len(classes) > 1:
        return None
    return labels[cls] if 0 <= cls < len(labels) else str(cls), count


def write_atlas_site(out: str | os.PathLike, model: Model, layers: Sequence[str]) -> Path:
    """Write ``out/atlas/index.html`` and its data for the atlas in ``out``; returns the page."""
    out = Path(out)
    folder = prepare_out_dir(out, ATLAS_DIR) / ATLAS_DIR
    (folder / "data").mkdir(exist_ok=True)
    table = load(out).select(["image", "path", "true_class"]).to_pylist()
    truth = {row["image"]: row["true_class"] for row in table}
    labelled = any(value is not None for value in truth.values())
    filters = json.loads((out / EXAMPLES_DIR / "filters.json").read_text(encoding="utf-8"))
    labels = model.class_labels
    summary, named = [], []
    for number, layer in enumerate(layers):
        units = _layer_units(out, model, layer, filters.get(layer), truth, labels)
        shape = [len(units)] if reads_class_scores(model, layer) else list(model.layer(layer).shape)
        summary.append({"name": layer, "file": f"data/layer-{number:03d}.js", "units": len(units),
                        "shape": shape, "dead": sum(u["dead"] for u in units),
                        "rare": sum(u["rare"] for u in units), "logits": layer == LOGITS})
        named += [[number, u["unit"], u["name"]] for u in units if u["name"]]
        _write_script(folder / "data" / f"layer-{number:03d}.js",
                      f"window.atlasLayerLoaded({number}, {_json({'name': layer, 'units': units})});")
    _write_script(folder / "data" / "index.js", "window.ATLAS = " + _json({
        "model": model.name, "images": len(truth), "labelled": labelled, "layers": summary, "named": named}) + ";")
    page = environment().get_template("atlas.html.j2").render(model=model.name)
    return write_bytes(folder / "index.html", page.encode("utf-8"))


def _layer_units(out: Path, model: Model, layer: str, pictures: str | None, truth: dict[int, int | None],
                 labels: Sequence[str]) -> list[dict[str, Any]]:
    """Each unit of ``layer``: statistics, name, picture and examples, with links relative to the page."""
    facts = read_layer(out, layer)
    scores = {}
    if pictures is not None and (out / f"{pictures}.json").exists():
        scores = json.loads((out / f"{pictures}.json").read_text(encoding="utf-8"))["scores"]
    logits = reads_class_scores(model, layer)
    units = []
    for channel in facts["channels"]:
        unit = channel["channel"]
        examples = channel["examples"]
        if logits:
            name = labels[unit] if unit < len(labels) else str(unit)
            named_by = None
        else:
            found = unit_name([truth.get(e["image"]) for e in examples], labels)
            name, named_by = (found[0], found[1]) if found else (None, None)
        score = scores.get(str(unit), {})
        units.append({
            "unit": unit, "name": name, "named_by": named_by, "mean": _round(channel.get("mean")),
            "fired": round(channel["fired_share"], 4), "dead": bool(channel["dead"]) or bool(score.get("dead")),
            "dead_weights": bool(score.get("dead")), "rare": bool(channel["rare"]),
            "score": _round(score.get("score")),
            "picture": f"../{pictures}/{unit}.png" if pictures else None,
            "crops": f"../{facts['folder']}/{unit}.png" if examples else None,
            "examples": [{"image": e["image"], "value": _round(e["value"]), "file": Path(e["path"]).name,
                          "true": _label_of(truth.get(e["image"]), labels),
                          "page": f"../{DATASET_DIR}/pages/image-{e['image']:06d}.html",
                          "thumb": f"../{DATASET_DIR}/thumbs/{e['image']:06d}.jpg"} for e in examples],
        })
    return units


def _label_of(cls: int | None, labels: Sequence[str]) -> str | None:
    if cls is None:
        return None
    return labels[cls] if 0 <= cls < len(labels) else str(cls)


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


def _json(data: Any) -> str:
    """Compact JSON safe inside a script file (no ``</`` to end an element if it were inlined)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")


def _write_script(path: Path, text: str) -> Path:
    return write_bytes(path, (text + "\n").encode("utf-8"))


__all__ = ["NAMED_SHARE", "unit_name", "write_atlas_site"]
