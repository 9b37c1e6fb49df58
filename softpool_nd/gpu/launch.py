"""Kernel names, argument packing and grid sizes: the one launch path.

A *launcher* runs a named kernel instantiation over a 1-D grid. There are
two: :class:`softpool_nd.gpu.cuda.CupyLauncher` (CuPy RawModule, NVRTC) and
:class:`softpool_nd.gpu.host.HostLauncher` (the same ``softpool.cu``
compiled by g++ through ``host_shim.h``). Everything up to the launch itself
(which instantiation, which index width, how the loop table is packed, how
many blocks) happens here, identically for both, so that tests on the host
exercise the code a GPU runs except CuPy itself.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from .._dtypes import accumulation_dtype, bfloat16
from .._loops import GS, NCOLS, XS, YS, D, K, L, O, P, S, _is_batch

__all__ = [
    "MAX_DIMS",
    "NDIVS",
    "NULL",
    "SOURCE_DIR",
    "TABLE_DTYPE",
    "WIDTHS",
    "Launcher",
    "instantiations",
    "magic",
    "kernel_types",
    "source",
    "launch_forward",
    "launch_backward",
    "launch_jvp",
]

SOURCE_DIR = Path(__file__).resolve().parent

#: Most loop-table rows a kernel accepts; SP_MAX_DIMS in softpool.cu.
MAX_DIMS = 16

#: Divisors given a magic number per row, in softpool.cu's DIV_* order: O, L, S, D, D / gcd(S, D) and YS.
NDIVS = 6

#: The kernels' LoopTable struct, passed by value (about 2.8 KB of the 4 KB CUDA allows for parameters).
TABLE_DTYPE = np.dtype(
    [
        ("ndim", np.int64),
        ("batch", np.int64),
        ("whole", np.int64),
        ("r", np.int64, (MAX_DIMS, NCOLS)),
        ("div", np.uint64, (MAX_DIMS, NDIVS, 2)),
        ("every", np.int64, (MAX_DIMS,)),
    ]
)

_INDEX = {np.dtype(np.int32): "int", np.dtype(np.int64): "long long"}

#: Window-dimension capacities compiled: 1-D/2-D, 3-D/4-D pooling, and anything up to MAX_DIMS.
WIDTHS = (2, 4, MAX_DIMS)


#: The null pointer, passed as a 64-bit value. CuPy 13 turns a None argument
#: into an empty CPointer whose kernelParams entry is itself NULL, so the
#: kernel would read a garbage pointer (CuPy issue #9046); a zero of pointer
#: width is a null pointer in every CuPy version and in the host emulation.
NULL = np.uint64(0)

_CXX = {"float16": "__half", "float32": "float", "float64": "double", "bfloat16": "__nv_bfloat16"}


def kernel_types(bf16):
    """Map stored dtype -> (C++ stored type, C++ accumulation type, accumulation dtype)."""
    dtypes = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
    if bf16 and bfloat16() is not None:
        dtypes.append(bfloat16())
    return {dt: (_CXX[dt.name], _CXX[accumulation_dtype(dt).name], accumulation_dtype(dt)) for dt in dtypes}


def _forward_name(t, a, i, w):
    return f"softpool_forward<{t}, {a}, {i}, {w}>"


def _backward_name(t, a, i, overlap, w):
    return f"softpool_backward<{t}, {a}, {i}, {'true' if overlap else 'false'}, {w}>"


def _windows_name(t, a, i, w):
    return f"softpool_backward_windows<{t}, {a}, {i}, {w}>"


def _jvp_name(t, a, i, w):
    return f"softpool_jvp<{t}, {a}, {i}, {w}>"


def _width(tab):
    """Smallest compiled W that holds every pooled (K > 1) row of ``tab``."""
    pooled = int((tab[:, K] > 1).sum())
    return next(w for w in WIDTHS if w >= pooled)


def instantiations(bf16):
    """Every kernel name expression, in a fixed order."""
    names = []
    for t, a, _ in kernel_types(bf16).values():
        for i in _INDEX.values():
            names.extend(_forward_name(t, a, i, w) for w in WIDTHS)
            names.extend(_backward_name(t, a, i, overlap, w) for overlap in (False, True) for w in WIDTHS)
            names.extend(_windows_name(t, a, i, w) for w in WIDTHS)
            names.extend(_jvp_name(t, a, i, w) for w in WIDTHS)
    return names


def source():
    """Text of softpool.cu."""
    return (SOURCE_DIR / "softpool.cu").read_text()


class Launcher:
    """Runs kernel instantiations by name over a 1-D grid.

    Subclasses set ``names`` (the instantiations they compiled), ``block``
    (threads per block) and implement :meth:`max_blocks` and :meth:`launch`.
    ``index64`` forces 64-bit indexing (tests use it to cover both widths).
    """

    names: tuple = ()
    block: int = 256
    index64: bool = False
    bf16: bool = False

    def max_blocks(self):
        """Largest useful grid; grid-stride loops cover the rest."""
        raise NotImplementedError

    def launch(self, name, grid, args):
        """Run kernel ``name`` on ``grid`` blocks of ``self.block`` threads with ``args``."""
        raise NotImplementedError

    def device_of(self, x):
        """Context manager making the device that holds ``x`` current (none on the host)."""
        return contextlib.nullcontext()

    def types(self, dtype, acc_dtype, shape):
        """(C++ stored type, C++ accumulation type) for a dtype pair; TypeError when not compiled."""
        entry = kernel_types(self.bf16).get(np.dtype(dtype))
        if entry is None or entry[2] != np.dtype(acc_dtype):
            raise TypeError(
                f"x has dtype {np.dtype(dtype)} with accumulation dtype {np.dtype(acc_dtype)} (input shape {shape}); "
                f"the GPU kernels take float16, float32, float64{' and bfloat16' if self.bf16 else ''}"
            )
        return entry[0], entry[1]

    def grid(self, n):
        """Blocks for ``n`` threads' worth of work."""
        return max(1, min(-(-n // self.block), self.max_blocks()))


def magic(d, bits):
    """(multiplier, shift) with n // d == (mulhi(n, multiplier) + n) >> shift for 0 <= n < 2**(bits - 1).

    The round-up method of Granlund and Montgomery: shift = ceil(log2 d) and
    multiplier = floor(2**bits * (2**shift - d) / d) + 1 < 2**bits.

    Examples
    --------
    >>> m, s = magic(7, 32)
    >>> ((1000 * m >> 32) + 1000) >> s
    142
    """
    shift = (int(d) - 1).bit_length()
    return (1 << bits) * ((1 << shift) - int(d)) // int(d) + 1, shift


def pack_table(tab, shape, index="long long"):
    """The loop table as a one-element structured array: CuPy passes such a host array by value.

    Each row's divisors get magic numbers for the kernel's ``index`` width;
    ``batch`` has bit a set where row a is unpooled (``_loops._is_batch``),
    ``whole`` where no window of row a needs clipping (:func:`_whole`).
    ValueError past MAX_DIMS rows.
    """
    if tab.shape[0] > MAX_DIMS:
        raise ValueError(
            f"the input (input shape {tuple(shape)}) needs {tab.shape[0]} loop dimensions but the GPU kernels "
            f"handle at most {MAX_DIMS}; merge or squeeze axes first"
        )
    packed = np.zeros(1, dtype=TABLE_DTYPE)
    packed["ndim"] = tab.shape[0]
    packed["r"][0, : tab.shape[0]] = tab
    bits = 32 if index == "int" else 64
    packed["batch"] = sum(1 << a for a, row in enumerate(tab) if _is_batch(row))
    packed["whole"] = sum(1 << a for a, whole in enumerate(_whole(tab)) if whole)
    for a, row in enumerate(tab):
        every = int(row[D]) // math.gcd(int(row[S]), int(row[D]))
        packed["every"][0, a] = every
        # YS of a row with one output position is never divided by (and may be 0)
        packed["div"][0, a] = [magic(v, bits) for v in (row[O], row[L], row[S], row[D], every, max(int(row[YS]), 1))]
    return packed


def _index(launcher, tab, n_threads):
    """'int' when every index a kernel forms fits in 31 bits, else 'long long'.

    Bounds every intermediate: thread indices up to n + one full grid, and
    per row the largest position (length, padding, dilated window, stride)
    times the largest stride, summed over rows.
    """
    strides = np.maximum(np.abs(tab[:, XS : GS + 1]).max(axis=1), 1)
    reach = int(strides @ (tab[:, L] + tab[:, P] + tab[:, S] + tab[:, K] * tab[:, D]))
    reach = max(reach, int(tab[:, L].prod()), int(tab[:, O].prod()))
    reach += n_threads + launcher.block * launcher.max_blocks()
    return "long long" if launcher.index64 or reach >= 2**31 - 1 else "int"


def _scalar(index):
    return np.int64 if index == "long long" else np.int32


def launch_forward(launcher, x, y, lse, tab, beta, acc_dtype):
    """Launch the forward kernel: y and lse (output layout in column YS) from x."""
    t, a = launcher.types(x.dtype, acc_dtype, x.shape)
    n_out = math.prod(int(v) for v in tab[:, O])
    index = _index(launcher, tab, n_out)
    lse = NULL if lse is None else lse
    args = (x, y, lse, pack_table(tab, x.shape, index), np.dtype(acc_dtype).type(beta), _scalar(index)(n_out))
    launcher.launch(_forward_name(t, a, index, _width(tab)), launcher.grid(n_out), args)


def _whole(tab):
    """Per row of ``tab``: every window lies inside the input (no padding, the last window ends inside),
    so the kernels need not clip it."""
    return (tab[:, P] == 0) & ((tab[:, O] - 1) * tab[:, S] + (tab[:, K] - 1) * tab[:, D] < tab[:, L])


def _covered(tab):
    """True when the windows of ``tab`` reach every input cell: on each row no dilation holes
    (D == 1 or K == 1), stride == window span, and the last window reaching the row's end."""
    span = (tab[:, K] - 1) * tab[:, D] + 1
    return bool(
        np.all(
            ((tab[:, D] == 1) | (tab[:, K] == 1))
            & (tab[:, S] == span)
            & ((tab[:, O] - 1) * tab[:, S] - tab[:, P] + span >= tab[:, L])
        )
    )


def launch_backward(launcher, gy, x, y, lse, gx, tab, beta, acc_dtype, exact, overlap):
    """Launch the backward kernel: gx from gy, x, y and lse.

    Windows that never share a cell, with gx in x's layout, take the kernel
    walking windows (one thread per output, gx zeroed first where windows
    leave cells out); any other case gathers per input cell.
    """
    t, a = launcher.types(x.dtype, acc_dtype, x.shape)
    windows = not overlap and bool(np.all(tab[:, GS] == tab[:, XS]))
    n = math.prod(int(v) for v in tab[:, O if windows else L])
    index = _index(launcher, tab, n)
    if windows and not _covered(tab):
        gx[...] = 0  # cells in no window; the kernel writes every other cell
    head = (gy, x, y, lse, gx, pack_table(tab, x.shape, index), np.dtype(acc_dtype).type(beta), np.int32(bool(exact)))
    w = _width(tab)
    name = _windows_name(t, a, index, w) if windows else _backward_name(t, a, index, overlap, w)
    launcher.launch(name, launcher.grid(n), head + (_scalar(index)(n),))


def launch_jvp(launcher, dx, x, y, lse, dy, tab, beta, acc_dtype):
    """Launch the forward-mode kernel: dy from dx (in x's layout), x, y and lse."""
    t, a = launcher.types(x.dtype, acc_dtype, x.shape)
    n_out = math.prod(int(v) for v in tab[:, O])
    index = _index(launcher, tab, n_out)
    args = (dx, x, y, lse, dy, pack_table(tab, x.shape, index), np.dtype(acc_dtype).type(beta), _scalar(index)(n_out))
    launcher.launch(_jvp_name(t, a, index, _width(tab)), launcher.grid(n_out), args)
