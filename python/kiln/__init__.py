"""kiln from Python: tensors shared with NumPy and PyTorch through DLPack, autograd, modules,
model specs, weights and optimizers. See docs/python.md."""

from ._kiln import *  # noqa: F401,F403  (the compiled module; its stubs are _kiln.pyi)
from ._kiln import Error, Tensor, from_dlpack, nchw_to_nhwc  # noqa: F401  (the names people look for)
from ._kiln import __version__  # noqa: F401  (a * import skips dunder names)

from . import _kiln


def _bare_decorator(mode):
    """mode (the compiled kiln.no_grad or kiln.enable_grad) taking a function as well: @kiln.no_grad
    without parentheses decorates it as @kiln.no_grad() does (torch's take both forms)."""

    class Mode(mode):
        __doc__ = mode.__doc__

        def __new__(cls, fn=None):
            if fn is not None:
                return mode()(fn)  # the decorated function, not a mode object
            return super().__new__(cls)

        def __init__(self, fn=None):
            super().__init__()

    Mode.__name__ = Mode.__qualname__ = mode.__name__
    Mode.__module__ = "kiln"
    return Mode


no_grad = _bare_decorator(_kiln.no_grad)
enable_grad = _bare_decorator(_kiln.enable_grad)

__all__ = [name for name in dir() if not name.startswith("_")]
