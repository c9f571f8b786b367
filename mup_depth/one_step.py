"""One gradient step and the mean squared change of a layer's pre-activations it causes.

    M(eta) = E[(z_l(theta - eta * lr * g) - z_l(theta))^2]     exact: apply the step
    M(eta) ~ eta^2 * A,  A = E[(J_l (lr * g))^2]               linearised: one JVP

averaged over the batch's inputs and the layer's neurons; `lr` holds per-layer multipliers of eta
(the card's measurement trains the hidden layers only). eta* is where M crosses a constant C:
closed form sqrt(C / A) when linearised, bisection in log-space when exact.

The measurements are jitted (one compiled program per shape, whether called alone or inside the
sweep's vmapped program); `layer`, `span` and `iterations` are static.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mup_depth import parameterisation as mlp

HIDDEN_ONLY = {'first': 0.0, 'hidden': 1.0, 'readout': 0.0}
ALL_LAYERS = {'first': 1.0, 'hidden': 1.0, 'readout': 1.0}


@jax.jit
def step_direction(params, x, y, lr_multipliers=HIDDEN_ONLY):
  """-lr * grad of the squared loss: the update is eta times this."""
  grads = jax.grad(mlp.squared_loss)(params, x, y)
  return {k: -lr_multipliers[k] * g for k, g in grads.items()}


def _change_along(params, x, direction, before, eta, layer: int):
  """M(eta) along a fixed step direction, given z_layer before the step."""
  stepped = jax.tree.map(lambda p, d: p + eta * d, params, direction)
  return jnp.mean((mlp.preactivations(stepped, x, layer)[0] - before) ** 2)


def _coefficient_along(params, x, direction, layer: int):
  _, tangent = jax.jvp(lambda p: mlp.preactivations(p, x, layer)[0], (params,), (direction,))
  return jnp.mean(tangent ** 2)


@functools.partial(jax.jit, static_argnames=('layer',))
def change_exact(params, x, y, eta, *, layer: int = -1, lr_multipliers=HIDDEN_ONLY):
  """M(eta): the mean squared change of z_layer on the same inputs after one step of size eta."""
  direction = step_direction(params, x, y, lr_multipliers)
  before = mlp.preactivations(params, x, layer)[0]
  return _change_along(params, x, direction, before, eta, layer)


@functools.partial(jax.jit, static_argnames=('layer',))
def linear_coefficient(params, x, y, *, layer: int = -1, lr_multipliers=HIDDEN_ONLY):
  """A with M(eta) = eta^2 A to first order: the JVP of z_layer along the step direction."""
  return _coefficient_along(params, x, step_direction(params, x, y, lr_multipliers), layer)


def eta_star_linear(coefficient, threshold: float = 1.0):
  """sqrt(C / A): where the linearised change crosses C (+inf when A = 0: the step does not
  move z at first order)."""
  return jnp.sqrt(threshold / coefficient)


def _bisect(fn, threshold: float, log_lo, log_hi, iterations: int):
  """The midpoint, in log eta, of the bracket [lo, hi] narrowed `iterations` times."""

  def body(_, bounds):
    a, b = bounds
    mid = 0.5 * (a + b)
    above = fn(jnp.exp(mid)) >= threshold
    return jnp.where(above, a, mid), jnp.where(above, mid, b)

  a, b = jax.lax.fori_loop(0, iterations, body, (log_lo, log_hi))
  return jnp.exp(0.5 * (a + b))


def bisect_log(fn, threshold: float, lo, hi, iterations: int = 50):
  """The eta in [lo, hi] where `fn` crosses `threshold` upwards, by bisection in log eta.

  Returns (eta, bracketed): `bracketed` is False when fn(lo) >= C or fn(hi) < C; eta is then NaN
  rather than an extrapolation. Works under vmap.
  """
  bracketed = (fn(lo) < threshold) & (fn(hi) >= threshold)
  eta = _bisect(fn, threshold, jnp.log(lo), jnp.log(hi), iterations)
  return jnp.where(bracketed, eta, jnp.nan), bracketed


def first_crossing(fn, threshold: float, grid, iterations: int = 30):
  """The first upward crossing of `threshold` along the increasing `grid` of eta, then bisection.

  The exact change is not monotone at large eta (a step that kills every ReLU saturates it), so
  the crossing that matters is the first one; a grid that never crosses gives NaN. The grid's
  values bracket the crossing already (below C at the point before, at or above it at the
  first), so fn is not evaluated again at the ends.
  """
  values = jax.lax.map(fn, grid)
  above = values >= threshold
  first = jnp.argmax(above)  # index of the first grid point at or above C
  ok = jnp.any(above) & (first > 0)
  lo = grid[jnp.maximum(first - 1, 0)]
  hi = grid[first]
  eta = _bisect(fn, threshold, jnp.log(lo), jnp.log(hi), iterations)
  return jnp.where(ok, eta, jnp.nan), ok


@functools.partial(jax.jit, static_argnames=('span', 'layer', 'iterations'))
def coefficient_and_eta_star(params, x, y, *, threshold: float = 1.0, guess=None, span: int = 8,
                             layer: int = -1, lr_multipliers=HIDDEN_ONLY, iterations: int = 30):
  """(A, eta*, bracketed): the linearised coefficient and the exact eta* from one gradient.

  The step direction and z_layer before the step are computed once and shared by every
  evaluation of M(eta) in the search (a smaller program to compile than re-deriving them at each
  eta). See eta_star_exact for the search and the values returned.
  """
  direction = step_direction(params, x, y, lr_multipliers)
  before = mlp.preactivations(params, x, layer)[0]
  a = _coefficient_along(params, x, direction, layer)
  if guess is None:
    guess = eta_star_linear(a, threshold)
  grid = guess * 2.0 ** jnp.arange(-span, span + 1, dtype=jnp.float32)
  fn = lambda eta: _change_along(params, x, direction, before, eta, layer)
  eta, ok = first_crossing(fn, threshold, grid, iterations)
  moves = jnp.any(jnp.stack([jnp.any(d != 0) for d in jax.tree.leaves(direction)]))
  return a, jnp.where(moves, eta, jnp.inf), ok & moves


def eta_star_exact(params, x, y, *, threshold: float = 1.0, guess=None, span: int = 8,
                   layer: int = -1, lr_multipliers=HIDDEN_ONLY, iterations: int = 30):
  """eta* from the exact one-step change: (eta, bracketed).

  The search grid is guess * 2^k for k in [-span, span]; the default guess is the linearised
  eta*, which the exact one matches to first order. Values returned:
    (eta, True)       M crosses C at eta (the first crossing along the grid, then bisection);
    (NaN, False)      M moves but no crossing is bracketed within the grid;
    (+inf, False)     no step size moves z_layer at all: the step direction is zero (zero inputs
                      x, a zero residual f(x) = y, or every trained layer's multiplier 0), so
                      M(eta) = 0 < C for every eta. eta_star_linear gives +inf there too (A = 0).
  """
  _, eta, ok = coefficient_and_eta_star(params, x, y, threshold=threshold, guess=guess,
                                        span=span, layer=layer, lr_multipliers=lr_multipliers,
                                        iterations=iterations)
  return eta, ok
