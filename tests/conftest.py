import os
import pathlib

import jax
import pytest

jax.config.update("jax_enable_x64", False)
# Compile bound programs for compile speed (tests call many small ones); a test covers the default.
os.environ.setdefault("TLJAX_FAST_COMPILE", "1")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
BENCHMARKS = SHARED / "benchmarks"


@pytest.fixture
def benchmarks_dir():
    """`../shared/benchmarks` beside the repository, or skip with the reason."""
    if not BENCHMARKS.is_dir():
        pytest.skip(
            f"shared benchmark data not found at {BENCHMARKS} (expected ../shared beside the repo)"
        )
    return BENCHMARKS


def pytest_collection_modifyitems(config, items):
    has_gpu = any(d.platform == "gpu" for d in jax.devices()) if items else False
    skip_gpu = pytest.mark.skip(reason="needs a GPU (none present; CI has none)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


def pytest_xdist_auto_num_workers(config):
    # `-n auto` (pyproject addopts): one worker per core, at most 8 (each holds its own JAX caches)
    del config
    return max(1, min(os.cpu_count() or 1, 8))
