"""The examples in the public docstrings and in the documentation pages run and print what they say.

The modules are found from ``__all__``: a public name added to softpool_nd (or to an adapter) has
its module's examples run here, and must have an example.
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


def _public(module):
    return [getattr(module, name) for name in module.__all__ if not name.startswith("__")]


def _defining_modules():
    """The modules where the top-level public names are defined (softpool_nd._api, ...)."""
    return sorted({inspect.getmodule(obj).__name__ for obj in _public(softpool_nd)})


@pytest.mark.parametrize("name", _defining_modules() + list(ADAPTERS))
def test_docstring_examples(name):
    if name in ADAPTERS:
        pytest.importorskip(ADAPTERS[name])
    result = doctest.testmod(importlib.import_module(name), optionflags=OPTIONS)
    assert result.attempted > 0 and result.failed == 0


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
