"""The README's Python examples run as written (the GPU one needs a GPU; the Zarr example is
examples/pyramid_zarr.py, run on a small shape by tests/test_examples.py)."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
RUNNABLE = [b for b in BLOCKS if "import cupy" not in b and "examples/pyramid_zarr.py" not in b]


def test_readme_has_examples():
    assert len(RUNNABLE) >= 3


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"block{i}" for i in range(len(RUNNABLE))])
def test_readme_example_runs(block):
    exec(compile(block, str(README), "exec"), {})
