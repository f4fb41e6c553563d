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


@pytest.fixture(scope="session")
def trained():
    """The default PPO run (seed 0), trained once per session and shared by the test files."""
    import jax

    from tljax import rl

    return rl.train_ppo(jax.random.key(0))
