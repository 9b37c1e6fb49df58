"""Average and max pooling in NumPy, and nearest-neighbour upsampling, for the demo's comparison.

Non-overlapping windows only (stride = kernel), which is what the demo
compares; trailing cells that do not fill a window are dropped, as
``softpool_nd.pool`` does by default.
"""

import numpy as np

__all__ = ["avg_pool", "max_pool", "upsample_nearest"]


def _blocks(x, kernel, axes):
    """View ``x`` with every pooled axis split into (windows, kernel); returns the view and the kernel axes."""
    crop = tuple(slice(0, n - n % kernel) if a in axes else slice(None) for a, n in enumerate(x.shape))
    x = x[crop]
    shape, inner = [], []
    for a, n in enumerate(x.shape):
        if a in axes:
            shape += [n // kernel, kernel]
            inner.append(len(shape) - 1)
        else:
            shape.append(n)
    return x.reshape(shape), tuple(inner)


def avg_pool(x, kernel, axes):
    """Mean over non-overlapping ``kernel``-wide windows along ``axes``.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.baselines import avg_pool
    >>> avg_pool(np.array([[0.0, 1.0, 4.0], [1.0, 2.0, 4.0]]), 2, axes=(0, 1))
    array([[1.]])
    """
    blocks, inner = _blocks(np.asarray(x), kernel, axes)
    return blocks.mean(axis=inner)


def max_pool(x, kernel, axes):
    """Maximum over non-overlapping ``kernel``-wide windows along ``axes``.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.baselines import max_pool
    >>> max_pool(np.array([0.0, 3.0, 1.0, 2.0, 9.0]), 2, axes=(0,))
    array([3., 2.])
    """
    blocks, inner = _blocks(np.asarray(x), kernel, axes)
    return blocks.max(axis=inner)


def upsample_nearest(y, kernel, axes):
    """Repeat every cell ``kernel`` times along ``axes``: the inverse layout of the pooling above.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.baselines import upsample_nearest
    >>> upsample_nearest(np.array([[1.0, 2.0]]), 2, axes=(0, 1))
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.]])
    """
    for a in axes:
        y = np.repeat(y, kernel, axis=a)
    return y
