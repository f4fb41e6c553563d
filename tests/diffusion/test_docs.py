"""The examples in the docstrings run and print what they claim."""

import doctest

import pytest

from tljax.diffusion import _process, _samplers, _schedule


@pytest.mark.parametrize("module", [_schedule, _process, _samplers])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
