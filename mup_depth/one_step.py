"""One gradient step and the mean squared change of a layer's pre-activations it causes.

    M(eta) = E[(z_l(theta - eta * lr * g) - z_l(theta))^2]     exact: apply the step
    M(eta) ~ eta^2 * A,  A = E[(J_l (lr * g))^2]               linearised: one JVP

averaged over the batch's inputs and the layer's neurons; `lr` holds per-layer multipliers of eta
(the card's measurement trains the hidden layers only). eta* is where M crosses a constant C:
closed form sqrt(C / A) when linearised, bisection in log-space when exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mup_depth import parameterisation as mlp

HIDDEN_ONLY = {'first': 0.0, 'hidden': 1.0, 'readout': 0.0}
ALL_LAYERS = {'first': 1.0, 'hidden': 1.0, 'readout': 1.0}


def step_direction(params, x, y, lr_multipliers=HIDDEN_ONLY):
  """-lr * grad of the squared loss: the update is eta times this."""
  grads = jax.grad(mlp.squared_loss)(params, x, y)
  return {k: -lr_multipliers[k] * g for k, g in grads.items()}


def change_exact(params, x, y, eta, *, layer: int = -1, lr_multipliers=HIDDEN_ONLY):
  """M(eta): the mean squared change of z_layer on the same inputs after one step of size eta."""
  direction = step_direction(params, x, y, lr_multipliers)
  stepped = jax.tree.map(lambda p, d: p + eta * d, params, direction)
  before = mlp.preactivations(params, x, layer)[0]
  after = mlp.preactivations(stepped, x, layer)[0]
  return jnp.mean((after - before) ** 2)


def linear_coefficient(params, x, y, *, layer: int = -1, lr_multipliers=HIDDEN_ONLY):
  """A with M(eta) = eta^2 A to first order: the JVP of z_layer along the step direction."""
  direction = step_direction(params, x, y, lr_multipliers)
  _, tangent = jax.jvp(lambda p: mlp.preactivations(p, x, layer)[0], (params,), (direction,))
  return jnp.mean(tangent ** 2)


def eta_star_linear(coefficient, threshold: float = 1.0):
  """sqrt(C / A): where the linearised change crosses C."""
  return jnp.sqrt(threshold / coefficient)


def bisect_log(fn, threshold: float, lo, hi, iterations: int = 50):
  """The eta in [lo, hi] where `fn` crosses `threshold` upwards, by bisection in log eta.

  Returns (eta, bracketed): `bracketed` is False when fn(lo) >= C or fn(hi) < C; eta is then NaN
  rather than an extrapolation. Works under vmap.
  """
  log_lo, log_hi = jnp.log(lo), jnp.log(hi)
  bracketed = (fn(lo) < threshold) & (fn(hi) >= threshold)

  def body(_, bounds):
    a, b = bounds
    mid = 0.5 * (a + b)
    above = fn(jnp.exp(mid)) >= threshold
    return jnp.where(above, a, mid), jnp.where(above, mid, b)

  a, b = jax.lax.fori_loop(0, iterations, body, (log_lo, log_hi))
  eta = jnp.exp(0.5 * (a + b))
  return jnp.where(bracketed, eta, jnp.nan), bracketed


def first_crossing(fn, threshold: float, grid, iterations: int = 30):
  """The first upward crossing of `threshold` along the increasing `grid` of eta, then bisection.

  The exact change is not monotone at large eta (a step that kills every ReLU saturates it), so
  the crossing that matters is the first one; a grid that never crosses gives NaN.
  """
  values = jax.lax.map(fn, grid)
  above = values >= threshold
  first = jnp.argmax(above)  # index of the first grid point at or above C
  ok = jnp.any(above) & (first > 0)
  lo = grid[jnp.maximum(first - 1, 0)]
  hi = grid[first]
  eta, bracketed = bisect_log(fn, threshold, lo, hi, iterations)
  return jnp.where(ok & bracketed, eta, jnp.nan), ok & bracketed


def eta_star_exact(params, x, y, *, threshold: float = 1.0, guess=None, span: int = 8,
                   layer: int = -1, lr_multipliers=HIDDEN_ONLY, iterations: int = 30):
  """eta* from the exact one-step change: (eta, bracketed).

  The search grid is guess * 2^k for k in [-span, span]; the default guess is the linearised
  eta*, which the exact one matches to first order.
  """
  if guess is None:
    guess = eta_star_linear(linear_coefficient(params, x, y, layer=layer,
                                               lr_multipliers=lr_multipliers), threshold)
  grid = guess * 2.0 ** jnp.arange(-span, span + 1, dtype=jnp.float32)
  fn = lambda eta: change_exact(params, x, y, eta, layer=layer, lr_multipliers=lr_multipliers)
  return first_crossing(fn, threshold, grid, iterations)
