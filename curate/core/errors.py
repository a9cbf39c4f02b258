"""The exceptions a user can act on. The CLI prints these as one line (exit 2); anything else is a bug
and shows its traceback."""

from __future__ import annotations


class CurateError(Exception):
    """A problem the user can act on: a wrong argument, a missing file, a bad rules file, a busy workspace."""


class UserError(CurateError, ValueError):
    """A wrong value given by the user (an argument, a setting, an input file)."""


class NotFound(UserError, KeyError):
    """Something named by the user does not exist (a document, a rule, a manifest)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(UserError):
    """A rules or configuration file that cannot be used; the message names the file and the key."""


class MissingDependency(CurateError, ImportError):
    """An enabled stage or feature needs a package that is not installed; the message says what to install."""


class DiskFull(CurateError):
    """The disk holding the workspace (or an output) is full: what was not committed was rolled back."""


def disk_full(e: BaseException) -> DiskFull | None:
    """A DiskFull for an error that says the device is full (OSError ENOSPC, or DuckDB's I/O errors, which carry
    the OS's words), else None."""
    import errno

    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e):
        where = next((w for w in str(e).split('"') if "/" in w), "")
        return DiskFull(f"no space left on the device{f' writing {where}' if where else ''}: free space and run "
                        "the command again (nothing after the last commit was kept; the workspace still opens)")
    return None
