"""Presentation: tensors become pictures, files and pages.

:mod:`.drawing` turns tensors into PIL pictures (grids, colormaps, overlays, heatmaps, crops,
thumbnails) and is the one place pictures are drawn; :mod:`.files` writes atomically inside the
output folder; :mod:`.writers` draws and writes each technique's documented files; :mod:`.plans`
checks a technique's settings before work and carries it out (shared by the CLI and the report);
:mod:`.filter_cache` keeps filter pictures on disk; :mod:`.report` and :mod:`.run` build the
``convscope run`` report (its page in ``templates/``, its script in ``templates/report.js``);
:mod:`.html` holds what every page shares; :mod:`.notebook` is the public Python API whose results
display themselves in Jupyter. Compute lives in :mod:`convscope.techniques` and never imports this
package; the command line and the dataset package do.
"""
