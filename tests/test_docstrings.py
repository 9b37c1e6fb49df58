"""The examples in the public docstrings run and print what they say."""
import doctest

import pytest

import softpool_nd._api
import softpool_nd._geometry


@pytest.mark.parametrize("module", [softpool_nd._api, softpool_nd._geometry])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
