"""The one exception type for mistakes a user can make.

The CLI prints its message on one line and exits with code 2, so every message must say what was
wrong and what to do about it.
"""


def one_line(text: str) -> str:
    """Escape newlines and other control characters (which user input may carry) so the text stays on
    one line and cannot forge terminal output."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FoolbenchError(Exception):
    """A user-caused error (bad file, bad option, bad shape) with a one-line, actionable message."""

    def __init__(self, message: str):
        super().__init__(one_line(str(message)))
