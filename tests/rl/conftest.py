import warnings

import pytest


def _optional(name):
    # rlax/distrax import deprecated jax names; keep that noise out of the test run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(name)


@pytest.fixture(scope="session")
def rlax():
    """The rlax reference implementation, or skip (optional test dependency)."""
    return _optional("rlax")


@pytest.fixture(scope="session")
def distrax():
    """The distrax reference implementation, or skip (optional test dependency)."""
    return _optional("distrax")
