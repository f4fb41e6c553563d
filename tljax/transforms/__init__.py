"""tljax.transforms: Graph -> Graph passes over the shared jaxpr, each validated against its input.

Passes are rule tables over the one walker (`tljax.core.eval_jaxpr`), re-emitting equations while
`jax.make_jaxpr` traces the walk; every result is an ordinary `tljax.Graph`. Each pass records
what it did and what it promises (`Promise`) in a side table (`provenance`), and `validate` checks
the promise on inputs (exact semantics, float execution, emulation) and certifies the deviation
over a box with CROWN.
"""

from ._build import emit as emit
from ._build import emit_constant as emit_constant
from ._build import is_traced as is_traced
from ._build import pass_semantics as pass_semantics
from ._build import rewrite as rewrite
from ._fold import fold_affine as fold_affine
from ._kernels import substitute_kernels as substitute_kernels
from ._passes import ROUNDING_TOLERANCE as ROUNDING_TOLERANCE
from ._passes import constant_fold as constant_fold
from ._passes import cse as cse
from ._passes import dce as dce
from ._passes import inline as inline
from ._passes import unroll as unroll
from ._pipeline import PASSES as PASSES
from ._pipeline import SIMPLIFY as SIMPLIFY
from ._pipeline import apply as apply
from ._precision import lower_precision as lower_precision
from ._precision import relax_rounding as relax_rounding
from ._promises import Promise as Promise
from ._promises import compose as compose
from ._provenance import PassRecord as PassRecord
from ._provenance import Provenance as Provenance
from ._provenance import provenance as provenance
from ._roundtrip import OnnxCheck as OnnxCheck
from ._roundtrip import check_onnx as check_onnx
from ._roundtrip import export_roundtrip as export_roundtrip
from ._roundtrip import onnx_graph as onnx_graph
from ._validate import Mismatch as Mismatch
from ._validate import Stage as Stage
from ._validate import Validation as Validation
from ._validate import for_bounds as for_bounds
from ._validate import validate as validate

_REMOVED = {
    "FloatFormat": (
        "tljax.transforms.FloatFormat was removed: formats are tljax.interpret.Format, named ones "
        "come from the one registry, tljax.interpret.get_format('bf16')"
    ),
}


def __getattr__(name: str):
    if name in _REMOVED:
        raise AttributeError(_REMOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
