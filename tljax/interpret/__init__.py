"""tljax.interpret: one module per semantics, each a rule table over the one walker."""

import importlib

from ._compare import Comparison as Comparison
from ._compare import compare as compare
from ._exact import Enclosure as Enclosure
from ._exact import ExactArray as ExactArray
from ._exact import ExactDomainError as ExactDomainError
from ._exact import exact_semantics as exact_semantics
from ._exact import exact_to_float as exact_to_float
from ._exact import is_exact as is_exact
from ._exact import to_sympy as to_sympy
from ._exact import ulp_distance as ulp_distance
from ._float import FloatOptions as FloatOptions
from ._float import float_semantics as float_semantics
from ._reference import reference as reference
from ._registry import coverage as coverage
from ._registry import evaluate as evaluate
from ._registry import get_semantics as get_semantics
from ._registry import register_rule as register_rule
from ._registry import register_semantics as register_semantics
from ._registry import register_semantics_factory as register_semantics_factory
from ._registry import run as run
from ._rounding import FORMATS as FORMATS
from ._rounding import Format as Format
from ._rounding import get_format as get_format
from ._rounding import round_to_format as round_to_format

register_semantics(reference)

# The symbolic semantics imports sympy: its helpers load when first used, so `import tljax`
# stays free of sympy (see tljax/__init__.py).
_LAZY = {"as_object_array": "_symbolic", "round_fraction": "_symbolic"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
