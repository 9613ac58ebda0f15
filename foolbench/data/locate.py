"""Where labelled real images live: a folder the user names, or one named in $FOOLBENCH_DATA.

foolbench never downloads data in tests and never ships data sets. A user points at their copy once,
either per command (`--data DIR`) or for every command (`export FOOLBENCH_DATA=DIR`, a folder holding
data sets by name):

    $FOOLBENCH_DATA/
        cifar10/            CIFAR-10 (torchvision's cifar-10-batches-py, or ImageFolder train/ and test/)
        imagenet-sample/    labelled ImageNet photos, ImageFolder by class index or label

`locate` answers "where is data set NAME?" in one place, so every command finds the same copy and a
missing one gets the same one-line error, naming what was looked for and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

from foolbench.errors import FoolbenchError

DATA_ENV = "FOOLBENCH_DATA"


def data_home() -> Path | None:
    """$FOOLBENCH_DATA as a path, or None when it is unset or empty."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def candidates(name: str, aliases: tuple[str, ...] = ()) -> list[Path]:
    """The paths under $FOOLBENCH_DATA that may hold data set `name` (or one of its other names)."""
    home = data_home()
    return [home / n for n in (name, *aliases)] if home is not None else []


def locate(name: str, given: str | Path | None = None, aliases: tuple[str, ...] = (), what: str = "") -> Path:
    """The folder (or file) holding data set `name`: `given` if the user named one, else the first of
    $FOOLBENCH_DATA/<name or alias> that exists. Raises a one-line error saying where to put it."""
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise FoolbenchError(
                f"--data {given}: no such file or folder; pass the folder holding {what or name}"
            )
        return path
    found = [p for p in candidates(name, aliases) if p.exists()]
    if found:
        return found[0]
    where = (
        f"${DATA_ENV} ({data_home()}) has no {name}/"
        if data_home() is not None
        else f"${DATA_ENV} is not set"
    )
    raise FoolbenchError(
        f"{what or name} not found: {where}; pass --data DIR, or put it at $FOOLBENCH_DATA/{name}/ "
        f"and export {DATA_ENV}=that folder"
    )
