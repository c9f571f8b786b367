"""MaskGIT training and decoding for a masked-token backbone (common.models.MaskedTokenTransformer).

Training: a fraction gamma(r) of each example's tokens is masked, r ~ U[0, 1), gamma(r) =
cos(pi r / 2) (MaskGIT, 'cosine'); cross-entropy on the masked tokens only, label smoothing 0.1.
Muse samples the rate from the arccos density, p(rate) = 2 / (pi sqrt(1 - rate^2)) on [0, 1]:
that is the distribution of cos(pi r / 2) itself (P(cos(pi r / 2) <= x) = 1 - (2 / pi) arccos x),
so Muse's schedule is 'cosine' and has no name of its own here (an 'arccos' run would repeat the
'cosine' run). 'linear' (gamma = 1 - r) is the MaskGIT paper's ablation.

Decoding, as the published MaskGIT decoder does it: T steps from an all-mask grid; at step t
(0-based) ratio = (t + 1) / T (float32, from int32 t and T) drives both the schedule and the
noise; every unknown position is sampled at temperature 1 and known tokens are kept; confidence =
log p(sampled) + tau (1 - ratio) Gumbel noise, known tokens +inf; floor(N0 cos(pi/2 ratio)) of
them are re-masked (N0 the masked count at the start; cos clipped to [1e-6, 1]; at least 1 and at
most the unknown count - 1); the output is the sample before the last re-masking. 64 tokens,
8 steps: 62, 59, 53, 45, 35, 24, 12 left masked after the steps before the last (`schedule`, on
the host, runs the same float32 rule).
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from muse_mrf import mrf as mrf_lib

SCHEDULES = ('cosine', 'linear')
DEFAULT_TAU = 4.5


class DecodingError(ValueError):
  """Decoding arguments that cannot work (T < 1, S' >= T, tau < 0 or not finite, class labels
  outside the model's classes, a grid the model does not have)."""


def check_schedule(schedule: str, field: str = 'schedule') -> None:
  """ValueError for a mask schedule not in SCHEDULES ('arccos' told that it is 'cosine')."""
  if schedule == 'arccos':
    raise ValueError(f"{field}='arccos': Muse's arccos density of the masking rate is the "
                     "distribution of cos(pi r / 2), r ~ U[0, 1), so it is the 'cosine' schedule: "
                     "use 'cosine'.")
  if schedule not in SCHEDULES:
    raise ValueError(f'{field}={schedule!r}: unknown mask schedule; use one of {SCHEDULES}.')


# ---------------------------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------------------------
def mask_rate(rng, shape, schedule: str = 'cosine', low: float = 0.0, high: float = 1.0):
  """Masking rates gamma(r), r ~ U[low, high) (a sub-range gives late-stage rates)."""
  check_schedule(schedule)
  if not 0.0 <= low < high <= 1.0:
    raise ValueError(f'r range [{low}, {high}) must lie in [0, 1] with low < high.')
  r = jax.random.uniform(rng, shape, minval=low, maxval=high)
  if schedule == 'cosine':
    return jnp.cos(math.pi / 2 * r)
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
    logits = backbone_logits(model, params, inputs, labels)
    loss = mrf_lib.masked_cross_entropy(logits, tokens, masked, label_smoothing)
    accuracy = jnp.sum((logits.argmax(-1) == tokens) & masked) / jnp.maximum(masked.sum(), 1)
    return loss, ({'masked_accuracy': accuracy}, model_state)

  return loss_fn


# ---------------------------------------------------------------------------------------------
# Decoding.
# ---------------------------------------------------------------------------------------------
def _whole(value) -> bool:
  return (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value) and float(value).is_integer())


def check_steps(num_steps, backbone_steps=None) -> None:
  if not _whole(num_steps) or num_steps < 1:
    raise DecodingError(f'T={num_steps!r} decoding steps: expected a whole number >= 1.')
  if backbone_steps is not None and (not _whole(backbone_steps)
                                     or not 0 <= backbone_steps < num_steps):
    raise DecodingError(f"S'={backbone_steps!r} plain backbone steps before the MRF step: expected "
                        f"a whole number 0 <= S' < T = {num_steps}.")


def check_tau(tau) -> float:
  """tau as a float, or DecodingError: the Gumbel noise's scale must be a finite number >= 0.

  A negative tau turns the noise around (the least confident tokens kept first, on average), NaN
  or inf make every confidence NaN (the re-masked set then depends on how argsort orders NaN);
  tau = 0 is the noise-free decoder (the most confident tokens kept), which is well defined.
  """
  if (isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(tau)
      or tau < 0):
    raise DecodingError(f'tau={tau!r}: the confidence noise scale must be a finite number >= 0 '
                        f'(MaskGIT uses {DEFAULT_TAU}; 0 is noise-free).')
  return float(tau)


def check_labels(labels, num_classes: int) -> np.ndarray | None:
  """Concrete class labels (B,) as int32, or DecodingError: every label in [0, num_classes).

  The backbone's embedding lookup under jit clips an out-of-range label onto another token's
  embedding (label num_classes is the mask token), so labels are checked here, on the host,
  before they enter a compiled step. None for an unconditional model (num_classes 0).
  """
  if not num_classes:
    if labels is not None:
      raise DecodingError('This backbone is unconditional (num_classes=0): pass labels=None.')
    return None
  if labels is None:
    raise DecodingError(f'This backbone is class-conditional ({num_classes} classes): pass '
                        'labels (batch,).')
  if isinstance(labels, jax.core.Tracer):
    raise DecodingError('Sampling labels must be concrete (the sampler runs its steps from the '
                        'host); pass a numpy array, not a traced value.')
  values = np.asarray(labels)
  if values.ndim != 1 or not len(values):
    raise DecodingError(f'labels of shape {values.shape}: expected (batch,) with batch >= 1.')
  if not np.issubdtype(values.dtype, np.integer):
    raise DecodingError(f'labels of dtype {values.dtype}: expected integer class ids.')
  bad = (values < 0) | (values >= num_classes)
  if bad.any():
    i = int(np.argmax(bad))
    raise DecodingError(f'Class label {int(values[i])} at index {i} is outside the backbone\'s '
                        f'{num_classes} classes [0, {num_classes}).')
  return values.astype(np.int32)


def backbone_logits(model, params, tokens, labels):
  """model.apply's logits (B, N, V); under jit, a row whose class label is outside
  [0, num_classes) comes out NaN.

  The backbone refuses such labels when they are concrete; traced, its embedding lookup would
  clip them onto another token's embedding (label num_classes is the mask token) and train or
  sample from the wrong conditioning without a word. NaN instead: a training loss turns NaN and
  the loop's NaN guard stops the run. Rows with valid labels are unchanged (a select).
  """
  logits = model.apply({'params': params}, tokens, labels)
  if labels is None:
    return logits
  valid = (labels >= 0) & (labels < model.num_classes)
  return jnp.where(valid[:, None, None], logits, jnp.nan)


def mask_count(n0, unknown, step, num_steps):
  """How many of the unknown tokens are re-masked after step `step` (the published rule).

  The sampler calls it inside its compiled step with int32 n0 and unknown (B,) and int32 scalars
  step and num_steps, so ratio is float32 (int32 / int32) and so is every product: this dtype
  path is the rule (`schedule` runs the same one on the host).
  """
  ratio = (step + 1) / num_steps
  cos = jnp.clip(jnp.cos(math.pi / 2 * ratio), 1e-6, 1.0)
  count = jnp.floor(n0 * cos).astype(jnp.int32)
  count = jnp.maximum(1, jnp.minimum(unknown - 1, count))
  return jnp.where(unknown > 0, count, 0)


_mask_count = jax.jit(mask_count)


def schedule_table(num_tokens, num_steps: int) -> np.ndarray:
  """(len(num_tokens), T - 1) int32: tokens left masked after each step but the last, starting
  from all masked, for each grid size in num_tokens.

  Computed by mask_count compiled with the sampler's dtypes (int32 counts, int32 step and T), so
  the host numbers are the sampler's in every cell: with Python floats (ratio in float64, then
  float32 at the cosine) 6 of the 565,248 cells of N <= 2,048, T <= 24 came out one token
  higher (N = 1,313, T = 9, the 8th entry: 228 where the sampler leaves 227).
  """
  check_steps(num_steps)
  sizes = np.atleast_1d(np.asarray(num_tokens))
  if sizes.ndim != 1 or not all(_whole(n) and n >= 1 for n in sizes.tolist()):
    raise DecodingError(f'num_tokens={num_tokens!r}: expected whole numbers >= 1.')
  n0 = jnp.asarray(sizes, jnp.int32)
  left, out = n0, []
  for t in range(int(num_steps) - 1):
    left = _mask_count(n0, left, jnp.int32(t), jnp.int32(num_steps))
    out.append(np.asarray(left))
  return np.stack(out, 1) if out else np.zeros((len(sizes), 0), np.int32)


def schedule(num_tokens: int, num_steps: int) -> list[int]:
  """Tokens left masked after each step but the last, starting from all masked (host ints)."""
  return [int(x) for x in schedule_table([num_tokens], num_steps)[0]]


def sample_and_remask(rng, logits, tokens, mask_id: int, n0, step: int, num_steps: int,
                      tau: float = DEFAULT_TAU):
  """One decoding step after the backbone call: (tokens with the re-masked ones, the sample).

  logits (B, N, V) at temperature 1; tokens (B, N) with mask_id at unknown positions; step and
  num_steps int32 (the sampler's dtypes: see mask_count).
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
