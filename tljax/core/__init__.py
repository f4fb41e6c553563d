"""tljax.core: tracing, the one jaxpr walker, semantics records, errors."""

from typing import TYPE_CHECKING

from . import _jaxpr_compat, _processes
from ._errors import CertificateError as CertificateError
from ._errors import InputError as InputError
from ._errors import InvalidBoxError as InvalidBoxError
from ._errors import ParseError as ParseError
from ._errors import RuleError as RuleError
from ._errors import ShapeMismatchError as ShapeMismatchError
from ._errors import TljaxError as TljaxError
from ._errors import UnsupportedPrimitiveError as UnsupportedPrimitiveError
from ._graph import Graph as Graph
from ._graph import is_array_leaf as is_array_leaf
from ._graph import iter_eqns as iter_eqns
from ._graph import trace as trace
from ._json import load_json as load_json
from ._json import save_json as save_json
from ._kernel import Kernel as Kernel
from ._kernel import KernelCheck as KernelCheck
from ._kernel import KernelContract as KernelContract
from ._kernel import KernelContractError as KernelContractError
from ._kernel import KernelEvidence as KernelEvidence
from ._kernel import Tolerance as Tolerance
from ._kernel import check_kernel as check_kernel
from ._kernel import format_contracts as format_contracts
from ._kernel import kernel as kernel
from ._kernel import kernel_contracts as kernel_contracts
from ._kernel import kernel_p as kernel_p
from ._lazy import lazy_exports as lazy_exports
from ._lazy import optional_import as optional_import
from ._pooling import tree_max as tree_max
from ._pooling import window_slices as window_slices
from ._semantics import Semantics as Semantics
from ._walker import HIGHER_ORDER as HIGHER_ORDER
from ._walker import Context as Context
from ._walker import bind as bind
from ._walker import eval_closed as eval_closed
from ._walker import eval_eqn as eval_eqn
from ._walker import eval_jaxpr as eval_jaxpr
from ._walker import unsupported as unsupported
from ._walker import where as where

compat = _jaxpr_compat  # the one module with version-sensitive JAX knowledge, by its public name
processes = _processes  # process groups over jax.distributed (docs/multi_host.md)

# `typed` is for user code, never needed by a bound: it loads when first used.
__getattr__, __dir__ = lazy_exports(__name__, {"typed": "._typed"}, globals())

if TYPE_CHECKING:  # the same name, for type checkers and editors
    from ._typed import typed as typed
