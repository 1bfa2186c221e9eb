"""The one error type a user should ever see: a single line, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input or an unmet precondition that the user can fix (the CLI prints it and exits 2)."""


def first_line(exc: BaseException) -> str:
    """A library exception as one line for a UserError: its message's first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require(value, kinds: type | tuple[type, ...], what: str):
    """`value` if it is of `kinds`: the API's arguments are refused in one line, as flags are."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
        raise UserError(f"{what} must be a {names}, not {type(value).__name__} {value!r:.60}")
    return value


def as_path(value, what: str):
    """A path the API was given as a str or a Path, as a Path."""
    from os import PathLike
    from pathlib import Path

    return Path(require(value, (str, PathLike), what))


def says_disk_full(exc: BaseException) -> bool:
    """Whether `exc` reports a full disk: an OSError with ENOSPC, or a library's own error type (safetensors')
    that carries it only in words."""
    import errno
    import os

    return getattr(exc, "errno", None) == errno.ENOSPC or os.strerror(errno.ENOSPC) in str(exc)
