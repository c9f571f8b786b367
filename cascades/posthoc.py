"""Post-hoc deferral: a small model g, fitted on held-out data, scores inputs from h1's outputs only.

h2 is run on the held-out set to build the targets, never at decision time. Features of h1
(sorted probabilities, max, entropy, margin, one-hot of the argmax) let g learn class-dependent
deferral. Targets ([recon] of the paper's):

    diff_01    z = 1[h2 right] - 1[h1 right]           squared loss
    diff_prob  z = p2(y) - p1(y)                        squared loss
    bin_01     z = 1[h2 right and h1 wrong]             logistic loss
    bin_prob   z = (p2(y) - p1(y) + 1) / 2 in [0, 1]    logistic loss (soft labels)

Defer where g(x) is high.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cascades import deferral

TARGETS = ('diff_01', 'diff_prob', 'bin_01', 'bin_prob')


def _check_positive_int(name: str, value) -> None:
  if isinstance(value, bool) or int(value) != value or value < 1:
    raise deferral.CascadesInputError(f'{name} must be a positive integer, got {value!r}.')


def _check_kind(kind: str) -> None:
  if kind not in TARGETS:
    raise deferral.CascadesInputError(f'Unknown target {kind!r}; use {TARGETS}.')


def features(probs1, top_k: int = 5) -> np.ndarray:
  """[top-k sorted probabilities, max, entropy, margin, one-hot argmax] of h1's outputs."""
  _check_positive_int('top_k', top_k)
  p = deferral.check_probs(probs1, 'probs1')
  k = min(top_k, p.shape[1])
  sorted_p = -np.sort(-p, axis=1)[:, :k]
  one_hot = np.eye(p.shape[1])[p.argmax(1)]
  return np.concatenate([sorted_p, p.max(1, keepdims=True),
                         deferral.entropy_score(p)[:, None],
                         -deferral.margin_score(p)[:, None], one_hot], axis=1).astype(np.float32)


def targets(kind: str, probs1, probs2, labels) -> np.ndarray:
  """g's regression (or logistic) target per held-out example, (N,) float32."""
  _check_kind(kind)
  p1, p2 = deferral.check_probs_list([probs1, probs2], names=('probs1', 'probs2'))
  y = deferral.check_labels(labels, p1.shape[0], p1.shape[1])
  c1 = (p1.argmax(1) == y).astype(np.float32)
  c2 = (p2.argmax(1) == y).astype(np.float32)
  py1, py2 = p1[np.arange(len(y)), y], p2[np.arange(len(y)), y]
  if kind == 'diff_01':
    return c2 - c1
  if kind == 'diff_prob':
    return (py2 - py1).astype(np.float32)
  if kind == 'bin_01':
    return ((c2 > 0) & (c1 == 0)).astype(np.float32)
  return ((py2 - py1 + 1) / 2).astype(np.float32)  # bin_prob


class ScoreMLP(nn.Module):
  widths: tuple[int, ...] = (64, 64)

  @nn.compact
  def __call__(self, x):
    for w in self.widths:
      x = nn.relu(nn.Dense(w)(x))
    return nn.Dense(1)(x)[:, 0]


@dataclasses.dataclass
class PostHocRule:
  """A fitted g: `score(probs1)` ranks inputs for deferral."""
  kind: str
  params: dict
  widths: tuple[int, ...]
  top_k: int
  mean: np.ndarray
  std: np.ndarray
  num_classes: int  # of the h1 it was fitted on: its features depend on it

  def score(self, probs1) -> np.ndarray:
    """(N,) deferral scores for h1's probabilities (N, num_classes)."""
    p = deferral.check_probs(probs1, 'probs1', self.num_classes)
    x = (features(p, self.top_k) - self.mean) / self.std
    return np.asarray(_apply(self.widths, self.params, jnp.asarray(x)), np.float64)


@functools.partial(jax.jit, static_argnums=0)
def _apply(widths, params, x):
  return ScoreMLP(widths).apply(params, x)


@functools.partial(jax.jit, static_argnames=('widths', 'logistic', 'steps'))
def _fit(key, x, z, *, widths, logistic, steps, learning_rate, weight_decay):
  model = ScoreMLP(widths)
  params = model.init(key, x[:1])
  tx = optax.adamw(learning_rate, weight_decay=weight_decay)

  def loss_fn(params):
    out = model.apply(params, x)
    if logistic:
      return jnp.mean(optax.sigmoid_binary_cross_entropy(out, z))
    return jnp.mean((out - z) ** 2)

  def step(carry, _):
    params, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  return params, losses


def fit(kind: str, probs1, probs2, labels, *, widths=(64, 64), top_k: int = 5, steps: int = 500,
        learning_rate: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0) -> PostHocRule:
  """Fits g on a held-out set (full-batch AdamW)."""
  for name, value in (('steps', steps), ('top_k', top_k), *((f'widths[{i}]', w)
                                                            for i, w in enumerate(widths))):
    _check_positive_int(name, value)
  z = targets(kind, probs1, probs2, labels)
  x = features(probs1, top_k)
  mean, std = x.mean(0), x.std(0) + 1e-6
  params, _ = _fit(jax.random.key(seed), jnp.asarray((x - mean) / std), jnp.asarray(z),
                   widths=tuple(widths), logistic=kind.startswith('bin'), steps=steps,
                   learning_rate=learning_rate, weight_decay=weight_decay)
  return PostHocRule(kind, params, tuple(widths), top_k, mean, std,
                     num_classes=np.shape(probs1)[1])
