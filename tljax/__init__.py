"""tljax: one jaxpr, many semantics. Execute, emulate, bound and verify the same traced program."""

__version__ = "0.1.0"

from . import diffusion as diffusion
from . import io as io
from . import layers as layers
from . import objectives as objectives
from . import proofs as proofs
from . import rl as rl
from . import transforms as transforms
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
