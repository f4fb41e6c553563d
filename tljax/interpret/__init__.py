"""tljax.interpret: one module per semantics, each a rule table over the one walker."""

from ._reference import reference as reference
from ._registry import evaluate as evaluate
from ._registry import get_semantics as get_semantics
from ._registry import register_rule as register_rule
from ._registry import register_semantics as register_semantics
from ._registry import register_semantics_factory as register_semantics_factory
from ._registry import run as run

register_semantics(reference)
