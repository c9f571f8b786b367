"""Training check: SGD on mnist1d over a grid of learning rates (vmapped) at several depths.

For each depth L, the mean-field MLP is trained for `epochs` with every learning rate of the grid
at once (`vmap` over the rate); the largest rate that does not diverge and the best rate are read
off, and a rate tuned at L_base is carried to other depths either fixed or scaled by
(L / L_base)^(-3/2).

Training uses the optimizer users are given, `rule.depth_scaled_sgd` (optax), so the check
exercises the rule itself; per-layer multipliers (the hidden layers only, by default) go on top.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mup_depth import one_step
from mup_depth import parameterisation as mlp
from mup_depth import rule


def _ce_loss(params, x, y):
  logits = mlp.apply(params, x)
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def scale_layers(lr_multipliers) -> optax.GradientTransformation:
  """Multiplies each layer's update ({'first', 'hidden', 'readout'}) by its multiplier; 0 freezes
  the layer (one_step.HIDDEN_ONLY trains the hidden stack only, as the one-step measurement)."""
  return optax.stateless(lambda updates, params: {k: u * lr_multipliers[k]
                                                  for k, u in updates.items()})


def optimizer(learning_rate, depth: int, base_depth: int,
              lr_multipliers=one_step.HIDDEN_ONLY) -> optax.GradientTransformation:
  """The per-layer multipliers, then rule.depth_scaled_sgd on the mean-field MLP (hidden stack
  scaled by (L / L_base)^(-3/2)). With base_depth == depth the factor is exactly 1: the hidden
  layers step with `learning_rate` itself, p <- p - learning_rate * multiplier * grad.

  The multipliers come first so that the learning rate's multiply is the last before the add:
  XLA (on CPU, checked) then fuses p - lr * (m * g) into one multiply-add and the losses are
  bitwise those of the hand-written SGD loop this replaced. In the other order they differ in the
  last bit, which runs near the edge of stability amplify into a different largest stable rate.
  """
  return optax.chain(scale_layers(lr_multipliers),
                     rule.depth_scaled_sgd(learning_rate, depth, base_depth,
                                           is_hidden=rule.mean_field_hidden))


@functools.partial(jax.jit, static_argnames=('width', 'depth', 'base_depth', 'num_classes'))
def _train_grid(key, x, y, batch_rows, lrs, lr_multipliers, *, width, depth, base_depth,
                num_classes):
  """Loss per step (grid, steps) for every learning rate of `lrs`, same init and batches."""
  params0 = mlp.init(key, x.shape[-1], width, depth, num_classes)

  def run(lr):
    tx = optimizer(lr, depth, base_depth, lr_multipliers)

    def step(carry, rows):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(_ce_loss)(params, x[rows], y[rows])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss

    _, losses = jax.lax.scan(step, (params0, tx.init(params0)), batch_rows)
    return losses

  return jax.vmap(run)(lrs)


def train_grid(arrays, width: int, depth: int, lrs, *, batch_size: int = 32, epochs: int = 1,
               seed: int = 0, lr_multipliers=one_step.HIDDEN_ONLY,
               base_depth: int | None = None) -> np.ndarray:
  """(len(lrs), steps) training losses.

  `lrs` are the hidden layers' rates at `base_depth`; at `depth` they step with
  lrs * (depth / base_depth)^(-3/2) (rule.depth_scaled_sgd). None (default): base_depth = depth,
  so `lrs` are the hidden rates themselves.
  """
  mlp.check_shape(width, depth)
  base_depth = depth if base_depth is None else base_depth
  x = jnp.asarray(arrays['inputs'].reshape(len(arrays['inputs']), -1), jnp.float32)
  y = jnp.asarray(arrays['label'], jnp.int32)
  if not 1 <= batch_size <= len(y) or epochs < 1:
    raise ValueError(f'Need 1 <= batch_size <= examples ({len(y)}) and epochs >= 1, got '
                     f'batch_size={batch_size}, epochs={epochs}.')
  if np.size(lrs) == 0 or np.ndim(lrs) != 1:
    raise ValueError(f'lrs must be a non-empty 1-D grid of learning rates, got shape '
                     f'{np.shape(lrs)}.')
  rng = np.random.default_rng(seed)
  steps_per_epoch = len(y) // batch_size
  rows = np.concatenate([rng.permutation(len(y))[:steps_per_epoch * batch_size]
                         .reshape(steps_per_epoch, batch_size) for _ in range(epochs)])
  lrs = jnp.asarray(lrs, jnp.float32)
  mult = {k: jnp.float32(v) for k, v in lr_multipliers.items()}
  return np.asarray(_train_grid(jax.random.key(seed), x, y, jnp.asarray(rows), lrs, mult,
                                width=width, depth=depth, base_depth=base_depth,
                                num_classes=int(y.max()) + 1))


def summarise(lrs, losses: np.ndarray, initial_loss: float, tail: float = 0.2,
              margin: float = 1e-3) -> dict:
  """Final loss per rate (mean of the last `tail` of steps), the best and largest stable rates.

  The best rate has the lowest final loss. Going up the grid from it, the first rate whose final
  loss is non-finite or no better than the initial (chance) loss diverged, and the largest stable
  rate is the one before it: a run that blew up and then sat at chance, all ReLUs dead, counts as
  diverged.
  """
  lrs = np.asarray(lrs)
  k = max(1, int(losses.shape[1] * tail))
  final = losses[:, -k:].mean(1)
  final = np.where(np.isfinite(final), final, np.inf)
  if not np.isfinite(final).any() or final.min() >= initial_loss - margin:
    return {'final_loss': final.tolist(), 'max_stable_lr': float('nan'), 'best_lr': float('nan'),
            'best_loss': float('nan'), 'best_at_grid_edge': False, 'never_learned': True}
  best = int(np.argmin(final))
  bad = final >= initial_loss - margin
  above = np.nonzero(bad[best:])[0]
  last_stable = best + above[0] - 1 if len(above) else len(lrs) - 1
  return {
      'final_loss': final.tolist(),
      'max_stable_lr': float(lrs[last_stable]),
      'best_lr': float(lrs[best]),
      'best_loss': float(final[best]),
      'best_at_grid_edge': best in (0, len(lrs) - 1),
      'never_learned': False,
  }


def loss_at(lrs, final_loss, lr: float) -> float:
  """The final loss at the grid rate nearest to `lr` in log scale (inf past the grid)."""
  lrs = np.asarray(lrs)
  if not lrs.min() / 1.5 <= lr <= lrs.max() * 1.5:
    return float('inf')
  return float(np.asarray(final_loss)[np.argmin(np.abs(np.log(lrs) - np.log(lr)))])


def transfer(lrs, per_depth: dict[int, dict], base_depth: int) -> dict:
  """Carries the best rate at base_depth to other depths: fixed, or scaled by (L/L_base)^-1.5."""
  base = per_depth[base_depth]['best_lr']
  rows = {}
  for depth, s in per_depth.items():
    if depth == base_depth:
      continue
    scaled = base * rule.depth_multiplier(depth, base_depth)
    rows[depth] = {'fixed_lr': base, 'fixed_loss': loss_at(lrs, s['final_loss'], base),
                   'scaled_lr': scaled, 'scaled_loss': loss_at(lrs, s['final_loss'], scaled),
                   'best_loss': s['best_loss']}
  wins = sum(r['scaled_loss'] < r['fixed_loss'] for r in rows.values())
  ties = sum(r['scaled_loss'] == r['fixed_loss'] for r in rows.values())
  return {'per_depth': rows, 'scaled_wins': int(wins), 'ties': int(ties), 'depths': len(rows),
          'mean_fixed_loss': float(np.mean([r['fixed_loss'] for r in rows.values()])),
          'mean_scaled_loss': float(np.mean([r['scaled_loss'] for r in rows.values()])),
          'scaled_transfers_better': bool(wins > (len(rows) - ties) / 2)}


def slope(depths, values) -> float:
  """The log-log slope of values against depth (NaN when fewer than two finite points)."""
  d, v = np.asarray(depths, float), np.asarray(values, float)
  ok = np.isfinite(v) & (v > 0)
  if ok.sum() < 2:
    return float('nan')
  return float(np.polyfit(np.log(d[ok]), np.log(v[ok]), 1)[0])
