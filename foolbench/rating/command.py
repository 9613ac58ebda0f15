"""`foolbench rate`: what each of its modes does, for the command line to call.

serve      the page on 127.0.0.1 until Ctrl-C, answers into ratings.csv as they come
static     one self-contained HTML page that keeps answers in the browser and downloads a CSV
import     that CSV back into ratings.csv
summary    what the ratings say (`summary.py`)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from foolbench.rating.deck import build_deck
from foolbench.rating.store import Store, import_csv
from foolbench.rating.summary import summarise_dirs


def where(store: Store) -> str:
    files = store.files()
    return str(files[0]) if len(files) == 1 else f"ratings.csv in each of the {len(files)} runs"


def serve(
    run_dirs,
    out=None,
    data=None,
    controls=1,
    seed=0,
    port=0,
    say: Callable[[str], None] = print,
    started=None,
) -> int:
    """Serve the rating page until interrupted (Ctrl-C, or `shutdown()` on the server handed to
    `started`); returns how many answers this session saved."""
    from foolbench.rating.server import RatingServer

    deck = build_deck(run_dirs, data, controls, seed)
    store = Store(deck.runs, out)
    store.read()  # a ratings file of another run stops here, before anything is served
    server = RatingServer(deck, store, port)
    before = len(store.read())
    say(f"Rating {deck.describe()}; answers go to {where(store)}.")
    say(
        f"Open this address in a browser on this machine (Ctrl-C stops; answers are saved as they come):\n{server.url}"
    )
    if started is not None:
        started(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    saved = len(store.read()) - before
    say(f"{saved} answers saved in this session.")
    return saved


def static(run_dirs, html: Path, data=None, controls=1, seed=0) -> tuple[Path, str]:
    from foolbench.rating.page import write_static

    deck = build_deck(run_dirs, data, controls, seed)
    return write_static(deck, html), deck.describe()


def import_(run_dirs, csv: Path, out=None, data=None, controls=1, seed=0) -> tuple[int, int, Store]:
    deck = build_deck(run_dirs, data, controls, seed)
    store = Store(deck.runs, out)
    store.read()
    written, already = import_csv(deck, store, csv)
    return written, already, store


def summary(run_dirs, out=None) -> str:
    return summarise_dirs(run_dirs, out).text()
