"""Seeded random pooling configurations shared by the tests (and usable by other backends' tests)."""

import numpy as np

from reference import windows

DTYPES = (np.float16, np.float32, np.float64)


def random_config(rng, max_rank=5, max_cells=4000):
    """A random valid (shape, pooling kwargs) pair: rank 1..max_rank, every parameter varied."""
    while True:
        rank = int(rng.integers(1, max_rank + 1))
        shape = tuple(int(n) for n in rng.integers(1, 8, size=rank))
        if np.prod(shape) > max_cells:
            continue
        n_pool = int(rng.integers(1, rank + 1))
        axes = sorted(rng.choice(rank, size=n_pool, replace=False).tolist())
        k = [int(v) for v in rng.integers(1, 4, size=n_pool)]
        kw = {"kernel": tuple(k)}
        if rng.random() < 0.7:
            kw["stride"] = tuple(int(v) for v in rng.integers(1, 4, size=n_pool))
        if rng.random() < 0.4:
            kw["dilation"] = tuple(int(v) for v in rng.integers(1, 3, size=n_pool))
        r = rng.random()
        if r < 0.3:
            kw["padding"] = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(n_pool))
        elif r < 0.4:
            kw["padding"] = "same"
        elif r < 0.5:
            kw["padding"] = int(rng.integers(0, 2))
        kw["ceil_mode"] = bool(rng.random() < 0.3)
        if rng.random() < 0.5 or axes != list(range(rank - n_pool, rank)):
            kw["axes"] = tuple(int(a) - rank if rng.random() < 0.3 else int(a) for a in axes)
        if _valid(shape, kw):
            return shape, kw


def _valid(shape, kw):
    try:
        axes, out, cells = windows(shape, **kw)
    except (ValueError, ZeroDivisionError):
        return False
    return all(out[a] >= 1 for a in axes) and all(len(c) > 0 for per in cells for c in per)


#: (rtol, atol) per dtype: against the float64 oracle, and between two softpool_nd paths that run the same
#: kernels in the same dtype (dask chunks against the whole array), which differ only in summation order
_TOLERANCES = {
    "oracle": {np.float16: (2e-3, 2e-3), np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)},
    "kernels": {np.float16: (1e-3, 1e-3), np.float32: (1e-6, 1e-6), np.float64: (1e-12, 1e-12)},
}


def tolerance(dtype, against="oracle"):
    """(rtol, atol) for comparing with the float64 oracle (or, ``against="kernels"``, with softpool_nd's own
    result computed another way) on unit-scale data: the one table of the tests."""
    return _TOLERANCES[against][np.dtype(dtype).type]


def random_layout(rng, x, xp=np):
    """``x`` (of namespace ``xp``) in a random memory layout: as is, transposed, reversed or strided."""
    kind = int(rng.integers(4))
    if kind == 1:
        perm = tuple(int(a) for a in rng.permutation(x.ndim))
        return xp.ascontiguousarray(x.transpose(perm)).transpose(tuple(int(a) for a in np.argsort(perm)))
    if kind == 2:
        flip = (slice(None, None, -1),) * x.ndim
        return x[flip].copy()[flip]
    if kind == 3:
        big = xp.zeros(tuple(2 * n for n in x.shape), x.dtype)
        view = big[(slice(None, None, 2),) * x.ndim]
        view[...] = x
        return view
    return x
