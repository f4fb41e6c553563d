"""tljax.proofs: machine-checked claims about the same jaxprs that run."""

from ._claims import Claim as Claim
from ._claims import Evidence as Evidence
from ._claims import Result as Result
from ._claims import check as check
from ._claims import check_all as check_all
from ._claims import claim as claim
from ._claims import format_table as format_table
from ._claims import register as register
from ._claims import registry as registry
