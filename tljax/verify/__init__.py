"""tljax.verify: decide VNN-LIB properties of networks (falsification, bounds, branch and bound).

`tljax.verify.verify(fn, prop, *args)` returns a `Result` with verdict "unsat" (with a
`Certificate`), "sat" (with a re-executed `Counterexample`), "unknown" or "timeout".
"""

from ._api import verify as verify
from ._attack import Counterexample as Counterexample
from ._coverage import check_cover as check_cover
from ._instances import load_instance as load_instance
from ._result import Certificate as Certificate
from ._result import CheckReport as CheckReport
from ._result import GroupLeaves as GroupLeaves
from ._result import Result as Result
