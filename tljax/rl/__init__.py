"""tljax.rl: reinforcement learning as pure, unbatched JAX functions (rlax conventions) plus exact
checks.

- Finite MDPs as arrays (`MDP`), built-in environments (`gridworld`, `chain`, `random_mdp`) and a
  pure-JAX cart-pole (`cartpole_reset`, `cartpole_step`).
- Dynamic programming: Bellman operators, `value_iteration` (ε-optimal stopping rule),
  `policy_iteration`, and exact rational counterparts (`evaluate_policy_exact`, ...).
- Value learning and multi-step targets: `td_learning`, `q_learning`, `td_lambda`,
  `lambda_returns`, `n_step_returns`, `gae`, offline tabular TD(λ) in both views.
- Policy-gradient losses: `policy_gradient_loss`, `clipped_surrogate_loss`, `value_loss`,
  `entropy_loss`; a jit-compiled PPO example `train_ppo` on cart-pole.
- Certified policy regions live one floor up, in `tljax.proofs` (`certify_policy_region`,
  `policy_region_claim`), because they use `tljax.bound`; `sample_box` stays here.
- Distributions (`Categorical`, `Bernoulli`, `Normal`, `DiagGaussian`) and finite Markov kernels
  (composition, push-forward, stationary distributions, Metropolis-Hastings), float and exact.

Claims about these functions live in `tljax.proofs.claims.rl`; `tljax.rl` imports core only.
"""

from ._cartpole import DEFAULT_CARTPOLE_PARAMS as DEFAULT_CARTPOLE_PARAMS
from ._cartpole import CartPoleParams as CartPoleParams
from ._cartpole import cartpole_accelerations as cartpole_accelerations
from ._cartpole import cartpole_reset as cartpole_reset
from ._cartpole import cartpole_step as cartpole_step
from ._distributions import Bernoulli as Bernoulli
from ._distributions import Categorical as Categorical
from ._distributions import DiagGaussian as DiagGaussian
from ._distributions import Distribution as Distribution
from ._distributions import Normal as Normal
from ._envs import chain as chain
from ._envs import gridworld as gridworld
from ._envs import random_mdp as random_mdp
from ._exact import RationalMDP as RationalMDP
from ._exact import bellman_expectation_exact as bellman_expectation_exact
from ._exact import bellman_optimality_exact as bellman_optimality_exact
from ._exact import evaluate_policy_exact as evaluate_policy_exact
from ._exact import fraction_array as fraction_array
from ._exact import greedy_policy_exact as greedy_policy_exact
from ._exact import policy_iteration_exact as policy_iteration_exact
from ._exact import q_values_exact as q_values_exact
from ._exact import rational_mdp as rational_mdp
from ._exact import solve_exact as solve_exact
from ._exact import to_fraction as to_fraction
from ._exact import value_iteration_exact as value_iteration_exact
from ._kernels import FiniteKernel as FiniteKernel
from ._kernels import check_detailed_balance_exact as check_detailed_balance_exact
from ._kernels import compose as compose
from ._kernels import compose_exact as compose_exact
from ._kernels import compose_samplers as compose_samplers
from ._kernels import detailed_balance_gap as detailed_balance_gap
from ._kernels import is_stochastic as is_stochastic
from ._kernels import kernel_power as kernel_power
from ._kernels import kernel_sampler as kernel_sampler
from ._kernels import metropolis_hastings as metropolis_hastings
from ._kernels import metropolis_hastings_exact as metropolis_hastings_exact
from ._kernels import pushforward as pushforward
from ._kernels import stationary_distribution as stationary_distribution
from ._kernels import stationary_distribution_exact as stationary_distribution_exact
from ._losses import clipped_surrogate_loss as clipped_surrogate_loss
from ._losses import clipped_surrogate_objective as clipped_surrogate_objective
from ._losses import entropy_loss as entropy_loss
from ._losses import policy_gradient_loss as policy_gradient_loss
from ._losses import value_loss as value_loss
from ._mdp import MDP as MDP
from ._mdp import PolicyIterationResult as PolicyIterationResult
from ._mdp import ValueIterationResult as ValueIterationResult
from ._mdp import as_stochastic_policy as as_stochastic_policy
from ._mdp import bellman_expectation as bellman_expectation
from ._mdp import bellman_optimality as bellman_optimality
from ._mdp import greedy_policy as greedy_policy
from ._mdp import policy_evaluation as policy_evaluation
from ._mdp import policy_iteration as policy_iteration
from ._mdp import policy_transition_matrix as policy_transition_matrix
from ._mdp import q_values as q_values
from ._mdp import value_iteration as value_iteration
from ._multistep import discounted_returns as discounted_returns
from ._multistep import gae as gae
from ._multistep import lambda_returns as lambda_returns
from ._multistep import n_step_returns as n_step_returns
from ._ppo import PPOConfig as PPOConfig
from ._ppo import TrainResult as TrainResult
from ._ppo import evaluate_policy as evaluate_policy
from ._ppo import init_actor_critic as init_actor_critic
from ._ppo import policy_logit_margin_fn as policy_logit_margin_fn
from ._ppo import policy_logits as policy_logits
from ._ppo import state_value as state_value
from ._ppo import train_ppo as train_ppo
from ._regions import sample_box as sample_box
from ._value_learning import q_learning as q_learning
from ._value_learning import q_learning_tabular as q_learning_tabular
from ._value_learning import td_lambda as td_lambda
from ._value_learning import td_lambda_backward as td_lambda_backward
from ._value_learning import td_lambda_forward as td_lambda_forward
from ._value_learning import td_learning as td_learning
