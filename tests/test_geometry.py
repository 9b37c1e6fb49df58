"""Output shapes follow PyTorch's pooling arithmetic; axes and padding forms resolve as documented."""

import subprocess
import sys

import numpy as np
import pytest

import softpool_nd
from softpool_nd import make_geometry


@pytest.mark.parametrize("seed", range(60))
def test_output_shape_equals_torch_max_pool(seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    shape = tuple(int(v) for v in rng.integers(1, 12, size=nd))
    k = tuple(int(v) for v in rng.integers(1, 5, size=nd))
    s = tuple(int(v) for v in rng.integers(1, 4, size=nd))
    d = tuple(int(v) for v in rng.integers(1, 3, size=nd))
    p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
    ceil = bool(rng.random() < 0.5)
    pool = [torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d, torch.nn.functional.max_pool3d][nd - 1]
    try:
        expect = tuple(pool(torch.zeros((1, 1) + shape), k, s, p, d, ceil_mode=ceil).shape)
    except RuntimeError:
        with pytest.raises(ValueError):
            softpool_nd.output_shape((1, 1) + shape, k, s, p, dilation=d, ceil_mode=ceil)
        return
    assert softpool_nd.output_shape((1, 1) + shape, k, s, p, dilation=d, ceil_mode=ceil) == expect


def test_default_axes():
    assert make_geometry((2, 3, 8, 8), 2).axes == (2, 3)
    assert make_geometry((2, 3, 8), 2).axes == (2,)
    assert make_geometry((8, 8), 2).axes == (0, 1)
    assert make_geometry((8,), 2).axes == (0,)
    assert make_geometry((2, 3, 8, 8), (2,)).axes == (3,)
    assert make_geometry((2, 3, 8, 8), (2, 2, 2)).axes == (1, 2, 3)
    g = make_geometry((4, 6, 8), (2, 3), axes=(-1, 0))
    assert g.axes == (0, 2) and g.kernel == (3, 2) and g.out_shape == (1, 6, 4)


def test_padding_forms_and_same():
    g = make_geometry((1, 1, 10, 7), 3, stride=2, padding=((1, 0), 2))
    assert (g.pad_lo, g.pad_hi, g.out_shape) == ((1, 2), (0, 2), (1, 1, 5, 5))
    assert make_geometry((1, 1, 10, 7), 3, stride=1, padding="valid").out_shape == (1, 1, 8, 5)
    same = make_geometry((1, 1, 10, 7), 3, stride=2, padding="same")
    assert same.out_shape == (1, 1, 5, 4)
    # total padding (out-1)*s + span - L: 4*2+3-10 = 1 -> (0, 1); 3*2+3-7 = 2 -> (1, 1)
    assert (same.pad_lo, same.pad_hi) == ((0, 1), (1, 1))
    assert make_geometry((9,), 2, stride=1, dilation=2, padding="same").out_shape == (9,)


def test_ceil_mode_drops_a_window_starting_in_the_padding():
    # L=5, k=2, s=2, pad=1: ceil gives 4 windows; the 4th would start at 6 - 1 = 5, inside the right padding
    assert softpool_nd.output_shape((5,), 2, 2, 1, ceil_mode=True) == (3,)
    assert softpool_nd.output_shape((6,), 2, 2, 0, ceil_mode=True) == (3,)
    assert softpool_nd.output_shape((7,), 2, 2, 0, ceil_mode=True) == (4,)
    assert softpool_nd.output_shape((7,), 2, 2, 0, ceil_mode=False) == (3,)


def test_geometry_is_immutable_and_hashable():
    g = make_geometry((2, 3, 8, 8), 2)
    with pytest.raises(AttributeError):
        g.kernel = (3, 3)
    assert hash(g) == hash(make_geometry((2, 3, 8, 8), (2, 2), axes=(3, 2)))


def test_import_is_cheap_and_compiles_nothing():
    # what the import loads, not how long it takes: beyond numpy, only softpool_nd's own modules and the
    # standard library (numba, every kernel and every framework load on first use)
    code = (
        "import sys, numpy; before = set(sys.modules); import softpool_nd; "
        "print(*sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "softpool_nd" in out
    foreign = [m for m in out if m != "softpool_nd" and m.lstrip("_") not in sys.stdlib_module_names]
    assert foreign == []


def test_geometry_cache_keeps_apart_what_the_checks_keep_apart():
    # 2, 2.0, True and numpy.int64(2) hash alike; a cache keyed on the bare
    # values would hand the float or the bool the geometry of the valid int
    x = np.zeros((1, 1, 8, 8))
    good = make_geometry(x.shape, 2)
    assert make_geometry(x.shape, 2) is good
    assert make_geometry(x.shape, np.int64(2)) == good
    assert make_geometry(x.shape, (2, 2)) == good and make_geometry(x.shape, [2, 2]) == good
    for bad in (2.0, True, (2, 2.0), (True, 2)):
        with pytest.raises(TypeError, match="kernel="):
            make_geometry(x.shape, bad)
        with pytest.raises(TypeError, match="kernel="):
            softpool_nd.pool(x, kernel=bad)
    with pytest.raises(TypeError, match="ceil_mode="):
        make_geometry(x.shape, 2, ceil_mode=1)
    # the shape is part of the key: the same arguments on another shape
    assert make_geometry((1, 1, 6, 6), 2).out_shape == (1, 1, 3, 3)
    # an unhashable argument skips the cache: the checks, not hash(), report it
    with pytest.raises(TypeError, match="kernel=array"):
        make_geometry(x.shape, np.array([2, 2]))
