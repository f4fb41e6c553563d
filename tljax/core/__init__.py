"""tljax.core: tracing, the one jaxpr walker, semantics records, errors."""

from . import _jaxpr_compat as compat
from ._errors import CertificateError as CertificateError
from ._errors import InputError as InputError
from ._errors import InvalidBoxError as InvalidBoxError
from ._errors import ParseError as ParseError
from ._errors import RuleError as RuleError
from ._errors import ShapeMismatchError as ShapeMismatchError
from ._errors import TljaxError as TljaxError
from ._errors import UnsupportedPrimitiveError as UnsupportedPrimitiveError
from ._graph import Graph as Graph
from ._graph import iter_eqns as iter_eqns
from ._graph import trace as trace
from ._semantics import Semantics as Semantics
from ._typed import typed as typed
from ._walker import HIGHER_ORDER as HIGHER_ORDER
from ._walker import Context as Context
from ._walker import bind as bind
from ._walker import eval_closed as eval_closed
from ._walker import eval_eqn as eval_eqn
from ._walker import eval_jaxpr as eval_jaxpr
from ._walker import where as where
