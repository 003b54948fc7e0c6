"""The error types convscope raises on purpose.

Every error a user can cause is a :class:`ConvscopeError`; its message is one line that names the
file or value and what is wrong. The command line prints that line and exits with ``exit_code``.
"""

from __future__ import annotations


class ConvscopeError(Exception):
    """Base of convscope's own errors: a one-line message and the exit code the CLI uses."""

    exit_code = 1


class InputError(ConvscopeError, ValueError):
    """Bad usage or bad input (an option, a layer name, an image, a weights file): exit code 2."""

    exit_code = 2


class ImageError(InputError):
    """An image that cannot be read: missing, not an image, truncated, too large."""


class WeightsError(InputError):
    """Weights that cannot be loaded: unsafe pickle, wrong keys or shapes, unavailable offline."""


class LayerError(InputError, KeyError):
    """An unknown layer name; the message suggests the closest names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RunError(ConvscopeError):
    """A failure while running (not the user's input): exit code 1."""

    exit_code = 1
