"""tljax.proofs: machine-checked claims about the same jaxprs that run."""

from ._audit import AuditCase as AuditCase
from ._audit import AuditRow as AuditRow
from ._audit import audit_rules as audit_rules
from ._audit import audit_totals as audit_totals
from ._audit import format_audit as format_audit
from ._claims import Claim as Claim
from ._claims import Evidence as Evidence
from ._claims import OverclaimError as OverclaimError
from ._claims import Result as Result
from ._claims import check as check
from ._claims import check_all as check_all
from ._claims import claim as claim
from ._claims import format_table as format_table
from ._claims import register as register
from ._claims import registry as registry
from ._claims import run_claim as run_claim
from ._claims import scope_problems as scope_problems
from ._grad import GradCheck as GradCheck
from ._grad import check_grad as check_grad
from ._symbolic_api import bindings as bindings
from ._symbolic_api import substitute as substitute
from ._symbolic_api import symbolic as symbolic
from ._symbolic_api import symbols as symbols
