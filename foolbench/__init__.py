"""foolbench: how easily is an image classifier fooled? (Nguyen, Yosinski & Clune, CVPR 2015).

The shape of the package. Each concept has one owner module, and imports run downward only: a
module imports its own layer or lower ones, never a higher one, and no imports go round in a
circle (tests/test_layers.py reads every import and holds the package to this list).

Layers, lowest first:
  1. errors, fileio, text, options, images, progress
                                              one-line errors, atomic files, how things are written
                                              for people, option rules, the 8-bit image, progress
  2. data, models, encodings, lookalike, judges
                                              datasets (labelled real images by name: data.labelled),
                                              the sealed model adapter, genomes -> images, does a
                                              champion look like a real image of its class, and the
                                              judges that mark champions recognised
  3. search                                   engines (ask/tell), the one evaluator, the class archive
  4. presets, protocol                        attack presets and scoring protocols, checked
  5. zoo                                      builders of the reference models
  6. resolve                                  what a user types as a model -> an adapter (zoo names)
  7. rundir                                   the run directory: files, readers, checkpoints, same run?
  8. transfer_stats, rating, report           tables, plots, galleries, the HTML report, leaderboard;
                                              people's ratings of champions (`foolbench rate`)
  9. runner                                   one run: start, resume or reuse (ensure_run), the loop
  10. experiments, sweep, probe, api          what the paper composes from runs; many runs; inspect;
                                              the Python API (foolbench.run, .score, .load_model)
  11. cli                                     the command line (imported by nothing)

The Python API is re-exported here lazily (`foolbench.run` imports foolbench.api on first use), so
`import foolbench` stays cheap and sets GOMP_SPINCOUNT before torch is imported.

Owners: the 8-bit image `images`; the run directory `rundir`; search engines `search` (the
`Engine` interface and registry in `search/__init__.py`, the `Evaluator` in `search/engine.py`);
the model adapter `models` (preprocessing in `models/preprocess.py`, options in `models/load.py`,
the device asked for and obtained in `models/device.py`: engines take theirs from `Model.device`);
option rules `options`.
"""

import os

__version__ = "0.1.0"

# torch's OpenMP threads spin after each parallel op for libgomp's default 300,000 rounds (~ms),
# and onnxruntime's threads, which score the very next batch, then share the cores with them: a
# LeNet batch took 40% longer after one multi-threaded torch op. 30,000 rounds end the spinning
# before that matters and cost torch's own training loops nothing measurable. libgomp reads this
# when it is loaded, i.e. at `import torch`, so it works only where foolbench is imported first
# (the CLI, the benchmarks); a value the user set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")

API = ("load_model", "run", "resume", "score", "RunResult", "ScoreResult")  # from foolbench.api
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """`foolbench.run` and the rest of the API, imported on first use (torch is not cheap)."""
    if name in API:
        from foolbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'foolbench' has no attribute {name!r}")
