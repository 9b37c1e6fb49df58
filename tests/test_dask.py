"""Dask arrays through the public API: lazy, chunk-independent, equal to the NumPy path."""

import numpy as np
import pytest

import softpool_nd

from configs import DTYPES, random_config, tolerance

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from softpool_nd.dask import _plan, backend  # needs dask

# the tolerances for chunked against in-memory results


def random_chunks(rng, shape):
    """Irregular chunks: every axis cut at up to three random places (size-1 chunks happen)."""
    chunks = []
    for n in shape:
        cuts = sorted(set(rng.integers(1, n, size=int(rng.integers(0, 4))).tolist())) if n > 1 else []
        edges = [0] + cuts + [n]
        chunks.append(tuple(b - a for a, b in zip(edges[:-1], edges[1:])))
    return tuple(chunks)


def assert_close(got, expect):
    rtol = tolerance(expect.dtype, "kernels")[0]
    assert got.dtype == expect.dtype and got.shape == expect.shape
    np.testing.assert_allclose(got.astype(np.float64), expect.astype(np.float64), rtol=rtol, atol=rtol)


def _check_against_numpy(x, chunks, kw, beta=1.0, gradient="exact"):
    rng = np.random.default_rng(x.size)
    xd = da.from_array(x, chunks=chunks)
    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    grad_y = rng.standard_normal(y.shape).astype(x.dtype)
    expect_g = softpool_nd.backward(grad_y, x, y=y, lse=lse, beta=beta, gradient=gradient, **kw)

    yd, lsed = softpool_nd.forward(xd, beta=beta, **kw)
    gyd = da.from_array(grad_y, chunks=random_chunks(rng, grad_y.shape))
    gd = softpool_nd.backward(gyd, xd, y=yd, lse=lsed, beta=beta, gradient=gradient, **kw)
    pd = softpool_nd.pool(xd, beta=beta, **kw)
    assert all(isinstance(a, da.Array) for a in (yd, lsed, gd, pd))
    got_y, got_lse, got_g, got_p = dask.compute(yd, lsed, gd, pd, scheduler="sync")
    assert_close(got_y, y)
    assert_close(got_lse, lse)
    assert_close(got_g, expect_g)
    assert_close(got_p, y)
    # backward recomputing y and lse itself, on the threaded scheduler
    assert_close(softpool_nd.backward(gyd, xd, beta=beta, gradient=gradient, **kw).compute(), expect_g)


@pytest.mark.parametrize("seed", range(24))
def test_dask_random_configs_match_numpy(seed):
    rng = np.random.default_rng(seed)
    shape, kw = random_config(rng, max_rank=4, max_cells=600)
    shape = tuple(n + 4 for n in shape)  # room for several blocks per axis
    try:
        softpool_nd.output_shape(shape, **kw)
    except ValueError:
        shape, kw = (11, 13), dict(kernel=3, stride=2, padding=1)
    dtype = DTYPES[seed % 3]
    x = rng.standard_normal(shape).astype(dtype)
    beta = float(rng.choice([1.0, -0.7, 0.0, 2.5]))
    _check_against_numpy(x, random_chunks(rng, shape), kw, beta=beta, gradient="weights" if seed % 4 == 3 else "exact")


PARAMETERS = [
    dict(kernel=2),
    dict(kernel=3, stride=1),
    dict(kernel=4, stride=2),
    dict(kernel=2, stride=3),
    dict(kernel=3, stride=2, padding=1),
    dict(kernel=3, stride=2, padding=((2, 0), (0, 1)), axes=(0, 1)),
    dict(kernel=3, stride=1, dilation=2),
    dict(kernel=2, stride=3, dilation=2),
    dict(kernel=(2, 5), stride=(1, 1), dilation=(3, 1), axes=(0, 1)),
    dict(kernel=3, stride=2, ceil_mode=True),
    dict(kernel=3, stride=2, padding=1, ceil_mode=True, dilation=2),
    dict(kernel=(3, 2), stride=(2, 3), padding="same"),
    dict(kernel=3, axes=-1),
    dict(kernel=(2, 2, 3), padding=(1, 0, 1), axes=(0, 1, 2)),
]


@pytest.mark.parametrize("kw", PARAMETERS, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dask_every_parameter_matches_numpy(kw, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((19, 23, 6)).astype(dtype)
    _check_against_numpy(x, ((4, 1, 9, 5), (7, 7, 2, 7), (2, 4)), kw)


def test_dask_single_chunk_and_chunk_per_cell():
    x = np.random.default_rng(1).standard_normal((9, 10))
    for chunks in (x.shape, 1):
        _check_against_numpy(x, chunks, dict(kernel=3, stride=2, padding=1, dilation=2))


def test_dask_integer_input_gives_float64():
    x = np.arange(60).reshape(6, 10)
    y = softpool_nd.pool(da.from_array(x, chunks=(4, 3)), 2)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.compute(), softpool_nd.pool(x, 2))


def test_dask_empty_unpooled_axis():
    x = da.zeros((0, 8), chunks=(1, 3))
    y, lse = softpool_nd.forward(x, 2, axes=1)
    assert y.shape == lse.shape == (0, 4)
    assert softpool_nd.backward(da.zeros((0, 4)), x, 2, axes=1).compute().shape == (0, 8)


def _boom(block):
    raise AssertionError("a block was computed at graph construction")


def test_dask_nothing_computed_at_call():
    x = da.map_blocks(_boom, da.zeros((12, 10), chunks=(5, 4)), dtype=np.float64, meta=np.empty((0, 0)))
    y, lse = softpool_nd.forward(x, 3, 2, 1)
    p = softpool_nd.pool(x, 3, 2, 1)
    g = softpool_nd.backward(da.ones(y.shape, chunks=3), x, 3, 2, 1)
    levels = softpool_nd.pyramid(x, 2)
    assert all(isinstance(a, da.Array) for a in (y, lse, p, g, *levels))
    with pytest.raises(AssertionError, match="at graph construction"):
        p.compute(scheduler="sync")


def _counting(monkeypatch, name):
    calls = []
    real = getattr(softpool_nd._api, name)

    def counted(block, *args, **kwargs):
        calls.append(block.shape)
        return real(block, *args, **kwargs)

    monkeypatch.setattr(backend._api, name, counted)
    return calls


def test_dask_forward_pools_each_block_once(monkeypatch):
    xd = da.from_array(np.random.default_rng(2).standard_normal((20, 30)), chunks=(6, 7))
    y, lse = softpool_nd.forward(xd, 3, 2)
    nblocks = y.npartitions
    calls = _counting(monkeypatch, "forward")
    dask.compute(y, lse, scheduler="sync")
    assert len(calls) == nblocks
    calls.clear()
    y.compute(scheduler="sync")
    assert len(calls) == nblocks
    # pool asks for no lse: the block tasks call the in-memory pool, not forward
    pool_calls = _counting(monkeypatch, "pool")
    calls.clear()
    softpool_nd.pool(xd, 3, 2).compute(scheduler="sync")
    assert len(pool_calls) == nblocks and not calls


def _graph_names(a):
    return {k[0] if isinstance(k, tuple) else k for k in dict(a.__dask_graph__())}


def test_dask_aligned_chunks_are_not_rechunked():
    x = da.ones((24, 24), chunks=(6, 8))
    names = _graph_names(softpool_nd.pool(x, 2))  # boundaries 6, 12, 18 and 8, 16 are window starts
    assert not any(n.startswith(("rechunk", "overlap", "getitem-overlap")) for n in names)
    names = _graph_names(softpool_nd.pool(x, 3))  # 8 and 16 are not multiples of 3
    assert any(n.startswith("rechunk") for n in names)


def test_dask_rechunk_moves_boundaries_less_than_a_stride():
    x = da.ones((50, 50), chunks=((7, 13, 11, 19), (10,) * 5))
    p = backend.plans(x, softpool_nd.make_geometry(x.shape, 4, 3, 1))
    for plan, chunks in zip(p, x.chunks):
        old = np.cumsum(chunks)[:-1]
        new = np.cumsum(plan.in_chunks)[:-1]
        assert len(new) == len(old)
        assert np.all(np.abs(new - old) < plan.stride)
        assert np.all((new + plan.pad_lo) % plan.stride == 0)  # every boundary is a window start


@pytest.mark.parametrize(
    "k, s, d, overlap, halo",
    [(2, 2, 1, 0, 0), (3, 2, 1, 1, 1), (3, 1, 1, 2, 2), (2, 3, 1, 0, 0), (3, 2, 2, 3, 2), (5, 4, 1, 1, 1)],
)
def test_dask_overlap_and_halo_are_minimal(k, s, d, overlap, halo):
    plan = _plan.plan_axis((20, 20, 20), 60, (60 - d * (k - 1) - 1) // s + 1, k, s, d, 0)
    assert (plan.overlap, plan.halo) == (overlap, halo)
    x = np.random.default_rng(3).standard_normal(60)
    _check_against_numpy(x, (20, 20, 20), dict(kernel=k, stride=s, dilation=d))


def test_dask_small_chunks_merge_to_fit_the_overlap():
    plan = _plan.plan_axis((2,) * 10, 20, 14, 7, 1, 1, 0)  # each block reads 6 cells past its chunk
    assert min(plan.in_chunks) >= 6 and sum(plan.in_chunks) == 20 and sum(plan.out_chunks) == 14


@pytest.mark.parametrize("k, s, d", [(2, 2, 4), (2, 3, 5), (3, 5, 3)])
def test_dask_chunks_narrower_than_the_dilation(k, s, d):
    # windows with gaps wider than a chunk: a chunk must still hold a cell of every window reaching in
    x = np.random.default_rng(8).standard_normal((3, 40))
    plan = backend.plans(da.from_array(x, chunks=1), softpool_nd.make_geometry(x.shape, k, s, 0, d, axes=1))[0]
    assert min(plan.in_chunks) >= d
    for chunks in ((3, 1), (3, (2, 1, 3, 1, 5, 2, 2, 3, 1, 4, 6, 10))):
        _check_against_numpy(x, chunks, dict(kernel=k, stride=s, dilation=d, axes=1))


def test_dask_out_argument_takes_the_result():
    x = np.random.default_rng(4).standard_normal((8, 9)).astype(np.float32)
    out = da.zeros((4, 4), chunks=2, dtype=np.float32)
    res = softpool_nd.pool(da.from_array(x, chunks=3), 2, out=out)
    assert res is out
    np.testing.assert_array_equal(out.compute(), softpool_nd.pool(x, 2))


def test_dask_mixing_with_numpy_is_a_type_error():
    xd = da.ones((4, 4), chunks=2)
    with pytest.raises(TypeError, match="grad_y"):
        softpool_nd.backward(np.ones((2, 2)), xd, 2)


try:
    from softpool_nd.gpu import check as _gpu_check

    _cupy = pytest.importorskip("cupy") if _gpu_check.available() else None
except ImportError:
    _cupy = None


@pytest.mark.gpu
@pytest.mark.skipif(_cupy is None, reason="no CUDA GPU visible to CuPy")
def test_dask_cupy_chunks_match_numpy():
    x = np.random.default_rng(5).standard_normal((4, 3, 33, 41)).astype(np.float32)
    xd = da.from_array(_cupy.asarray(x), chunks=(3, 3, 10, 14))
    kw = dict(kernel=3, stride=2, padding=1)
    y, lse = softpool_nd.forward(xd, **kw)
    g = softpool_nd.backward(da.ones_like(y), xd, y=y, lse=lse, **kw)
    assert isinstance(y._meta, _cupy.ndarray) and isinstance(g._meta, _cupy.ndarray)
    y_np, lse_np = softpool_nd.forward(x, **kw)
    got_y, got_g = dask.compute(y, g)
    assert isinstance(got_y, _cupy.ndarray)
    np.testing.assert_allclose(_cupy.asnumpy(got_y), y_np, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(
        _cupy.asnumpy(got_g),
        softpool_nd.backward(np.ones_like(y_np), x, y=y_np, lse=lse_np, **kw),
        rtol=2e-5,
        atol=1e-6,
    )
