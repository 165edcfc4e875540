"""kiln from Python: tensors shared with NumPy and PyTorch through DLPack, autograd, modules,
model specs, weights and optimizers. See docs/python.md."""

from ._kiln import *  # noqa: F401,F403  (the compiled module; its stubs are _kiln.pyi)
from ._kiln import Error, Tensor, from_dlpack, nchw_to_nhwc  # noqa: F401  (the names people look for)
from ._kiln import __version__  # noqa: F401  (a * import skips dunder names)

__all__ = [name for name in dir() if not name.startswith("_")]
