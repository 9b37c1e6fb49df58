"""The README's Python examples run as written, in order (the GPU one needs a GPU).

A README reads top to bottom, so a block may use what an earlier one made (the ONNX export uses the
PyTorch tour's ``model`` and ``x``): the blocks run one after another in one namespace, in a
temporary directory (an example may write a file). The README's links to files of the repository
must point to files that exist. The Zarr example is examples/pyramid_zarr.py, run on a small
shape by tests/test_examples.py.
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
RUNNABLE = [b for b in BLOCKS if "import cupy" not in b]


def test_readme_has_examples():
    assert len(RUNNABLE) >= 4


def test_readme_examples_run_in_order(tmp_path, monkeypatch):
    for package in ("torch", "jax", "onnxscript"):
        pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in RUNNABLE:
        line = TEXT[: TEXT.index(block)].count("\n") + 1
        # compiled with the README's line numbers, so a traceback points at the README line
        exec(compile("\n" * (line - 1) + block, str(README), "exec"), namespace)


def test_readme_links_to_files_that_exist():
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", TEXT)
    assert targets, "the README links to no file"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_test_command_is_what_ci_runs():
    """The README's second command is, verbatim, the line .ci/run runs on a clean clone."""
    commands = [
        line
        for line in re.findall(r"```bash\n(.*?)```", TEXT, re.DOTALL)[0].splitlines()
        if line and not line.startswith("#")
    ]
    assert len(commands) == 2 and commands[1].endswith("python -m pytest -n auto --dist loadgroup")
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
