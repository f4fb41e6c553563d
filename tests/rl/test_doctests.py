"""The `>>>` examples in tljax.rl docstrings run and print what they claim."""

import doctest
import importlib

import pytest

# _ppo is left out: its example trains a policy (marked +SKIP; test_ppo.py covers it).
MODULES = ["_mdp", "_envs", "_exact", "_cartpole", "_multistep", "_distributions", "_kernels"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(f"tljax.rl.{name}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
