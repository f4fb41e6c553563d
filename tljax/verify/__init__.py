"""tljax.verify: decide VNN-LIB properties of networks (falsification, bounds, branch and bound).

`verify(fn, prop, *args)` returns a `Result` whose verdict is

- "unsat": no input of any case box reaches the unsafe set, for the float32 program as executed
  and for the real-valued network; `result.certificate` holds the search leaves (boxes, ReLU
  splits, certified bounds, optionally per-leaf bound certificates);
- "sat": `result.counterexample` is a float32 input whose float32 (XLA) output violates the
  property, tested exactly; `counterexample.float_only` says when the exact (real-valued) output
  does not (a violation of the program as it runs). With `semantics="real"` both must violate it
  (a candidate on which they disagree is rejected);
- "unknown" or "timeout".

`result.check()` re-verifies either verdict (coverage of the leaves is checked exactly by
`check_cover`). `load_instance` reads a VNN-COMP instance; the command lines are
`tljax verify` and `tljax run-instances` (`tljax.verify._cli`).

Example:
  >>> from tljax.verify import load_instance, verify
  >>> fn, prop, args, shape = load_instance("acasxu/onnx/ACASXU_run2a_1_5_batch_2000.onnx",
  ...                                       "acasxu/vnnlib/prop_3.vnnlib")  # doctest: +SKIP
  >>> res = verify(fn, prop, *args, input_shape=shape, timeout=116)  # doctest: +SKIP
  >>> res.verdict, res.check().accepted  # doctest: +SKIP
  ('unsat', True)
"""

from ._api import verify as verify
from ._attack import Counterexample as Counterexample
from ._cli import main_run_instances as main_run_instances
from ._cli import main_verify as main_verify
from ._cli import run_parser as run_parser
from ._cli import verify_parser as verify_parser
from ._coverage import check_cover as check_cover
from ._instances import load_instance as load_instance
from ._instances import load_network as load_network
from ._result import CheckReport as CheckReport
from ._result import GroupLeaves as GroupLeaves
from ._result import Result as Result
from ._result import SearchCertificate as SearchCertificate
