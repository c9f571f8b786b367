"""Samplers over a masked-token backbone: plain MaskGIT with T steps, and the MRF sampler (S' < T
plain steps of the T-step schedule, then one backbone call whose logits the MRF layer refines to
fill every remaining token). Backbone calls and wall time are counted.

    sampler = Sampler(model, params, num_steps=4, mrf=layer, mrf_params=mrf_vars,
                      grid=tokenizer.grid)                                      # S' = 3
    out = sampler.sample(labels, jax.random.key(0))
    out.tokens, out.backbone_calls, out.seconds
"""

from __future__ import annotations

import dataclasses
import functools
import math
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
  logits = maskgit.backbone_logits(model, params, tokens, labels)
  return maskgit.sample_and_remask(rng, logits, tokens, model.mask_id, n0, t, num_steps, tau)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _mrf_step(model, layer, how, params, mrf_params, tokens, labels, rng):
  """One backbone call whose logits the MRF refines, then every unknown token filled."""
  logits = maskgit.backbone_logits(model, params, tokens, labels)
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


def _replicated_like(x, params):
  """x placed as the step's outputs will be: replicated on the mesh the parameters live on (so
  the first step's inputs and the later steps' have one placement and one compiled program)."""
  leaves = jax.tree.leaves(params)
  sharding = getattr(leaves[0], 'sharding', None) if leaves else None
  if not isinstance(sharding, jax.sharding.NamedSharding):
    return x
  return jax.device_put(x, jax.sharding.NamedSharding(sharding.mesh,
                                                       jax.sharding.PartitionSpec()))


class Sampler:
  """MaskGIT decoding of `model` (a MaskedTokenTransformer) with `params`.

  num_steps: T, the schedule's length. Without an MRF all T steps are plain (T backbone calls).
  With `mrf` (an MRFLayer) and its variables, the first `backbone_steps` S' (default T - 1) steps
  are plain steps of the T-step schedule, then one more backbone call whose logits the MRF
  refines fills every token still masked: S' + 1 backbone calls. grid: the (H, W) layout of the
  backbone's tokens (the tokenizer's `grid`; None: square); an MRF layer's grid must be it in
  both dimensions, not only in its number of tokens (check_grid).
  tau: the confidence noise's scale, a finite number >= 0 (DecodingError otherwise).
  """

  def __init__(self, model, params, *, num_steps: int, tau: float = maskgit.DEFAULT_TAU,
               mrf: mrf_lib.MRFLayer | None = None, mrf_params: Any = None,
               backbone_steps: int | None = None, mrf_fill: str = 'sample',
               grid: tuple[int, int] | None = None):
    maskgit.check_steps(num_steps)
    tau = maskgit.check_tau(tau)
    if mrf is not None:
      if mrf_params is None:
        raise maskgit.DecodingError('An MRF sampler needs the MRF layer\'s variables.')
      backbone_steps = num_steps - 1 if backbone_steps is None else backbone_steps
      maskgit.check_steps(num_steps, backbone_steps)
      if mrf.codebook_size != model.codebook_size:
        raise mrf_lib.MRFError(f'The MRF layer is for codebook_size={mrf.codebook_size}; the '
                               f'backbone has {model.codebook_size}.')
      check_grid(mrf, model, grid)
      mrf_lib.check_codebook(mrf_params, model.codebook_size)
    elif backbone_steps is not None:
      raise maskgit.DecodingError("backbone_steps (S') is for the MRF sampler; pass mrf too.")
    if mrf_fill not in ('sample', 'argmax'):
      raise maskgit.DecodingError(f"mrf_fill={mrf_fill!r}: use 'sample' or 'argmax'.")
    self.model, self.params = model, params
    self.num_steps, self.tau = int(num_steps), tau
    self.mrf, self.mrf_params = mrf, mrf_params
    self.backbone_steps = backbone_steps
    self.mrf_fill = mrf_fill

  @property
  def calls_per_sample(self) -> int:
    return self.num_steps if self.mrf is None else self.backbone_steps + 1

  def sample(self, labels, rng, *, trace: bool = False) -> SampleResult:
    """Samples one token grid per label (labels (B,), or None for an unconditional model).

    Labels are checked here, before any compiled step (DecodingError for one outside the
    backbone's classes): under jit the backbone would clip it onto another token's embedding.
    """
    labels = maskgit.check_labels(labels, self.model.num_classes)
    batch = len(labels) if labels is not None else 1
    place = lambda x: _replicated_like(x, self.params)
    labels = None if labels is None else place(jnp.asarray(labels, jnp.int32))
    tokens = place(jnp.asarray(maskgit.all_masked(batch, self.model.num_tokens,
                                                  self.model.mask_id)))
    n0 = place(jnp.sum(tokens == self.model.mask_id, axis=-1))
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


def check_grid(mrf: mrf_lib.MRFLayer, model, grid=None) -> tuple[int, int]:
  """The token grid (H, W), or MRFError unless the MRF layer's grid is it in both dimensions.

  grid: the layout of the backbone's tokens (the tokenizer's `grid`). None: the square grid
  (MaskGIT's and Muse's are square), which a backbone whose token count is not a square cannot
  have (then grid must be given). Only the token count would let a (2, 8) layer run over a 4 x 4
  grid, its neighbourhoods joining tokens that are not neighbours.
  """
  n = model.num_tokens
  if grid is None:
    side = math.isqrt(n)
    if side * side != n:
      raise mrf_lib.MRFError(f'The backbone reads {n} tokens, not a square grid: pass grid=(H, W) '
                             '(the tokenizer\'s grid) to check the MRF layer\'s grid against.')
    grid = (side, side)
  grid = tuple(int(g) for g in grid)
  if len(grid) != 2 or grid[0] * grid[1] != n:
    raise mrf_lib.MRFError(f'grid={grid}: the backbone reads {n} tokens per example, so the grid '
                           'must be (H, W) with H * W equal to that.')
  if tuple(mrf.grid) != grid:
    raise mrf_lib.MRFError(f'The MRF layer\'s grid {tuple(mrf.grid)} is not the token grid '
                           f'{grid[0]} x {grid[1]}: its neighbourhoods would join tokens that are '
                           'not neighbours.')
  return grid
