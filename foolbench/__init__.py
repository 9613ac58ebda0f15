"""foolbench: how easily is an image classifier fooled? (Nguyen, Yosinski & Clune, CVPR 2015)."""

import os

__version__ = "0.1.0"

# torch's OpenMP threads spin after each parallel op for libgomp's default 300,000 rounds (~ms),
# and onnxruntime's threads, which score the very next batch, then share the cores with them: a
# LeNet batch took 40% longer after one multi-threaded torch op. 30,000 rounds end the spinning
# before that matters and cost torch's own training loops nothing measurable. libgomp reads this
# when it is loaded, i.e. at `import torch`, so it works only where foolbench is imported first
# (the CLI, the benchmarks); a value the user set is kept.
os.environ.setdefault("GOMP_SPINCOUNT", "30000")
