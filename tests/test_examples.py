"""The scripts in examples/ run, and the README shows them as they are."""

import importlib.util
import pathlib
import re

import numpy as np
import pytest

import softpool_nd

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_shows_pyramid_zarr_as_the_file_is():
    # wherever the README quotes the example, it quotes it whole and unchanged
    text = (ROOT / "examples" / "pyramid_zarr.py").read_text()
    for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S):
        if "examples/pyramid_zarr.py" in block:
            assert block.strip() == text.strip()


def test_pyramid_zarr_writes_the_levels_of_softpool_nd_pyramid(tmp_path):
    pytest.importorskip("dask.array")
    pytest.importorskip("zarr")
    pytest.importorskip("dask.distributed")
    import dask
    import zarr

    example = _load("pyramid_zarr")
    x = example.volume((16, 16, 24), chunks=8)
    store = str(tmp_path / "pyramid.zarr")
    with dask.config.set(scheduler="synchronous"):
        example.write_pyramid(x, store, levels=2)
        data = x.compute()
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["0"][...], data)
    expected = softpool_nd.pyramid(data, 2, kernel=2, axes=(0, 1, 2))
    assert [group[str(i)].shape for i in range(3)] == [(16, 16, 24), (8, 8, 12), (4, 4, 6)]
    for i in (1, 2):
        np.testing.assert_allclose(group[str(i)][...], expected[i], rtol=2e-6, atol=1e-6)
