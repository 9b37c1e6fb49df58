"""softpool_nd.pyramid on NumPy and Dask arrays, and the README's Zarr example."""

import importlib.util
import pathlib
import threading

import numpy as np
import pytest

import softpool_nd
import softpool_nd._pyramid

from configs import tolerance

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "pyramid_zarr.py"


def test_pyramid_numpy_levels_are_repeated_pools():
    x = np.random.default_rng(0).standard_normal((2, 3, 37, 20))
    levels = softpool_nd.pyramid(x, 3, kernel=2, beta=0.5)
    assert levels[0] is x and len(levels) == 4
    assert [a.shape for a in levels] == [(2, 3, 37, 20), (2, 3, 18, 10), (2, 3, 9, 5), (2, 3, 4, 2)]
    expect = x
    for got in levels[1:]:
        expect = softpool_nd.pool(expect, 2, beta=0.5)
        np.testing.assert_array_equal(got, expect)


def test_pyramid_kernel_tuple_and_axes():
    x = np.random.default_rng(1).standard_normal((12, 5, 27))
    levels = softpool_nd.pyramid(x, 2, kernel=(3, 2), axes=(2, 0))  # 3 along axis 2, 2 along axis 0
    assert [a.shape for a in levels] == [(12, 5, 27), (6, 5, 9), (3, 5, 3)]
    np.testing.assert_array_equal(
        levels[2], softpool_nd.pool(softpool_nd.pool(x, (2, 3), axes=(0, 2)), (2, 3), axes=(0, 2))
    )


def test_pyramid_keeps_small_bright_structures():
    x = np.zeros((32, 32))
    x[17, 9] = 10.0
    soft = softpool_nd.pyramid(x, 4)[-1]
    mean = softpool_nd.pyramid(x, 4, beta=0.0)[-1]
    assert soft.shape == (2, 2) and soft[1, 0] > 9.0 and abs(mean[1, 0] - 10.0 / 256) < 1e-12


def test_pyramid_zero_levels_and_integer_input():
    x = np.arange(16).reshape(4, 4)
    only = softpool_nd.pyramid(x, 0)
    assert len(only) == 1 and only[0] is x
    levels = softpool_nd.pyramid(x, 2)
    assert levels[1].dtype == np.float64 and levels[2].shape == (1, 1)


@pytest.mark.parametrize(
    "levels, exc, match",
    [
        (-1, ValueError, "levels=-1"),
        (1.0, TypeError, "levels=1.0"),
        (True, TypeError, "levels=True"),
        (4, ValueError, "levels=4 .* at least 16 .* has 9"),
    ],
)
def test_pyramid_bad_levels(levels, exc, match):
    with pytest.raises(exc, match=match):
        softpool_nd.pyramid(np.ones((9, 30)), levels)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pyramid_dask_matches_numpy(dtype):
    x = np.random.default_rng(2).standard_normal((3, 50, 41)).astype(dtype)
    xd = da.from_array(x, chunks=((2, 1), (7, 20, 3, 20), (16, 25)))
    levels = softpool_nd.pyramid(xd, 3, kernel=(2, 3), beta=2.0)
    expect = softpool_nd.pyramid(x, 3, kernel=(2, 3), beta=2.0)
    assert levels[0] is xd
    assert all(isinstance(a, da.Array) for a in levels)
    rtol = tolerance(dtype, "kernels")[0]
    for got, want in zip(dask.compute(*levels), expect):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=rtol, atol=rtol)


class CountingSource:
    """An array-like that counts the cells read from it, as a file-backed store would."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.cells_read = 0
        self._lock = threading.Lock()

    def __getitem__(self, key):
        out = self.data[key]
        with self._lock:
            self.cells_read += out.size
        return out


@pytest.mark.parametrize("chunks", [(16, 16), (10, 13)])  # aligned, and needing a rechunk at every level
def test_pyramid_dask_reads_input_once(chunks):
    data = np.random.default_rng(3).standard_normal((64, 52))
    src = CountingSource(data)
    x = da.from_array(src, chunks=chunks, asarray=True)
    levels = softpool_nd.pyramid(x, 3)
    src.cells_read = 0  # graph construction may peek at the source; only the compute counts
    got = dask.compute(*levels[1:])
    assert src.cells_read == data.size
    for a, want in zip(got, softpool_nd.pyramid(data, 3)[1:]):
        np.testing.assert_allclose(a, want, rtol=1e-12)


def test_pyramid_dask_is_one_graph():
    x = da.random.default_rng(4).random((32, 32), chunks=8)
    levels = softpool_nd.pyramid(x, 2)
    graph = dict(levels[2].__dask_graph__())
    assert levels[1].name in {k[0] for k in graph if isinstance(k, tuple)}  # level 2 is built on level 1


def _load_example():
    spec = importlib.util.spec_from_file_location("pyramid_zarr", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyramid_zarr_writer_without_a_cluster(tmp_path):
    zarr = pytest.importorskip("zarr")
    example = _load_example()
    x = da.from_array(np.random.default_rng(5).random((16, 24, 40), dtype=np.float32), chunks=8)
    with dask.config.set(scheduler="sync"):
        levels = example.write_pyramid(x, str(tmp_path / "p.zarr"), 2)
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    for i, level in enumerate(levels):
        np.testing.assert_array_equal(group[str(i)][...], level.compute())
    assert group["2"].shape == (4, 6, 10)


@pytest.mark.slow
def test_pyramid_example_runs_as_written(tmp_path, capsys):
    example = _load_example()
    example.main(str(tmp_path / "ex.zarr"), shape=(32, 64, 64), chunks=16, levels=2, memory_limit="400MiB")
    out = capsys.readouterr().out
    assert "level 2: shape (8, 16, 16)" in out and "keep a bright speck" in out


# A worker may use LIMIT bytes in all (its process memory, ~220 MiB of it being Python, NumPy,
# numba and dask); the pooled arrays total 4 * LIMIT and are made inside the graph.
LIMIT = 384 * 2**20


@pytest.fixture(scope="module")
def small_cluster():
    distributed = pytest.importorskip("distributed")
    settings = {
        # a worker over its limit is killed, and a killed worker fails the computation at once
        "distributed.scheduler.allowed-failures": 0,
        # no spilling to disk and no pausing: memory stays bounded by the graph, or the run fails
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": 0.95,
    }
    with dask.config.set(settings):
        with (
            distributed.LocalCluster(
                n_workers=2,
                threads_per_worker=1,
                processes=True,
                memory_limit=LIMIT,
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client


def _peak_worker_memory(client):
    return client.run(lambda dask_worker: max(dask_worker.monitor.range_query(0)["memory"]))


@pytest.mark.slow
def test_dask_bounded_memory_pyramid_to_zarr_and_overlapping_pool(small_cluster, tmp_path):
    zarr = pytest.importorskip("zarr")
    distributed = pytest.importorskip("distributed")
    x = da.random.default_rng(6).random(
        (4 * LIMIT // (4 * 512 * 512), 512, 512), chunks=(16, 256, 256), dtype=np.float32
    )
    assert x.nbytes == 4 * LIMIT
    levels = softpool_nd.pyramid(x, 2, axes=(0, 1, 2))
    store = str(tmp_path / "big.zarr")
    writes = [level.to_zarr(store, component=str(i), compute=False) for i, level in enumerate(levels[1:], 1)]
    y = softpool_nd.pool(x, (3, 3, 3), 2)  # each block reads one plane past its chunk on every axis
    # one pass over x; the cheap checks: corners pooled again in memory from the same input cells
    futures = small_cluster.compute([*writes, y.sum(dtype=np.float64), x[:9, :33, :33], y[:4, :16, :16]])
    distributed.wait(futures, timeout=240)  # a stuck cluster fails the test instead of hanging it
    *_, total, corner_x, corner_y = small_cluster.gather(futures)
    assert all(m < 0.95 * LIMIT for m in _peak_worker_memory(small_cluster).values())
    np.testing.assert_allclose(corner_y, softpool_nd.pool(corner_x, (3, 3, 3), 2), rtol=1e-6)
    assert 0.5 * y.size < total < 0.7 * y.size  # SoftPool of uniform noise: above the mean of 0.5
    level2 = zarr.open_group(store, mode="r")["2"]
    assert level2.shape == (x.shape[0] // 4, 128, 128)
    expect = softpool_nd.pyramid(corner_x[:8, :32, :32], 2, axes=(0, 1, 2))[2]
    np.testing.assert_allclose(level2[:2, :8, :8], expect, rtol=1e-6)
