"""How foolbench writes things for people and for file systems.

`percent` is how every confidence is shown (rounded down, so 99.995% never reads as 100.00%);
`safe_name` is how a label or model name enters a file name (labels are data, never paths).
"""

from __future__ import annotations

import math
import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def percent(confidence: float) -> str:
    """Confidence as a percentage rounded down, so 99.995% never shows as 100.00%; "–" where there is none."""
    if confidence is None or not math.isfinite(confidence):
        return "–"
    return f"{math.floor(confidence * 10000) / 100:.2f}%"


def safe_name(label: str, limit: int = 40) -> str:
    """A label made fit for a file name: no path characters, no spaces, bounded length."""
    name = _UNSAFE.sub("_", label).strip("._")[:limit]
    return name or "class"
