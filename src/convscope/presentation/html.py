"""What every HTML page convscope writes shares: one Jinja environment over the templates, with
autoescaping, undefined names as errors and block tags that leave no blank lines behind.
"""

from __future__ import annotations

import functools

from jinja2 import Environment, PackageLoader, StrictUndefined


@functools.cache
def environment() -> Environment:
    """The environment of every page (built once: it caches the compiled templates)."""
    return Environment(loader=PackageLoader("convscope.presentation", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

