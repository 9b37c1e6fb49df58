"""CPU backend: numba parallel kernels (kernels.py lists their modules) and their NumPy glue (backend.py)."""

from . import _threads  # noqa: F401  (chooses numba's threading layer before any kernel compiles)
