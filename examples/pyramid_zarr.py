"""Write a SoftPool pyramid of a volume 4x larger than a worker's memory to a Zarr store.

    pip install 'softpool_nd[dask,zarr]'
    python examples/pyramid_zarr.py pyramid.zarr                      # LocalCluster: 2 workers x 512 MiB
    python examples/pyramid_zarr.py pyramid.zarr tcp://scheduler:8786  # the same code on a real cluster

The default 2 GiB float32 volume makes a store of about 2.3 GB.
"""

import contextlib
import sys

import dask
import dask.array as da
import numpy as np
import zarr
from dask.distributed import Client, LocalCluster

import softpool_nd


def volume(shape, chunks):
    """Dim noise with sparse bright specks; in practice open your data lazily, e.g. da.from_zarr(path)."""
    rng = da.random.default_rng(0)
    noise = rng.random(shape, chunks=chunks, dtype=np.float32)
    specks = rng.random(shape, chunks=chunks, dtype=np.float32) > 0.9999
    return noise + 20 * specks.astype(np.float32)


def write_pyramid(x, store, levels):
    """Write ``x`` and ``levels`` SoftPooled levels to ``store`` ("0", "1", ...) in one pass over ``x``."""
    pyramid = softpool_nd.pyramid(x, levels, kernel=2, axes=tuple(range(x.ndim)))
    writes = [  # pooled levels have ever smaller chunks: store each in chunks as large as the input's
        level.rechunk(x.chunksize).to_zarr(store, component=str(i), overwrite=True, compute=False)
        for i, level in enumerate(pyramid)
    ]
    dask.compute(*writes)  # one graph: every chunk of x is made (or read) once
    return pyramid


def main(store, scheduler=None, shape=(512, 1024, 1024), chunks=64, levels=3, memory_limit="512MiB"):
    cluster = (
        contextlib.nullcontext(scheduler)
        if scheduler
        else LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=memory_limit)
    )
    with cluster as address, Client(address):
        x = volume(shape, chunks)
        print(f"input {x.shape} {x.dtype}: {x.nbytes / 2**30:.2f} GiB in {x.npartitions} chunks")
        write_pyramid(x, store, levels)
    group = zarr.open_group(store, mode="r")
    for i in range(levels + 1):
        print(f"level {i}: shape {group[str(i)].shape}, chunks {group[str(i)].chunks}")
    top = group[str(levels)][...]  # a mean pyramid would leave ~0.5 + 20 / 8**levels of a speck
    print(f"level {levels}: {np.mean(top > 10):.1%} of cells keep a bright speck (max {top.max():.1f})")


if __name__ == "__main__":
    main(*(sys.argv[1:3] or ["pyramid.zarr"]))
