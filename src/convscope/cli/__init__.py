"""The command line: what the user types, parsed and answered.

:mod:`.main` is the entry point (``convscope``: errors as one line, warnings, exit codes),
:mod:`.parser` builds the argparse parser from :mod:`convscope.catalog` without importing torch,
:mod:`.commands` holds one ``cmd_<name>`` function per command (imported when a command runs) and
their printing. Nothing here computes or draws: commands go through the plans of
:mod:`convscope.presentation.plans` and the dataset runner. Nothing else imports this package.
"""
