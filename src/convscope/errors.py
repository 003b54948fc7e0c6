"""The error types convscope raises on purpose.

Every error a user can cause is a :class:`ConvscopeError`; its message is one line that names the
file or value and what is wrong. An error about a Python parameter carries that parameter's name in
``parameter`` and starts its message with it (``alpha must be between 0 and 1, got 2``); advice
that names other parameters writes them ``name=value`` and lists them in ``mentions``. The command
line words the same message with its flags (``--alpha must be ...``, see :meth:`worded_for`).
The command line prints that line and exits with ``exit_code``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

Options = TypeVar("Options")


class ConvscopeError(Exception):
    """Base of convscope's own errors: a one-line message and the exit code the CLI uses."""

    exit_code = 1

    def __init__(self, message: str, *, parameter: str | None = None, mentions: Sequence[str] = ()) -> None:
        if parameter is not None and not message.startswith(parameter):
            raise ValueError(f"a message about {parameter!r} must start with it: {message!r}")
        super().__init__(message)
        self.parameter = parameter
        self.mentions = tuple(mentions)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def worded_for(self, flag_for: Callable[[str], str]) -> str:
        """The message in command-line words: the leading parameter replaced by its flag
        (``flag_for(parameter)``) and each mentioned ``name=value`` by ``--flag value``."""
        message = str(self)
        if self.parameter:
            message = flag_for(self.parameter) + message[len(self.parameter):]
        for name in self.mentions:
            message = message.replace(f"{name}=", f"{flag_for(name)} ")
        return message


class InputError(ConvscopeError, ValueError):
    """Bad usage or bad input (an option, a layer name, an image, a weights file): exit code 2."""

    exit_code = 2


class ImageError(InputError):
    """An image that cannot be read: missing, not an image, truncated, too large."""


class WeightsError(InputError):
    """Weights that cannot be loaded: unsafe pickle, wrong keys or shapes, unavailable offline."""


class LayerError(InputError):
    """An unknown layer name (the message suggests the closest names), or a layer that did not run."""


class ConvscopeWarning(UserWarning):
    """Something the user should know about a result that is still produced (the CLI prints one line)."""


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


def check_options(kind: type[Options], options: Options | None, keywords: Mapping[str, Any]) -> Options:
    """``options`` (default: ``kind()``, a dataclass of options) with the fields in ``keywords``
    replaced; InputError naming a keyword that is not one of its fields."""
    names = [f.name for f in dataclasses.fields(kind)]
    for name in keywords:
        if name not in names:
            raise InputError(f"{name}: unknown option; choose from {', '.join(names)}", parameter=name)
    return dataclasses.replace(kind() if options is None else options, **keywords)
