"""The HTML report: one self-contained ``index.html`` beside the images it links to.

The page is filled from a :class:`Report`, a typed description of a run (see
:func:`convscope.presentation.run.run_all`), whose :meth:`Report.as_json` form is also embedded in the page for
its script. Relative links only, no CDN, no server and no ``fetch()``: the page works opened from
disk (``file://``), moved or zipped. All text from outside (layer names, labels, file names) goes
through Jinja2's autoescaping, and the embedded JSON through ``tojson`` (which escapes ``<``,
``>``, ``&`` and quotes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model import Prediction
from .files import write_bytes
from .html import environment


def _json(value: Any) -> Any:
    """Dataclasses -> dicts (a field's ``metadata["json"]`` renames its key), recursively."""
    if dataclasses.is_dataclass(value):
        return {f.metadata.get("json", f.name): _json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    return value


@dataclass
class CamEntry:
    """One class's map for an image: the class, its probability and the files (relative paths)."""

    class_index: int = field(metadata={"json": "class"})
    label: str
    probability: float
    overlay: str
    heatmap: str
    map: str | None
    #: A clip's overlay of every frame (animated WebP), or None for an image.
    animation: str | None = None


@dataclass
class WhyChannel:
    """One channel of "Why this class": ``kind`` (``for`` or ``against``), index, contribution, share
    of the total, peak (row, column), its bar's length in % of the largest shown, its filter
    picture (a path, or None), whether the intermediate outputs show its tile, and the link to its
    dataset examples (or None)."""

    kind: str
    index: int
    contribution: float
    share: float | None
    peak: list[int]
    bar: float
    picture: str | None
    tile: bool
    examples: str | None


@dataclass
class WhyThisClass:
    """The channels of ``layer`` behind an image's top class: score, total contribution, the conv
    whose filter pictures show them, the figure and the JSON (paths), the channels and the class's
    picture."""

    class_index: int = field(metadata={"json": "class"})
    label: str = ""
    layer: str = ""
    score: float = 0.0
    total: float = 0.0
    filter_layer: str | None = None
    figure: str = ""
    json: str = ""
    channels: list[WhyChannel] = field(default_factory=list)
    #: The class picture of the class (what its logit responds to most; a path), or None.
    class_picture: str | None = None


@dataclass
class ReportImage:
    """One input photo: its name, file stem, the photo at report size, predictions, maps and "Why this class"."""

    name: str
    stem: str
    file: str
    width: int
    height: int
    predictions: list[Prediction]
    cams: list[CamEntry] = field(default_factory=list)
    why: WhyThisClass | None = None
    #: The pixel attribution of the top-1 class: {"method", "class", "label", "overlay", "heatmap",
    #: "animation"} (files relative to the report; "animation" a clip's, else None), or None.
    attribution: dict[str, Any] | None = None
    #: A clip's frames shown (the strip ``file`` shows them side by side; ``width`` x ``height`` is one
    #: frame's size and ``animation`` the clip as an animated WebP); 0 and None for a photo.
    frames: int = 0
    animation: str | None = None


@dataclass
class ActivationLayer:
    """One layer's grids: shape C x H x W (a video network's C x T x H x W), tile size on the grid
    [w, h], separator and columns, one grid file per image (a video network's first frame's) and per
    image and channel [min, mean, max]; a video network's grid of each frame per image in ``frames``."""

    name: str
    type: str
    shape: list[int]
    tile: list[int]
    separator: int
    columns: int
    files: list[str] = field(default_factory=list)
    stats: list[list[list[float]]] = field(default_factory=list)
    frames: list[list[str]] = field(default_factory=list)


@dataclass
class ActivationsSection:
    images: list[str]
    normalize: str
    per_row: int
    layers: list[ActivationLayer]


@dataclass
class FilterScore:
    """One filter: its index, score, the objective its picture maximizes, and why it is marked ("" if not)."""

    index: int
    score: float
    objective: str = "mean"
    status: str = ""
    #: A class picture's class label ("" for a channel).
    label: str = ""


@dataclass
class FilterLayer:
    """One layer's filter grid (``logits``: class pictures): picture size, margin, columns, rows, each
    filter's index and score, how many pictures were redrawn with the centre-unit objective, not
    reached or dead (all weights zero), and a first layer's kernels as RGB patches (a grid in the
    same places, or "")."""

    name: str
    file: str
    size: int
    margin: int
    columns: int
    rows: int
    filters: list[FilterScore]
    redrawn: int = 0
    not_reached: int = 0
    dead: int = 0
    kernels: str = ""


@dataclass
class FiltersSection:
    method: str
    steps: int
    size: int
    precision: str
    layers: list[FilterLayer]
    objective: str = "mean"


@dataclass
class CamSection:
    method: str
    layer: str
    alpha: float
    top: int


@dataclass
class TrustRow:
    """One group of identical maps: its methods, metrics and the sanity verdict in words."""

    methods: str
    deletion: float | None
    insertion: float | None
    score: float | None
    average_drop: float | None
    increase: float | None
    sanity_passed: bool | None
    spearman: float | None
    verdict: str
    empty: bool
    cascade: str = ""
    spread: float | None = None
    class_independent: bool = False


@dataclass
class TrustImage:
    """"Which map to trust" for one image's top class: the ranked rows, the pictures, the advice."""

    name: str
    stem: str
    class_index: int = field(metadata={"json": "class"})
    label: str = ""
    methods_file: str = ""
    curves_file: str = ""
    rows: list[TrustRow] = field(default_factory=list)
    recommendation: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class TrustSection:
    """Which map to trust: the layer, the deletion/insertion steps, each image's ranking, the methods
    ranked (titles) and the sanity check's randomizations and threshold."""

    layer: str
    steps: int
    images: list[TrustImage]
    methods: list[str] = field(default_factory=list)
    sanity_seeds: int = 1
    sanity_threshold: float = 0.5


@dataclass
class Report:
    """Everything the page shows. ``command`` is the command line that made it (None from Python)."""

    model: str
    weights: str
    input_size: list[int]
    images: list[ReportImage]
    activations: ActivationsSection
    filters: FiltersSection
    cam: CamSection
    trust: TrustSection | None
    seconds: float
    versions: dict[str, str]
    command: str | None
    #: A dataset run with examples: ``{"index": its index.html relative to the report, "layers":
    #: {layer: channels}}``; the filter viewer links each filter of those layers to its examples.
    dataset_examples: dict[str, Any] | None = None
    #: Seconds per section (planning, predictions, ..., the page), in the order they ran.
    timings: dict[str, float] = field(default_factory=dict)
    #: Concepts when asked: {"layer", "names": [each concept's name], "pictures": [one per image, relative]}.
    concepts: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """Plain data (the form embedded in the page)."""
        return _json(self)


def report_html(report: Report) -> str:
    """Fill the page template with ``report``."""
    data = report.as_json()
    return environment().get_template("report.html.j2").render(data=data, **data)


def write_report(out: str | Path, report: Report) -> Path:
    """Write ``out/index.html`` atomically and return its path."""
    return write_bytes(Path(out) / "index.html", report_html(report).encode("utf-8"))
