"""Claims about tljax's domain packages, one module per topic.

Importing this package registers every claim in it with `tljax.proofs` (`tljax.proofs` imports
it). The topic modules import the public API of the package they speak of; those packages never
import `tljax.proofs`.
"""

from . import diffusion as diffusion
from . import objectives as objectives
from . import rl as rl
