"""Every example in the package's docstrings and in the documentation pages runs and prints what it says.

This is the project's one doctest mechanism, the equivalent of ``pytest --doctest-modules`` over
``softpool_nd/`` plus ``--doctest-glob`` over ``docs/``: every module of the package is found by
listing its files (the command line's included; a new module is picked up without editing this file), each
is one test, and its examples run with the options below. It is a test module rather than the
pytest flags because the test command stays ``python -m pytest`` over ``tests/`` (what CI and the
README run): a module or page whose examples need an optional package (torch, jax, dask, cupy) is
skipped with the package's name when that package is missing, where ``--doctest-modules`` would fail
collection on the import, and the examples share the suite's compiled kernels and markers.
"""

import doctest
import importlib
import inspect
import pathlib

import pytest

import softpool_nd

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
OPTIONS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
#: Public modules beyond the top level, with the package each needs.
ADAPTERS = {"softpool_nd.torch": "torch", "softpool_nd.jax": "jax"}
#: Packages a module of softpool_nd may need that are not required dependencies: a module whose
#: import fails for lack of one of these is skipped; any other import error fails.
OPTIONAL = {
    "torch",
    "jax",
    "jaxlib",
    "dask",
    "distributed",
    "cupy",
    "PIL",
    "tqdm",
    "ml_dtypes",
    "onnx",
    "onnxscript",
    "onnxruntime",
}
PACKAGE = pathlib.Path(softpool_nd.__file__).parent
#: Every module of the package, found from its files (nothing imported to list them).
MODULES = sorted(
    ".".join(("softpool_nd", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name != "__main__.py"
)


def _public(module):
    return [getattr(module, name) for name in module.__all__ if not name.startswith("__")]


def _import(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in OPTIONAL:
            raise
        pytest.skip(f"{name} needs the optional package {missing}")


def test_every_module_is_walked():
    assert {
        "softpool_nd",
        "softpool_nd._api",
        "softpool_nd.cli",
        "softpool_nd.cli.metrics",
        "softpool_nd.torch",
        "softpool_nd.composite.jax",
        "softpool_nd.gpu.host",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = _import(name)
    result = doctest.testmod(module, optionflags=OPTIONS)
    assert result.failed == 0
    if ">>> " in inspect.getsource(module):
        assert result.attempted > 0, f"{name} has examples that doctest does not find"


@pytest.mark.parametrize("name", ["softpool_nd", *ADAPTERS])
def test_every_public_name_has_an_example(name):
    if name in ADAPTERS:
        pytest.importorskip(ADAPTERS[name])
    module = importlib.import_module(name)
    without = [obj.__name__ for obj in _public(module) if ">>> " not in (obj.__doc__ or "")]
    assert not without, f"public names of {name} whose docstring has no example: {without}"


#: Pages whose examples need an optional package.
PAGE_NEEDS = {"guides/torch.rst": "torch", "guides/jax.rst": "jax", "guides/dask.rst": "dask"}
PAGES = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.rst") if ">>> " in p.read_text())


@pytest.mark.parametrize("page", PAGES)
def test_documentation_page_examples(page):
    if page in PAGE_NEEDS:
        pytest.importorskip(PAGE_NEEDS[page])
    result = doctest.testfile(str(DOCS / page), module_relative=False, optionflags=OPTIONS)
    assert result.attempted > 0 and result.failed == 0
