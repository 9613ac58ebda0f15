"""foolbench: how easily is an image classifier fooled? (Nguyen, Yosinski & Clune, CVPR 2015)."""

__version__ = "0.1.0"
