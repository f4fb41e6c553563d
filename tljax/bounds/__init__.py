"""tljax.bounds: sound interval and CROWN / alpha-CROWN bounds over jaxprs, and certificates."""

from typing import TYPE_CHECKING

from ..core import lazy_exports
from . import _taylor_check  # noqa: F401  (registers the exact checker of "taylor" certificates)
from ._api import METHODS as METHODS
from ._api import bound as bound
from ._api import relu_shapes as relu_shapes
from ._api import trace_boxed as trace_boxed
from ._box import Bounds as Bounds
from ._box import Box as Box
from ._certificate import Certificate as Certificate
from ._certificate import SplitParams as SplitParams
from ._certificate import check as check
from ._crown import refine_cost as refine_cost
from ._crown import refine_plan as refine_plan
from ._float_model import ProgramModel as ProgramModel
from ._relax import Options as Options
from ._relax import relax_relu as relax_relu
from ._relax import relax_smooth as relax_smooth
from ._relax import relax_unary as relax_unary
from ._rules import RULES as RULES
from ._rules import BoundRule as BoundRule
from ._rules import Kind as Kind
from ._rules import UnaryRule as UnaryRule
from ._rules import register as register
from ._rules import registered as registered
from ._session import REFINE_FLOOR as REFINE_FLOOR
from ._session import REFINE_RATIO as REFINE_RATIO
from ._session import Problem as Problem
from ._session import available_memory as available_memory
from ._session import prepare as prepare
from ._smooth import SMOOTH as SMOOTH
from ._smooth import Smooth as Smooth
from ._taylor import TAYLOR_MAX_INPUTS as TAYLOR_MAX_INPUTS

# Multi-device bounds load when first used: a single-device bound never needs them.
_LAZY = {"batch_mesh": "._sharding", "bound_sharded": "._sharding"}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # the same names, for type checkers and editors
    from ._sharding import batch_mesh as batch_mesh
    from ._sharding import bound_sharded as bound_sharded
