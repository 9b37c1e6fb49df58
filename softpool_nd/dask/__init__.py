"""Dask arrays through softpool_nd's public functions.

:func:`softpool_nd.pool`, :func:`softpool_nd.forward` and
:func:`softpool_nd.backward` route a ``dask.array.Array`` to
:mod:`softpool_nd.dask.backend`, which builds a lazy graph whose tasks call the
in-memory backends (NumPy or CuPy, by chunk type) on one block each. Nothing is
imported from dask until such an array is seen.
"""
