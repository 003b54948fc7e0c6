"""The HTML report: one self-contained ``index.html`` beside the images it links to.

Relative links only, no CDN, no server and no ``fetch()``: the data the page needs is embedded as
JSON in the page itself, so it works opened from disk (``file://``), moved or zipped. All text
from outside (layer names, labels, file names) goes through Jinja2's autoescaping, and the
embedded JSON through ``tojson`` (which escapes ``<``, ``>``, ``&`` and quotes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from .output import write_bytes


def render_report(context: dict[str, Any]) -> str:
    """The report page for a run's ``context`` (see :func:`convscope.pipeline.run_all`)."""
    environment = Environment(loader=PackageLoader("convscope", "templates"), autoescape=True,
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.html.j2").render(data=context, **context)


def write_report(out: str | Path, context: dict[str, Any]) -> Path:
    """Write ``out/index.html`` atomically and return its path."""
    return write_bytes(Path(out) / "index.html", render_report(context).encode("utf-8"))
