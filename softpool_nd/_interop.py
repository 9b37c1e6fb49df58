"""Foreign arrays at the API boundary, through DLPack.

``native(*arrays)`` returns arrays a backend understands (numpy, cupy, dask)
and a function that turns results back into the caller's array type. NumPy
arrays cost one type check; any other object that implements ``__dlpack__``
and ``__dlpack_device__`` (torch.Tensor, jax.Array, ...) is viewed without a
copy as a NumPy array (CPU memory) or a CuPy array (CUDA memory), and the
results are handed back the same way through the caller's ``from_dlpack``,
found with array-api-compat.

A floating dtype that DLPack cannot carry into NumPy or CuPy (bfloat16, the
float8 types) is computed in float32 and cast back to the caller's dtype.
"""

import numpy as np

from ._dispatch import backend_for

__all__ = ["native"]

# DLDeviceType codes from dlpack.h
_CPU, _CUDA = 1, 2


def native(*arrays, names=None):
    """Return ``(arrays, to_caller)`` for the arrays of one call.

    The first array is the input ``x``: results come back in its framework and,
    when its dtype had to be replaced by float32, cast back to that dtype. A
    ``(y, lse)`` pair keeps ``lse`` in its accumulation dtype. A result that is
    one of the given arrays (``out``) comes back as the caller's original object.
    ``None`` entries pass through unchanged. ``names`` (one per array) name the
    arguments in error messages.
    """
    for a in arrays:
        if a is not None and type(a) is not np.ndarray:
            return _Call(arrays, names).native()
    return arrays, _unchanged


def _unchanged(result):
    return result


def _is_native(a):
    if a is None or isinstance(a, np.ndarray):
        return True
    try:
        backend_for(a)
    except TypeError:
        return False
    return True


def _check_plain(a, name):
    """Refuse a tensor that autograd tracks: the core API is not differentiable and would silently cut the graph."""
    if getattr(a, "requires_grad", False):
        name = name or "an array"
        raise TypeError(
            f"{name} is a {type(a).__module__}.{type(a).__qualname__} that requires grad (shape {tuple(a.shape)}); "
            f"softpool_nd.pool/forward/backward are not autograd-aware: use softpool_nd.torch.soft_pool (or the "
            f"SoftPool modules) for gradients, or pass {name}.detach()"
        )


def _resolved(a):
    """``a`` with torch's lazy negation and conjugation bits applied: DLPack exports the memory without them."""
    if getattr(a, "is_neg", None) is not None and (a.is_neg() or a.is_conj()):
        return a.resolve_conj().resolve_neg()
    return a


def _namespace(a):
    """The array-API namespace of ``a``, or None for a framework array-api-compat does not know."""
    try:
        import array_api_compat
    except ImportError as e:
        raise ImportError(
            f"softpool_nd needs array-api-compat to return {type(a).__module__}.{type(a).__qualname__} results; "
            f"install it with `pip install array-api-compat` (the torch and jax extras include it)"
        ) from e
    try:
        return array_api_compat.array_namespace(a)
    except TypeError:
        return None


def _from_dlpack_for(a):
    """numpy.from_dlpack or cupy.from_dlpack, by the device ``a`` lives on."""
    kind, device = a.__dlpack_device__()
    if kind == _CPU:
        return np.from_dlpack
    if kind == _CUDA:
        try:
            import cupy
        except ImportError as e:
            raise ImportError(
                f"a {type(a).__qualname__} on CUDA device {device} (shape {tuple(a.shape)}) needs CuPy; "
                f"install softpool_nd[gpu]"
            ) from e
        return cupy.from_dlpack
    raise TypeError(
        f"a {type(a).__qualname__} of shape {tuple(a.shape)} lives on DLPack device type {int(kind)}; "
        f"softpool_nd runs on CPU (type 1) and CUDA (type 2) memory"
    )


class _Call:
    """The foreign arrays of one call and how to hand results back."""

    def __init__(self, arrays, names):
        self.arrays = arrays
        self.names = names
        self.xp = None  # the namespace results come back in; None keeps backend arrays
        self.cast_to = None  # the caller's dtype of x when it was replaced by float32
        self.inputs = {}  # id(backend array) -> (backend array, caller's array, its dtype if a copy, else None)

    def native(self):
        out = []
        for i, a in enumerate(self.arrays):
            if _is_native(a) or not hasattr(a, "__dlpack__"):
                out.append(a)
                continue
            _check_plain(a, self.names[i] if self.names else None)
            r = _resolved(a)
            b, replaced = self._convert(r)
            if i == 0:
                self.xp, self.cast_to = _namespace(a), replaced
            # b is a copy when r is: an out= is then written back into the caller's array
            self.inputs[id(b)] = (b, a, replaced if r is a else a.dtype)
            out.append(b)
        return tuple(out), self.to_caller

    @staticmethod
    def _convert(a):
        """A backend array over the memory of ``a`` (or of a float32 copy) and the dtype it replaced."""
        from_dlpack = _from_dlpack_for(a)
        try:
            return from_dlpack(a), None
        except (BufferError, RuntimeError, TypeError, ValueError) as e:
            xp = _namespace(a)
            if xp is None or not xp.isdtype(a.dtype, "real floating"):
                raise TypeError(
                    f"a {type(a).__qualname__} of dtype {a.dtype} and shape {tuple(a.shape)} cannot be "
                    f"passed through DLPack ({e})"
                ) from e
            return from_dlpack(xp.astype(a, xp.float32)), a.dtype

    def to_caller(self, result):
        if isinstance(result, tuple):
            y, lse = result
            return self._back(y), _wrap(lse, self.xp, None)
        return self._back(result)

    def _back(self, r):
        if any(r is a for a in self.arrays):
            return r  # a backend array the caller passed itself (a numpy out= for a jax x)
        hit = self.inputs.get(id(r))
        if hit is None or hit[0] is not r:
            return _wrap(r, self.xp, self.cast_to)
        _, original, replaced = hit
        if replaced is not None:
            # out was a copy (float32, or resolved from a negated view): write the result into the caller's array
            original[...] = _wrap(r, _namespace(original), replaced)
        return original


def _wrap(r, xp, dtype):
    """Backend array ``r`` as an array of namespace ``xp`` (unchanged when None), cast to ``dtype``."""
    if xp is None:
        return r
    t = xp.from_dlpack(r)
    return t if dtype is None else xp.astype(t, dtype)
