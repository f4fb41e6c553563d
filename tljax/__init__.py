"""tljax: one jaxpr, many semantics. Execute, emulate, bound and verify the same traced program."""

import importlib

__version__ = "0.1.0"

from .bounds import Bounds as Bounds
from .bounds import Box as Box
from .bounds import bound as bound
from .bounds import bound_sharded as bound_sharded
from .core import Graph as Graph
from .core import Semantics as Semantics
from .core import TljaxError as TljaxError
from .core import UnsupportedPrimitiveError as UnsupportedPrimitiveError
from .core import check_kernel as check_kernel
from .core import kernel as kernel
from .core import kernel_contracts as kernel_contracts
from .core import trace as trace
from .core import typed as typed
from .interpret import Format as Format
from .interpret import compare as compare
from .interpret import evaluate as evaluate
from .interpret import exact_to_float as exact_to_float
from .interpret import float_semantics as float_semantics
from .interpret import get_semantics as get_semantics
from .interpret import is_exact as is_exact
from .interpret import register_rule as register_rule
from .interpret import round_to_format as round_to_format

# The model-side libraries, io and the claims load when first used (`tljax.rl`, ...): most
# sessions bound or evaluate a program and never pay for sympy, onnx or the claims registry.
_SUBPACKAGES = frozenset(
    [
        "bounds",
        "core",
        "diffusion",
        "interpret",
        "io",
        "layers",
        "objectives",
        "proofs",
        "rl",
        "transforms",
        "verify",
    ]
)
_LAZY = {"train": ("objectives", "train"), "validate": ("transforms", "validate")}


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        pkg, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{pkg}"), attr)
    raise AttributeError(f"module 'tljax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBPACKAGES | set(_LAZY))
