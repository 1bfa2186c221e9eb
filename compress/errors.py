"""The one error type a user should ever see: a single line, exit code 2, no traceback."""


class UserError(Exception):
    """Bad input or an unmet precondition that the user can fix (the CLI prints it and exits 2)."""
