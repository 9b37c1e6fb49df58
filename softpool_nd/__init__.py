"""softpool_nd: SoftPool (Stergiou, Poppe and Kalliatakis, ICCV 2021) for N-d arrays.

Every pooling window is reduced to the softmax-weighted mean of its values.
Start with :func:`pool`; :func:`forward` and :func:`backward` are the explicit
pair other frameworks call for autograd, :func:`jvp` the forward-mode derivative.
"""

from ._api import backward, forward, jvp, output_shape, pool
from ._geometry import Geometry, make_geometry
from ._outputs import set_output_cache
from ._pyramid import pyramid

__version__ = "0.1.0"
__all__ = [
    "pool",
    "forward",
    "backward",
    "jvp",
    "output_shape",
    "Geometry",
    "make_geometry",
    "pyramid",
    "set_output_cache",
    "__version__",
]
