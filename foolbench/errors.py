"""The one exception type for mistakes a user can make.

The CLI prints its message on one line and exits with code 2, so every message must say what was
wrong and what to do about it.
"""


class FoolbenchError(Exception):
    """A user-caused error (bad file, bad option, bad shape) with a one-line, actionable message."""
