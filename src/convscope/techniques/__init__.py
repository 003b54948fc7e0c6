"""Compute: every technique, tensors in and tensors out.

:mod:`.capture` is the one capture path (the layer choice, classes, the hooked forward pass and the
backward to a layer) and :mod:`.targets` what a gradient differentiates; on them stand
:mod:`.activations` (intermediate outputs), :mod:`.filters` with :mod:`.filter_recipes` (gradient
ascent), :mod:`.cams` (class activation maps, a registry of methods), :mod:`.metrics` (faithfulness
of any map), :mod:`.evaluate` (which map to trust), :mod:`.explain` (why this class) and
:mod:`.examples` (channel maxima, top-K, receptive fields). Nothing here draws, writes a file or
imports :mod:`convscope.presentation`, :mod:`convscope.dataset` or :mod:`convscope.cli`.
"""
