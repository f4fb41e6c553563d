"""tljax.diffusion: discrete-time Gaussian diffusion (DDPM / DDIM / probability-flow ODE).

Schedules are frozen pytrees of tables indexed by t = 0..T (0 = data); samplers are pure
`(init, step)` pairs run by `sample` with `lax.scan`. Claims about the formulas live in
`tljax.proofs.claims.diffusion`; `tljax.diffusion` imports core only.
"""

from ._example import Distances as Distances
from ._example import ToyDenoiser as ToyDenoiser
from ._example import ToyDiffusionResult as ToyDiffusionResult
from ._example import batched as batched
from ._example import time_embedding as time_embedding
from ._example import toy_data as toy_data
from ._example import train_toy_diffusion as train_toy_diffusion
from ._losses import epsilon_loss as epsilon_loss
from ._losses import score_matching_loss as score_matching_loss
from ._losses import training_inputs as training_inputs
from ._losses import v_loss as v_loss
from ._metrics import median_bandwidth as median_bandwidth
from ._metrics import mmd_gaussian as mmd_gaussian
from ._metrics import sliced_wasserstein as sliced_wasserstein
from ._process import PARAMETERIZATIONS as PARAMETERIZATIONS
from ._process import convert_core as convert_core
from ._process import convert_prediction as convert_prediction
from ._process import q_mean_variance as q_mean_variance
from ._process import q_posterior_mean_variance as q_posterior_mean_variance
from ._process import q_sample as q_sample
from ._samplers import Sampler as Sampler
from ._samplers import SamplerState as SamplerState
from ._samplers import ddim_coefficients as ddim_coefficients
from ._samplers import ddim_sampler as ddim_sampler
from ._samplers import ddpm_sampler as ddpm_sampler
from ._samplers import probability_flow_sampler as probability_flow_sampler
from ._samplers import sample as sample
from ._samplers import spaced_timesteps as spaced_timesteps
from ._schedule import Schedule as Schedule
from ._schedule import StepCoefficients as StepCoefficients
from ._schedule import cosine_betas as cosine_betas
from ._schedule import cosine_schedule as cosine_schedule
from ._schedule import linear_betas as linear_betas
from ._schedule import linear_schedule as linear_schedule
from ._schedule import posterior_coefficients as posterior_coefficients
from ._schedule import schedule_from_betas as schedule_from_betas
