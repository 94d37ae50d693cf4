"""Ending a management command whose output already explained the failure.

Django prints ``CommandError: <message>`` for every ``CommandError`` that ends a command run
from the command line. A command that has already printed the cause and the fix (``gmail_check``,
the example project's ``send_demo``) raises :class:`ReportedError` instead: from the command
line it exits with the status and prints nothing more; through ``call_command()`` it is an
ordinary ``CommandError`` carrying the message and the status.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

__all__ = ["ReportedError", "ReportingCommand"]


class ReportedError(CommandError):
    """The command failed and its output has already said why (the message repeats it in one line)."""


class ReportingCommand(BaseCommand):
    """A command whose :class:`ReportedError` ends a command-line run without a second message."""

    _from_command_line = False

    def run_from_argv(self, argv: list[str]) -> None:
        self._from_command_line = True
        super().run_from_argv(argv)

    def execute(self, *args: Any, **options: Any) -> Any:
        try:
            return super().execute(*args, **options)
        except ReportedError as error:
            if not self._from_command_line or options.get("traceback"):
                raise
            sys.exit(error.returncode)
