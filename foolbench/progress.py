"""Progress output that fits where it goes.

On a terminal: a tqdm bar. tqdm decides (`disable=None` turns the bar off when stderr is not a
terminal), so nothing here tests for a TTY. Anywhere else (a log file, a pipe, CI) the bar stays
silent and each phase ends with one plain line instead, so `foolbench run > log.txt 2>&1` leaves a
log a person can read rather than thousands of carriage-return updates.
"""

from __future__ import annotations

import sys


class Progress:
    """A bar over `total` steps of `unit` that can be moved to a position and closed with a summary."""

    def __init__(self, total: int | None, initial: int = 0, unit: str = "it", enabled: bool = True):
        from tqdm.auto import tqdm

        self.unit = unit
        self.position = initial
        self.enabled = enabled
        self.bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            dynamic_ncols=True,
            file=sys.stderr,
            disable=None if enabled else True,
        )
        # where progress is wanted but tqdm found no terminal to draw on (read now: close() sets disable)
        self.plain = enabled and bool(self.bar.disable)

    def advance_to(self, position: int, status: str = "") -> None:
        """Move the bar to `position` (steps done so far) and show `status` beside it."""
        self.bar.update(position - self.position)
        self.position = position
        if status and not self.bar.disable:
            self.bar.set_postfix_str(status, refresh=False)

    def close(self, summary: str = "") -> None:
        """End the phase: the bar closes on a terminal; elsewhere `summary` is printed as one line."""
        self.bar.close()
        if self.plain and summary:
            print(summary, file=sys.stderr, flush=True)
