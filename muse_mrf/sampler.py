"""Samplers over a masked-token backbone: plain MaskGIT with T steps, and the MRF sampler (S' < T
plain steps of the T-step schedule, then one backbone call whose logits the MRF layer refines to
fill every remaining token). Backbone calls and wall time are counted.

    sampler = Sampler(model, params, num_steps=4, mrf=layer, mrf_params=mrf_vars)  # S' = 3
    out = sampler.sample(labels, jax.random.key(0))
    out.tokens, out.backbone_calls, out.seconds
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from muse_mrf import maskgit
from muse_mrf import mrf as mrf_lib


# One compiled program per model and batch shape, shared by every sampler (T, t and tau traced).
@functools.partial(jax.jit, static_argnums=(0,))
def _plain_step(model, params, tokens, labels, n0, rng, t, num_steps, tau):
  logits = model.apply({'params': params}, tokens, labels)
  return maskgit.sample_and_remask(rng, logits, tokens, model.mask_id, n0, t, num_steps, tau)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _mrf_step(model, layer, how, params, mrf_params, tokens, labels, rng):
  """One backbone call whose logits the MRF refines, then every unknown token filled."""
  logits = model.apply({'params': params}, tokens, labels)
  known = tokens != model.mask_id
  refined = layer.apply(mrf_params, logits, jnp.where(known, tokens, 0), known)
  return maskgit.fill(rng, refined, tokens, model.mask_id, how)


@dataclasses.dataclass
class SampleResult:
  tokens: np.ndarray                 # (B, N) codebook ids
  backbone_calls: int                # forward passes of the backbone (each over the whole batch)
  seconds: float                     # wall time of the decoding (compiled programs)
  mrf_seconds: float                 # of which in the MRF layer's step (backbone call included)
  trace: list[np.ndarray] | None     # tokens after each step (mask id where masked), if asked


class Sampler:
  """MaskGIT decoding of `model` (a MaskedTokenTransformer) with `params`.

  num_steps: T, the schedule's length. Without an MRF all T steps are plain (T backbone calls).
  With `mrf` (an MRFLayer) and its variables, the first `backbone_steps` S' (default T - 1) steps
  are plain steps of the T-step schedule, then one more backbone call whose logits the MRF
  refines fills every token still masked: S' + 1 backbone calls.
  """

  def __init__(self, model, params, *, num_steps: int, tau: float = maskgit.DEFAULT_TAU,
               mrf: mrf_lib.MRFLayer | None = None, mrf_params: Any = None,
               backbone_steps: int | None = None, mrf_fill: str = 'sample'):
    maskgit.check_steps(num_steps)
    if mrf is not None:
      if mrf_params is None:
        raise maskgit.DecodingError('An MRF sampler needs the MRF layer\'s variables.')
      backbone_steps = num_steps - 1 if backbone_steps is None else backbone_steps
      maskgit.check_steps(num_steps, backbone_steps)
      if mrf.codebook_size != model.codebook_size:
        raise mrf_lib.MRFError(f'The MRF layer is for codebook_size={mrf.codebook_size}; the '
                               f'backbone has {model.codebook_size}.')
      if mrf.grid[0] * mrf.grid[1] != model.num_tokens:
        raise mrf_lib.MRFError(f'The MRF grid {mrf.grid} has {mrf.grid[0] * mrf.grid[1]} tokens; '
                               f'the backbone reads {model.num_tokens}.')
      mrf_lib.check_codebook(mrf_params, model.codebook_size)
    elif backbone_steps is not None:
      raise maskgit.DecodingError("backbone_steps (S') is for the MRF sampler; pass mrf too.")
    if mrf_fill not in ('sample', 'argmax'):
      raise maskgit.DecodingError(f"mrf_fill={mrf_fill!r}: use 'sample' or 'argmax'.")
    self.model, self.params = model, params
    self.num_steps, self.tau = int(num_steps), float(tau)
    self.mrf, self.mrf_params = mrf, mrf_params
    self.backbone_steps = backbone_steps
    self.mrf_fill = mrf_fill

  @property
  def calls_per_sample(self) -> int:
    return self.num_steps if self.mrf is None else self.backbone_steps + 1

  def sample(self, labels, rng, *, trace: bool = False) -> SampleResult:
    """Samples one token grid per label (labels (B,), or None for an unconditional model)."""
    batch = len(labels) if labels is not None else 1
    labels = None if labels is None else jnp.asarray(labels, jnp.int32)
    tokens = jnp.asarray(maskgit.all_masked(batch, self.model.num_tokens, self.model.mask_id))
    n0 = jnp.sum(tokens == self.model.mask_id, axis=-1)
    steps = list(range(self.num_steps if self.mrf is None else self.backbone_steps))
    history = []
    calls = 0
    start = time.perf_counter()
    sampled = tokens
    for t in steps:
      tokens, sampled = _plain_step(self.model, self.params, tokens, labels, n0,
                                    jax.random.fold_in(rng, t), jnp.int32(t),
                                    jnp.int32(self.num_steps), jnp.float32(self.tau))
      calls += 1
      if trace:
        history.append(np.asarray(tokens if t < self.num_steps - 1 else sampled))
    mrf_seconds = 0.0
    if self.mrf is None:
      out = sampled  # the sample before the last re-masking
    else:
      jax.block_until_ready(tokens)
      t_mrf = time.perf_counter()
      out = _mrf_step(self.model, self.mrf, self.mrf_fill, self.params, self.mrf_params, tokens,
                      labels, jax.random.fold_in(rng, len(steps)))
      calls += 1
      jax.block_until_ready(out)
      mrf_seconds = time.perf_counter() - t_mrf
      if trace:
        history.append(np.asarray(out))
    out = np.asarray(jax.block_until_ready(out))
    return SampleResult(tokens=out, backbone_calls=calls, seconds=time.perf_counter() - start,
                        mrf_seconds=mrf_seconds, trace=history if trace else None)
