"""The one error type a user should ever see: a single line, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input or an unmet precondition that the user can fix (the CLI prints it and exits 2)."""


def first_line(exc: BaseException) -> str:
    """A library exception as one line for a UserError: its message's first line, or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
