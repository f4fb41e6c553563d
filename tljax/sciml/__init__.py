"""Scientific ML and control: certified PINN residuals and Lyapunov stability of neural
controllers, on `tljax.bounds` and `tljax.verify`.

- `certify_pinn`: sup |residual|, initial and boundary errors of a physics-informed network over
  its whole domain, by adaptive input branching with float-sound leaf bounds (`_pinn.py`).
- `load_closed_loop`, `verify_lyapunov`, `verify_lyapunov_continuous`: a neural controller's
  closed loop and its Lyapunov conditions, verified by `tljax.verify` (`_control.py`).
"""

from ._control import *  # noqa: F403
from ._control import __all__ as _control_all
from ._pinn import *  # noqa: F403
from ._pinn import __all__ as _pinn_all

__all__ = [*_control_all, *_pinn_all]
