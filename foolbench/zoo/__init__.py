"""The reference models of the paper, built into ONNX files with their model cards (`foolbench zoo`)."""

from foolbench.zoo.registry import DEFAULT_MODEL, ZOO_NAMES, build, ensure, ensure_file, list_zoo, zoo_dir

__all__ = ["DEFAULT_MODEL", "ZOO_NAMES", "build", "ensure", "ensure_file", "list_zoo", "zoo_dir"]
