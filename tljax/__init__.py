"""tljax: one jaxpr, many semantics. Execute, emulate, bound and verify the same traced program."""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Every name and subpackage loads when first used, so `import tljax` (and the command line, whose
# entry point lives in this package) costs no `import jax`; the first `tljax.bound` pays for
# jax and tljax.bounds, and sympy, python-flint's exact semantics, onnx, optax, ... wait for the
# code that needs them.
_EXPORTS = {
    "Bounds": "bounds",
    "Box": "bounds",
    "bound": "bounds",
    "bound_sharded": "bounds",
    "Graph": "core",
    "Semantics": "core",
    "TljaxError": "core",
    "UnsupportedPrimitiveError": "core",
    "check_kernel": "core",
    "kernel": "core",
    "kernel_contracts": "core",
    "trace": "core",
    "typed": "core",
    "Format": "interpret",
    "compare": "interpret",
    "evaluate": "interpret",
    "exact_to_float": "interpret",
    "float_semantics": "interpret",
    "get_semantics": "interpret",
    "is_exact": "interpret",
    "register_rule": "interpret",
    "round_to_format": "interpret",
    "train": "objectives",
    "validate": "transforms",
}
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
        "sciml",
        "transforms",
        "verify",
    ]
)


def __getattr__(name: str):
    # plain importlib, not tljax.core's helper: importing tljax.core would import jax
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later reads skip __getattr__
        return value
    raise AttributeError(f"module 'tljax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBPACKAGES | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, for type checkers and editors
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
    from .objectives import train as train
    from .transforms import validate as validate
