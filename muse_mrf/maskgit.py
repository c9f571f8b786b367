"""MaskGIT training and decoding for a masked-token backbone (common.models.MaskedTokenTransformer).

Training: a fraction gamma(r) of each example's tokens is masked, r ~ U[0, 1), gamma(r) =
cos(pi r / 2) (MaskGIT); cross-entropy on the masked tokens only, label smoothing 0.1. Muse
samples the rate from a truncated arccos density, p(rate) = 2 / (pi sqrt(1 - rate^2)) on [0, 1]:
that is the distribution of cos(pi r / 2) itself, drawn here by the inverse CDF from its own
uniform ('arccos'); 'linear' (gamma = 1 - r) is the MaskGIT paper's ablation.

Decoding, as the published MaskGIT decoder does it: T steps from an all-mask grid; at step t
(0-based) ratio = (t + 1) / T drives both the schedule and the noise; every unknown position is
sampled at temperature 1 and known tokens are kept; confidence = log p(sampled) + tau (1 - ratio)
Gumbel noise, known tokens +inf; floor(N0 cos(pi/2 ratio)) of them are re-masked (N0 the masked
count at the start; cos clipped to [1e-6, 1]; at least 1 and at most the unknown count - 1); the
output is the sample before the last re-masking. 64 tokens, 8 steps: 62, 59, 53, 45, 35, 24, 12
left masked after the steps before the last.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from muse_mrf import mrf as mrf_lib

SCHEDULES = ('cosine', 'arccos', 'linear')
DEFAULT_TAU = 4.5


class DecodingError(ValueError):
  """Decoding arguments that cannot work (T < 1, S' >= T, a grid the model does not have)."""


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------
def mask_rate(rng, shape, schedule: str = 'cosine', low: float = 0.0, high: float = 1.0):
  """Masking rates gamma(r), r ~ U[low, high) (a sub-range gives late-stage rates)."""
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown mask schedule {schedule!r}; use one of {SCHEDULES}.')
  if not 0.0 <= low < high <= 1.0:
    raise ValueError(f'r range [{low}, {high}) must lie in [0, 1] with low < high.')
  r = jax.random.uniform(rng, shape, minval=low, maxval=high)
  if schedule == 'cosine':
    return jnp.cos(math.pi / 2 * r)
  if schedule == 'arccos':
    # Inverse CDF of p(x) = 2 / (pi sqrt(1 - x^2)) on [0, 1]: F(x) = 1 - (2/pi) arccos(x).
    return jnp.cos(math.pi / 2 * (1.0 - r))[::-1] if False else jnp.sin(math.pi / 2 * (1.0 - r))
  return 1.0 - r


def random_mask(rng, num_tokens: int, rates) -> jax.Array:
  """(B, N) bool: ceil(rate * N) positions per row (clipped to [1, N]), chosen uniformly."""
  noise = jax.random.uniform(rng, (rates.shape[0], num_tokens))
  count = jnp.clip(jnp.ceil(rates * num_tokens), 1, num_tokens).astype(jnp.int32)
  ranks = jnp.argsort(jnp.argsort(noise, axis=-1), axis=-1)
  return ranks < count[:, None]


def make_loss_fn(model, *, schedule: str = 'cosine', label_smoothing: float = 0.1):
  """common.train's loss_fn for batches {'tokens': (B, N) int32, 'label': (B,) int32}."""

  def loss_fn(params, model_state, batch, rng):
    tokens = batch['tokens']
    rng_rate, rng_mask = jax.random.split(rng)
    rates = mask_rate(rng_rate, tokens.shape[:1], schedule)
    masked = random_mask(rng_mask, tokens.shape[1], rates)
    inputs = jnp.where(masked, model.mask_id, tokens)
    labels = batch.get('label') if model.num_classes else None
    logits = model.apply({'params': params}, inputs, labels)
    loss = mrf_lib.masked_cross_entropy(logits, tokens, masked, label_smoothing)
    accuracy = jnp.sum((logits.argmax(-1) == tokens) & masked) / jnp.maximum(masked.sum(), 1)
    return loss, ({'masked_accuracy': accuracy}, model_state)

  return loss_fn


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------
def check_steps(num_steps, backbone_steps=None) -> None:
  if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
    raise DecodingError(f'T={num_steps!r} decoding steps: expected a whole number >= 1.')
  if backbone_steps is not None and not 0 <= backbone_steps < num_steps:
    raise DecodingError(f"S'={backbone_steps} plain backbone steps before the MRF step: expected "
                        f"0 <= S' < T = {num_steps}.")


def mask_count(n0, unknown, step: int, num_steps: int):
  """How many of the unknown tokens are re-masked after step `step` (the published rule)."""
  ratio = (step + 1) / num_steps
  cos = jnp.clip(jnp.cos(math.pi / 2 * ratio), 1e-6, 1.0)
  count = jnp.floor(n0 * cos).astype(jnp.int32)
  count = jnp.maximum(1, jnp.minimum(unknown - 1, count))
  return jnp.where(unknown > 0, count, 0)


def schedule(num_tokens: int, num_steps: int) -> list[int]:
  """Tokens left masked after each step but the last, starting from all masked (host ints)."""
  check_steps(num_steps)
  left, out = num_tokens, []
  for t in range(num_steps - 1):
    left = int(mask_count(num_tokens, left, t, num_steps))
    out.append(left)
  return out


def sample_and_remask(rng, logits, tokens, mask_id: int, n0, step: int, num_steps: int,
                      tau: float = DEFAULT_TAU):
  """One decoding step after the backbone call: (tokens with the re-masked ones, the sample).

  logits (B, N, V) at temperature 1; tokens (B, N) with mask_id at unknown positions.
  """
  unknown = tokens == mask_id
  rng_sample, rng_noise = jax.random.split(rng)
  sampled = jax.random.categorical(rng_sample, logits, axis=-1)
  sampled = jnp.where(unknown, sampled, tokens)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  selected = jnp.take_along_axis(log_p, sampled[..., None], axis=-1)[..., 0]
  selected = jnp.where(unknown, selected, jnp.inf)
  ratio = (step + 1) / num_steps
  confidence = selected + tau * (1.0 - ratio) * jax.random.gumbel(rng_noise, selected.shape)
  count = mask_count(n0, unknown.sum(-1), step, num_steps)
  # The `count` least confident re-masked (ranks, so exactly that many even under ties).
  ranks = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)
  new_tokens = jnp.where(ranks < count[:, None], mask_id, sampled)
  return new_tokens, sampled


def fill(rng, logits, tokens, mask_id: int, how: str = 'sample'):
  """Every unknown position filled from logits (sampled at temperature 1, or argmax)."""
  if how == 'sample':
    values = jax.random.categorical(rng, logits, axis=-1)
  elif how == 'argmax':
    values = logits.argmax(-1)
  else:
    raise DecodingError(f"fill={how!r}: use 'sample' or 'argmax'.")
  return jnp.where(tokens == mask_id, values, tokens)


def all_masked(batch: int, num_tokens: int, mask_id: int) -> np.ndarray:
  return np.full((batch, num_tokens), mask_id, np.int32)
