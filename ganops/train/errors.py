# SPDX-License-Identifier: BSD-3-Clause
"""One error path for every recipe: a user's mistake ends in one ``Error:`` line, exit status 2, no traceback.

The toolkit's errors for bad input (:class:`DatasetError`, ``CheckpointError``, ``RunDirError``,
``ConfigMismatchError``) are :class:`UserError` s: click exceptions with exit status 2 and a one-line message that
names the path or flag and what to do, so any click command that raises them prints ``Error: <message>`` without a
traceback. :class:`RecipeGroup` (the recipes' ``@click.group(cls=RecipeGroup)``) also turns the few foreign
exceptions that are still the user's business into such a line: ``ganops.data``'s ``DataError`` (shown as a
:class:`DatasetError`), an ``OSError`` on a path (an ``--out`` in a missing or read-only folder), and a run that
stopped on a NaN loss or failed metrics (exit status 1: the message names the checkpoint). ``GANOPS_DEBUG=1``
prints the traceback before the line.
"""
from __future__ import annotations

import errno
import os
import re
import sys
import traceback

import click

from ..data import DataError

__all__ = ["UserError", "DatasetError", "RunStopped", "NonFiniteLossError", "MetricsError", "RecipeGroup",
           "as_click_error", "debug_enabled"]

DEBUG_ENV = "GANOPS_DEBUG"
# errno values of an OSError on a path the user chose (not a bug in the program); anything else keeps its traceback
_PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EROFS,
                errno.ENOSPC, errno.ENAMETOOLONG, getattr(errno, "EDQUOT", errno.ENOSPC)}
_WORKER = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\s*Original Traceback")


def debug_enabled() -> bool:
    """True when ``GANOPS_DEBUG`` is set to something other than ``""``/``0``: show tracebacks of user errors."""
    return os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def _one_line(message: str) -> str:
    """The message on one line. A DataLoader worker re-raises an error as 'Caught X in DataLoader worker ...' plus
    the worker's traceback: keep only the original message (the traceback's last line)."""
    message = str(message)
    if _WORKER.match(message):
        last = [ln for ln in message.splitlines() if ln.strip()][-1]
        message = re.sub(r"^[\w.]+: ", "", last.strip(), count=1)
    return " ".join(message.split()) if "\n" in message else message


class UserError(click.ClickException):
    """A mistake in the command line or its inputs. click prints ``Error: <message>`` (one line) and exits with
    status 2; the message names the path or flag and what to do about it."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class DatasetError(UserError, DataError):
    """A dataset problem that stops training; the message names the offending paths and a flag to fix it.

    The click-facing :class:`ganops.data.DataError` (so also a ``ValueError``): ``except DataError`` catches both, and
    :func:`as_click_error` shows a plain ``DataError`` from ``ganops.data`` as this (exit status 2)."""


class RunStopped(click.ClickException):
    """A run that stopped on its own (a NaN/Inf loss, failed ``--metrics``): one ``Error:`` line naming the
    checkpoint to resume from, exit status 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN/Inf; ``step`` and ``name`` say where."""

    def __init__(self, step: int, name: str, value: float, checkpoint: str | None = None) -> None:
        self.step, self.name, self.value, self.checkpoint = step, name, value, checkpoint
        super().__init__(self._msg())

    def _msg(self) -> str:
        where = (f"; last good checkpoint: {self.checkpoint}" if self.checkpoint
                 else "; no checkpoint written yet")
        return (f"loss {self.name!r} is {self.value} at step {self.step}: training stopped{where}. "
                "Lower the learning rate, use --precision fp32, or check the data.")

    def with_checkpoint(self, checkpoint: str | None) -> "NonFiniteLossError":
        self.checkpoint = checkpoint
        self.args = (self._msg(),)
        return self


class MetricsError(RuntimeError):
    """Evaluating ``--metrics`` failed during training (a checkpoint of that step was written first)."""


def as_click_error(e: BaseException) -> click.ClickException | None:
    """The one-line click error to show for ``e``, or None when ``e`` is a bug (keep its traceback).

    Click errors (``UserError`` s, ``click.UsageError``) are returned as they are; a ``ganops.data.DataError`` (an
    unknown builtin name, ...) becomes a :class:`DatasetError` with its message (exit 2); an ``OSError`` on a path
    becomes ``Error: PATH: reason`` (exit 2); ``NonFiniteLossError`` and ``MetricsError`` become :class:`RunStopped`.
    """
    if isinstance(e, click.ClickException):
        return e
    if isinstance(e, DataError):
        return DatasetError(str(e))
    if isinstance(e, (NonFiniteLossError, MetricsError)):
        return RunStopped(str(e))
    if isinstance(e, OSError) and e.filename is not None and e.errno in _PATH_ERRNOS:
        where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
        return UserError(f"{where}: {e.strerror or e}; check the path and its folder's permissions")
    return None


class RecipeGroup(click.Group):
    """``click.Group`` whose commands end a user's mistake in one ``Error:`` line (see the module docstring).

    Use as ``@click.group(cls=RecipeGroup, ...)``; subcommands and the group's own callback (the recipes'
    no-argument run) are covered, whether the group runs from ``python recipe.py`` or click's ``CliRunner``.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            err = as_click_error(e)
            if err is None:
                raise
            if debug_enabled():
                traceback.print_exception(e, file=sys.stderr)
            if err is e:
                raise
            raise err from e
