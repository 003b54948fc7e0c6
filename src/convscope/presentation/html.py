"""What every HTML page convscope writes shares: one Jinja environment over the templates, with
autoescaping, undefined names as errors and block tags that leave no blank lines behind.

A page's script lives beside its template as a ``.js`` file (linted by ``make test``) and is
inlined by the template with ``{{ inline_script("report.js") }}``, so the written page stays one
self-contained file.
"""

from __future__ import annotations

import functools

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup


@functools.cache
def environment() -> Environment:
    """The environment of every page (built once: it caches the compiled templates)."""
    env = Environment(loader=PackageLoader("convscope.presentation", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["inline_script"] = inline_script
    return env


@functools.cache
def inline_script(name: str) -> Markup:
    """The script file ``name`` of the templates folder for a ``<script>`` element: its text as is,
    less its final newline (the template puts the script on lines of its own)."""
    env = environment()
    source, filename, _ = env.loader.get_source(env, name)
    if "</script" in source.lower() or "<!--" in source:  # either would end or confuse the element
        raise ValueError(f"{filename} cannot be inlined in a <script> element: it holds '</script' or '<!--'")
    return Markup(source.removesuffix("\n"))
