"""The ``convscope`` command line.

Every command shares ``--device`` and ``--debug``, the model commands ``--model`` and ``--weights``.
Errors convscope raises on purpose print one line on stderr and exit with 2 (bad usage or input) or
1 (failure while running); ``--debug`` shows the traceback. An error about a Python parameter is
worded with the command's flag (``alpha`` -> ``--alpha``). Images may be files or ``sample:NAME``
for the photos that ship with installed packages (``sample:chelsea``, ``sample:coffee``,
``sample:grace_hopper``). Choices and defaults come from :mod:`convscope.catalog`.

This module imports neither torch nor the library's compute: ``--help``, ``--version``, usage
errors and the checks that need no model (:mod:`convscope.cli.checks`: ``--alpha 7``, ``--workers -1``,
``sample:nope`` ...) answer at once (see ``benchmarks/cli_startup.py``); a command's function, in
:mod:`convscope.cli.commands`, is imported when the command runs. Warnings from other libraries are
hidden unless ``--debug``; convscope's own are one line. The parser is in :mod:`convscope.cli.parser`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from ..allocator import keep_freed_memory
from ..errors import ConvscopeError, ConvscopeWarning
from . import parser as cli_parser
from .checks import check_args

#: Python parameters whose flag is not ``--`` + the name with dashes.
FLAG_NAMES = {"classes": "--class", "source": "SOURCE"}
#: Per command, parameters whose flag differs there (``run`` and ``dataset`` name the CAM's method
#: and layer ``--cam-*``; ``run``'s filter pictures take ``--filters-steps``).
COMMAND_FLAG_NAMES = {"dataset": {"layer": "--cam-layer", "method": "--cam-method"},
                      "run": {"method": "--cam-method", "steps": "--filters-steps"}}
#: Every command, each run by ``convscope.cli.commands.cmd_<name>``.
COMMANDS = ("layers", "predict", "activations", "filters", "run", "demo", "cam", "attribute", "concepts", "evaluate",
            "explain", "dataset", "atlas")


def flag_for(parameter: str, command: str | None = None) -> str:
    """The command-line flag of a library parameter: ``per_row`` -> ``--per-row``."""
    special = COMMAND_FLAG_NAMES.get(command or "", {})
    return special.get(parameter) or FLAG_NAMES.get(parameter, "--" + parameter.replace("_", "-"))


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function of command ``name``, imported (with torch) only when the command runs."""
    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(".commands", __package__), f"cmd_{name}")(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    """The ``convscope`` parser (see :mod:`convscope.cli.parser`)."""
    return cli_parser.build_parser({name: _command(name) for name in COMMANDS})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors (already printed)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = argv
    keep_freed_memory()  # forward passes 2x faster on glibc (see convscope.allocator)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            if not args.debug:  # other libraries' warnings are noise here; convscope's own are one line
                warnings.simplefilter("ignore")
            warnings.simplefilter("always", ConvscopeWarning)
            check_args(args)  # what needs no model, before the command imports torch
            return args.handler(args)
    except ConvscopeError as exc:
        if args.debug:
            traceback.print_exc()
        message = exc.worded_for(lambda parameter: flag_for(parameter, args.command))
        print(f"convscope: error: {_one_line(message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, no traceback
        if args.debug:
            traceback.print_exc()
        print(f"convscope: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _print_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    print(f"convscope: warning: {_one_line(str(message))}", file=sys.stderr)


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


if __name__ == "__main__":
    sys.exit(main())
