"""The error types convscope raises on purpose.

Every error a user can cause is a :class:`ConvscopeError`; its message is one line that names the
file or value and what is wrong. An error about a Python parameter carries that parameter's name in
``parameter`` and starts its message with it (``alpha must be between 0 and 1, got 2``), so the
command line can word it with the flag instead (``--alpha must be ...``, see :meth:`worded_for`).
The command line prints that line and exits with ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Collection


class ConvscopeError(Exception):
    """Base of convscope's own errors: a one-line message and the exit code the CLI uses."""

    exit_code = 1

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        if parameter is not None and not message.startswith(parameter):
            raise ValueError(f"a message about {parameter!r} must start with it: {message!r}")
        super().__init__(message)
        self.parameter = parameter

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def worded_for(self, flag: str) -> str:
        """The message with the leading parameter name replaced by ``flag`` (as is without a parameter)."""
        message = str(self)
        return flag + message[len(self.parameter):] if self.parameter else message


class InputError(ConvscopeError, ValueError):
    """Bad usage or bad input (an option, a layer name, an image, a weights file): exit code 2."""

    exit_code = 2


class ImageError(InputError):
    """An image that cannot be read: missing, not an image, truncated, too large."""


class WeightsError(InputError):
    """Weights that cannot be loaded: unsafe pickle, wrong keys or shapes, unavailable offline."""


class LayerError(InputError):
    """An unknown layer name (the message suggests the closest names), or a layer that did not run."""


def check_choice(parameter: str, value: object, choices: Collection[object], what: str = "") -> None:
    """InputError naming ``parameter`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        kind = f" {what}" if what else ""
        raise InputError(f"{parameter}: unknown{kind} {value!r}; choose from {', '.join(map(str, choices))}",
                         parameter=parameter)


def check_at_least(parameter: str, value: float, low: float) -> None:
    """InputError naming ``parameter`` unless ``value >= low``."""
    if value < low:
        raise InputError(f"{parameter} must be at least {low}, got {value}", parameter=parameter)


def check_between(parameter: str, value: float, low: float, high: float, unit: str = "") -> None:
    """InputError naming ``parameter`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise InputError(f"{parameter} must be between {low} and {high}{unit}, got {value}", parameter=parameter)
