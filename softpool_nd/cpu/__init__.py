"""CPU backend: numba parallel kernels (kernels.py) and their NumPy glue (backend.py)."""
