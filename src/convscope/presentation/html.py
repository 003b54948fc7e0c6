"""What every HTML page convscope writes shares: one Jinja environment over the templates, with
autoescaping, undefined names as errors and block tags that leave no blank lines behind.

A page's script lives beside its template as a ``.js`` file (linted by ``make test``) and is
inlined by the template with ``{{ inline_script("report.js") }}``, so the written page stays one
self-contained file. Pictures in a notebook's HTML are data URIs (:func:`data_uri_img`).
"""

from __future__ import annotations

import base64
import functools
import html

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


def data_uri_img(png: bytes, /, **attributes: object) -> str:
    """An ``<img>`` element that holds ``png`` as a base64 data URI: ``src``, then ``attributes``
    in the order given (``alt`` required), each value escaped."""
    if "alt" not in attributes:
        raise TypeError("data_uri_img() needs alt text")
    data = base64.b64encode(png).decode("ascii")
    rest = "".join(f' {name}="{html.escape(str(value))}"' for name, value in attributes.items())
    return f'<img src="data:image/png;base64,{data}"{rest}>'
