"""tljax.proofs: machine-checked claims about the same jaxprs that run.

The top floor of tljax: it owns the claims registry and every claim (`_library` for the
primitives and layers, `claims.<topic>` for rl, diffusion and objectives), and imports them here,
so `registry()` is complete once `tljax.proofs` is imported.
"""

# Imported for their side effect: they register their claims.
from . import _library as _library
from . import claims as claims
from ._audit import AuditCase as AuditCase
from ._audit import AuditRow as AuditRow
from ._audit import audit_rules as audit_rules
from ._audit import audit_totals as audit_totals
from ._audit import format_audit as format_audit
from ._claims import Claim as Claim
from ._claims import ClaimResult as ClaimResult
from ._claims import Evidence as Evidence
from ._claims import OverclaimError as OverclaimError
from ._claims import check as check
from ._claims import check_all as check_all
from ._claims import claim as claim
from ._claims import format_table as format_table
from ._claims import register as register
from ._claims import registry as registry
from ._claims import run_claim as run_claim
from ._claims import scope_problems as scope_problems
from ._cli import cli_main as cli_main
from ._cli import cli_parser as cli_parser
from ._grad import GradCheck as GradCheck
from ._grad import check_grad as check_grad
from ._policy_regions import PolicyRegionResult as PolicyRegionResult
from ._policy_regions import certify_policy_region as certify_policy_region
from ._policy_regions import check_nonnegative_numeric as check_nonnegative_numeric
from ._policy_regions import policy_region_claim as policy_region_claim
from ._symbolic_api import bindings as bindings
from ._symbolic_api import substitute as substitute
from ._symbolic_api import symbolic as symbolic
from ._symbolic_api import symbols as symbols
