"""What a user writes as text -- comma lists, filter specs, lists of methods and metrics -- parsed
and checked without torch, one definition each: the library checks its arguments with these, and the
command line (:mod:`convscope.cli.checks`) answers a bad value with them before it imports torch.
Errors name the Python parameter, as every convscope error does."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .catalog import FUSE_MODES, METRIC_NAMES, SAMPLED_CAM_METHODS
from .errors import InputError


def split_spec(spec: str | Sequence[str]) -> list[str]:
    """``"a,b , c"`` or ``["a", "b,c"]`` -> ``["a", "b", "c"]`` (empty parts dropped)."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    return [p.strip() for part in parts for p in part.split(",") if p.strip()]


def check_names(parameter: str, names: Sequence[str], choices: Sequence[str], choose: str = "choose from") -> None:
    """InputError naming ``parameter`` for the first of ``names`` that is not one of ``choices``."""
    for name in names:
        if name not in choices:
            raise InputError(f"{parameter}: unknown {name!r}; {choose} {', '.join(choices)}", parameter=parameter)


def parse_methods(methods: str | Sequence[str], choices: Sequence[str]) -> list[str]:
    """``all`` (every one of ``choices``) or names (comma lists allowed) -> method names, each once,
    each checked."""
    names = list(choices) if methods == "all" or list(methods) == ["all"] else split_spec(methods)
    if not names:
        raise InputError("methods: empty method list", parameter="methods")
    check_names("methods", names, choices)
    return list(dict.fromkeys(names))


def parse_metrics(names: str | Sequence[str], choices: Sequence[str] = METRIC_NAMES) -> list[str]:
    """Metric names (comma lists allowed, ``none`` for none), each once, each checked to be one of
    ``choices`` (the command line's ``--metrics`` of ``evaluate`` and ``dataset``)."""
    chosen = [] if names in ("none", ["none"]) else split_spec(names)
    check_names("metrics", chosen, choices, "choose none or from")
    return list(dict.fromkeys(chosen))


def check_metrics(names: str | Sequence[str], boxes_given: bool = False) -> list[str]:
    """The metrics of an evaluation (see :func:`parse_metrics`); ``pointing`` only where boxes are given."""
    chosen = parse_metrics(names)
    if "pointing" in chosen and not boxes_given:
        raise InputError("metrics: pointing needs boxes (or a target that knows each map's region: segmentation, "
                         "detection)", parameter="metrics")
    return chosen


def filter_spec(spec: str) -> int | list[int]:
    """A filter spec's text: a count ``"16"`` (returned as an int), or indices and ranges
    ``"0-15,32"`` (returned as indices in order, each once). Only the syntax is checked here; the
    indices against a layer's filters by :func:`convscope.techniques.filters.parse_filter_spec`."""
    text = spec.strip()
    if not text:
        raise InputError("filters: empty filter spec", parameter="filters")
    if re.fullmatch(r"-\d+", text):
        raise InputError(f"filters {text}: negative count", parameter="filters")
    if re.fullmatch(r"\d+", text):
        if int(text) < 1:
            raise InputError(f"filters {text}: the count must be at least 1", parameter="filters")
        return int(text)
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise InputError(f"filters {spec!r}: {part!r} is not an index or a range like 0-15 "
                             "(indices are 0 or more)", parameter="filters")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise InputError(f"filters {spec!r}: empty range {part!r}", parameter="filters")
        indices.extend(i for i in range(first, last + 1) if i not in indices)
    return indices


def check_fuse(fuse: str | None, layers: int) -> None:
    """``fuse`` is one of :data:`~convscope.catalog.FUSE_MODES` and there are layers to fuse."""
    if fuse is None:
        return
    check_names("fuse", [fuse], FUSE_MODES)
    if layers < 2:
        raise InputError(f"fuse {fuse}: one layer has nothing to fuse with; give several layers "
                         "(--layer A --layer B)", parameter="fuse")


def check_samples(method: str, samples: int | None) -> None:
    """``samples`` is given only to a method that draws copies (:data:`~convscope.catalog.SAMPLED_CAM_METHODS`),
    and is at least 1."""
    if samples is None:
        return
    if method not in SAMPLED_CAM_METHODS:
        raise InputError(f"samples: {method} draws no samples (the sampled methods: "
                         f"{', '.join(SAMPLED_CAM_METHODS)})", parameter="samples")
    if samples < 1:
        raise InputError(f"samples: must be at least 1, got {samples}", parameter="samples")


def parse_box(text: str) -> list[float] | None:
    """``x0,y0,x1,y1`` as four numbers (None when ``text`` is not four comma-separated numbers)."""
    try:
        box = [float(part) for part in text.split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None
