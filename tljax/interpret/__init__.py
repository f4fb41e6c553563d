"""tljax.interpret: one module per semantics, each a rule table over the one walker."""

from typing import TYPE_CHECKING

from ..core import lazy_exports
from ._numpy import evaluate_numpy as evaluate_numpy
from ._numpy import numpy_covers as numpy_covers
from ._numpy import numpy_semantics as numpy_semantics
from ._numpy import xla_exact_rules as xla_exact_rules
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

# The exact (python-flint), float and symbolic (sympy) semantics and `compare` load when first
# used: bounds need only the formats, and `get_semantics` imports the built-in semantics itself.
_LAZY = {
    "Comparison": "._compare",
    "compare": "._compare",
    "Enclosure": "._exact",
    "ExactArray": "._exact",
    "ExactDomainError": "._exact",
    "exact_semantics": "._exact",
    "exact_to_float": "._exact",
    "is_exact": "._exact",
    "to_sympy": "._exact",
    "ulp_distance": "._exact",
    "FloatOptions": "._float",
    "float_semantics": "._float",
    "as_object_array": "._symbolic",
    "round_fraction": "._symbolic",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # the same names, for type checkers and editors
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
    from ._symbolic import as_object_array as as_object_array
    from ._symbolic import round_fraction as round_fraction
