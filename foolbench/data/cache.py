"""Where foolbench keeps data it has decoded once, so later processes read arrays instead of parsing.

`$FOOLBENCH_CACHE`, else `$XDG_CACHE_HOME/foolbench`, else `~/.cache/foolbench`. Entries are keyed by
what they were made from (a file's size and time, a package's version), written atomically, checked
when read, and made again when damaged; a read-only cache only costs the decoding time.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "FOOLBENCH_CACHE"


def cache_dir() -> Path:
    """Where decoded data sets are kept: $FOOLBENCH_CACHE, $XDG_CACHE_HOME/foolbench or ~/.cache/foolbench."""
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "foolbench"
