"""The package's own errors, at the bottom of its layers, and how its command lines show them.

Every error the package can name derives from :class:`O3FError`: a config it cannot run
(:class:`ConfigError`), an unknown task or algorithm, a dataset or checkpoint that is missing or
damaged, a device that is not there, non-finite training, a full disk. Its message is one line
naming the key or file, the value and the fix. The recipes, the sweep and the command lines
print that line alone on stderr and exit with status 1 (:func:`reported`, :func:`run_cli`);
``HYDRA_FULL_ERROR=1`` (the recipes) or ``--debug`` (``python -m torchrl_o3f``,
``python -m torchrl_o3f.data``) show the traceback as well.

Every layer may import this module; it imports nothing of the package.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "renamed",
    "EXIT_ERROR",
    "ConfigError",
    "O3FError",
    "StrictFields",
    "UnknownKeyError",
    "debug_requested",
    "one_line",
    "reported",
    "run_cli",
]

EXIT_ERROR = 1
"""Exit status of a command stopped by one of the package's errors."""


class O3FError(Exception):
    """An error the package names: its message says what is wrong, where, and how to fix it.

    The package's specific errors derive from it and from the built-in error they have always
    been (``ConfigError`` is a ``ValueError``, ``UnknownTaskError`` a ``KeyError``, ...).
    """


class ConfigError(O3FError, ValueError):
    """A configuration that cannot run; raised before any training starts."""


class UnknownKeyError(ConfigError, AttributeError):
    """A key a config does not have (a misspelt field), set through the Python API."""


def _close_matches(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class StrictFields:
    """Mixin of the package's config dataclasses: setting a field they do not have is an error.

    ``cfg.algo.num_cell = 64`` (a typo of ``num_cells``) raises :class:`UnknownKeyError`
    naming the closest field, as the command line refuses ``algo.num_cell=64``, instead of
    adding an attribute nothing reads.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Budget(StrictFields):
        ...     offline_steps: int = 10
        >>> budget = Budget()
        >>> budget.offline_steps = 20
        >>> budget.ofline_steps = 20
        Traceback (most recent call last):
        ...
        torchrl_o3f.errors.UnknownKeyError: Budget has no field 'ofline_steps'; did you mean ...
    """

    def __setattr__(self, name: str, value: Any) -> None:
        known = getattr(type(self), "__dataclass_fields__", None)
        if known is not None and name not in known and not name.startswith("__"):
            names = list(known)
            raise UnknownKeyError(
                f"{type(self).__name__} has no field {name!r}; {_close_matches(name, names)}"
                f"(its fields: {', '.join(names)})"
            )
        super().__setattr__(name, value)


def one_line(err: BaseException) -> str:
    r"""The message of ``err`` on one line (line breaks become spaces).

    Example:
        >>> one_line(ConfigError("budget.offline_steps must be an int >= 0,\ngot -5"))
        'budget.offline_steps must be an int >= 0, got -5'
    """
    text = str(err)
    if isinstance(err, KeyError) and text.startswith(("'", '"')) and len(err.args) == 1:
        text = str(err.args[0])  # KeyError quotes its message
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def debug_requested() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1`` in the environment)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def reported(*, debug: bool | None = None) -> Iterator[None]:
    r"""Turn the package's errors raised in the block into ``error: <message>`` and exit 1.

    Args:
        debug: re-raise instead, with the traceback (``None``: :func:`debug_requested`).

    Raises:
        SystemExit: with :data:`EXIT_ERROR`, after printing the message alone on stderr, for
            an :class:`O3FError`. Other exceptions (bugs) pass through with their traceback.

    Example:
        >>> import contextlib, io
        >>> err = io.StringIO()
        >>> with contextlib.redirect_stderr(err):
        ...     try:
        ...         with reported(debug=False):
        ...             raise ConfigError("seed must be a non-negative integer, got -1")
        ...     except SystemExit as stop:
        ...         print(stop.code)
        1
        >>> err.getvalue()
        'error: seed must be a non-negative integer, got -1\n'
    """
    try:
        yield
    except O3FError as err:
        if debug_requested() if debug is None else debug:
            raise
        _print(err)
        raise SystemExit(EXIT_ERROR) from None


def _print(err: BaseException) -> None:
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)


def run_cli(
    run: Callable[[list[str]], int],
    argv: list[str] | None = None,
    *,
    also: tuple[type[BaseException], ...] = (),
) -> int:
    """Run a command line's ``run(argv)``; its errors become ``error: <message>`` and status 1.

    Args:
        run: the command line's body, returning its exit status.
        argv: its arguments (``None``: ``sys.argv[1:]``); ``--debug`` among them (or
            ``HYDRA_FULL_ERROR=1``) re-raises the error with its traceback.
        also: other exception types shown the same way (e.g. ``FileExistsError``).

    Returns:
        ``run``'s status, or :data:`EXIT_ERROR` after printing the message on stderr.

    Example:
        >>> def body(argv):
        ...     raise ConfigError("--size -5: give a size >= 1")
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()):
        ...     run_cli(body, [])
        1
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run(argv)
    except (O3FError, *also) as err:
        if "--debug" in argv or debug_requested():
            raise
        _print(err)
        return EXIT_ERROR


def renamed(old: str, new: str, obj: Any) -> Any:
    """``obj`` under its old public name, with a ``DeprecationWarning`` naming the new one.

    For a module's ``__getattr__``, so that a renamed function keeps working for a while.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     f = renamed("pkg.old", "pkg.new", len)
        >>> f is len, str(seen[0].message)
        (True, 'pkg.old is now pkg.new')
    """
    warnings.warn(f"{old} is now {new}", DeprecationWarning, stacklevel=3)
    return obj
