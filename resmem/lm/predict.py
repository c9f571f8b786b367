"""Predictions from a memory's neighbours: the LM alone, ResMem and k-NN-LM, as distributions and
as per-token bits and correctness over grids of their settings (chunked, jitted)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib
from resmem import memory as memory_lib
from resmem.lm import outputs as outputs_lib
from resmem.lm.outputs import LMMemoryError, LMOutputs
from resmem.lm.store import LMMemory


@dataclasses.dataclass
class Neighbours:
  """The k nearest training positions of each query: distances, hidden states, next ids, and the
  fingerprint of the LM that built the memory (checked against the outputs they are mixed with)."""
  dist: np.ndarray      # (Q, k) float32 Euclidean distance between normalised keys
  hidden: np.ndarray    # (Q, k, D) float32
  next_ids: np.ndarray  # (Q, k) int32
  fingerprint: str      # the memory's meta['fingerprint']

  @property
  def k(self) -> int:
    return self.dist.shape[1]


def neighbours(memory: LMMemory, outputs: LMOutputs, k: int) -> Neighbours:
  """One search of the memory for every query (the largest k of a grid serves every smaller).

  LMMemoryError when the memory was built by another LM than the outputs' (fingerprints differ).
  """
  outputs_lib.check_same_lm(memory.meta['fingerprint'], outputs)
  dist, idx = memory.search(outputs.hidden, k)
  hidden, nxt = memory.gather(idx)
  return Neighbours(dist=dist.astype(np.float32), hidden=hidden, next_ids=nxt,
                    fingerprint=memory.meta['fingerprint'])


def _sigma_value(sigma) -> float:
  if sigma is None:
    return float('inf')  # exp(-d / inf) = 1: uniform weights
  if not (np.isscalar(sigma) and sigma > 0):
    raise LMMemoryError(f'sigma must be positive (or None for uniform weights), got {sigma!r}.')
  return float(sigma)


def _weights(dist, sigma):
  """softmax(-d / sigma) over each row's neighbours (shifted by the nearest: no overflow)."""
  return jax.nn.softmax(-(dist - dist[:, :1]) / sigma, axis=-1)


def _resmem_parts(base_logits, nb_hidden, nb_next, dist, kernel, temperature, sigma, k):
  """(base softmax(g / T) (c, V), correction sum_j w_j r_j (c, V)) from the first k neighbours."""
  vocab = kernel.shape[1]
  base = jax.nn.softmax(base_logits / temperature, axis=-1)
  nb_p = jax.nn.softmax(jnp.einsum('ckd,dv->ckv', nb_hidden[:, :k], kernel) / temperature, -1)
  resid = jax.nn.one_hot(nb_next[:, :k], vocab, dtype=jnp.float32) - nb_p
  return base, jnp.einsum('ck,ckv->cv', _weights(dist[:, :k], sigma), resid)


def _valid(base, correction, scale, floor):
  """base + scale * correction, clipped at floor * base and renormalised (module docstring)."""
  f = jnp.maximum(base + scale * correction, floor * base)
  return f / jnp.sum(f, axis=-1, keepdims=True)


def _resmem_probs(base_logits, nb_hidden, nb_next, dist, kernel, temperature, sigma, floor, k,
                  scale=1.0):
  """(c, V) ResMem distributions from the first k neighbours (see the module docstring)."""
  base, corr = _resmem_parts(base_logits, nb_hidden, nb_next, dist, kernel, temperature, sigma, k)
  return _valid(base, corr, scale, floor)


def _knnlm_probs(lm_logits, nb_next, dist, sigma, lam, k):
  vocab = lm_logits.shape[-1]
  p_knn = jnp.einsum('ck,ckv->cv', _weights(dist[:, :k], sigma),
                     jax.nn.one_hot(nb_next[:, :k], vocab, dtype=jnp.float32))
  return lam * p_knn + (1.0 - lam) * jax.nn.softmax(lm_logits, axis=-1)


def _score(probs, targets):
  """(bits (c,), correct (c,)) of distributions (c, V) against targets.

  A row holding NaN (traced values cannot be refused) scores NaN bits, which carry into any mean,
  and is never correct: argmax would read it as class 0.
  """
  p_y = jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]
  finite = jnp.all(jnp.isfinite(probs), axis=-1)
  return -jnp.log2(p_y), (jnp.argmax(probs, -1) == targets) & finite


@functools.partial(jax.jit, static_argnames=('ks',))
def _resmem_grid(base_logits, nb_hidden, nb_next, dist, targets, kernel, temperature, sigmas,
                 scales, floor, ks):
  """Per-token bits and correctness for every (k, sigma, scale): (c, ks, sigmas, scales) each."""
  bits, correct = [], []
  for k in ks:
    def per_sigma(s, k=k):
      base, corr = _resmem_parts(base_logits, nb_hidden, nb_next, dist, kernel, temperature, s, k)
      return jax.vmap(lambda a: _score(_valid(base, corr, a, floor), targets), out_axes=1)(scales)
    b, c = jax.vmap(per_sigma, out_axes=1)(sigmas)
    bits.append(b)
    correct.append(c)
  return jnp.stack(bits, 1), jnp.stack(correct, 1)


@functools.partial(jax.jit, static_argnames=('ks',))
def _knnlm_grid(lm_logits, nb_next, dist, targets, sigmas, lams, ks):
  """Per-token bits and correctness for every (k, sigma, lambda): (c, ks, sigmas, lambdas)."""
  bits, correct = [], []
  for k in ks:
    per = lambda s, lam, k=k: _score(_knnlm_probs(lm_logits, nb_next, dist, s, lam, k), targets)
    b, c = jax.vmap(jax.vmap(per, (None, 0), 1), (0, None), 1)(sigmas, lams)
    bits.append(b)
    correct.append(c)
  return jnp.stack(bits, 1), jnp.stack(correct, 1)


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def _check_outputs(outputs: LMOutputs, nb: Neighbours | None = None, k_max: int | None = None,
                   kernel=None):
  """Lengths and k; and that the neighbours (their memory) and the readout kernel belong to the
  LM whose outputs these are (their fingerprints)."""
  if not len(outputs.hidden) == len(outputs.logits) == len(outputs.targets):
    raise LMMemoryError(f'{len(outputs.hidden)} hidden states, {len(outputs.logits)} logits and '
                        f'{len(outputs.targets)} targets.')
  if nb is not None:
    if len(nb.dist) != len(outputs.targets):
      raise LMMemoryError(f'{len(nb.dist)} neighbour rows for {len(outputs.targets)} queries.')
    if k_max is not None and k_max > nb.k:
      raise LMMemoryError(f'k={k_max} needs at least {k_max} neighbours per query; the search '
                          f'found {nb.k}.')
    outputs_lib.check_same_lm(nb.fingerprint, outputs, 'The memory of the neighbours')
  if kernel is not None:
    outputs_lib.check_readout_of(kernel, outputs)


def lm_bits(outputs: LMOutputs) -> tuple[np.ndarray, np.ndarray]:
  """The LM alone (T = 1): (bits per token (Q,), correct (Q,))."""
  return (outputs_lib.token_bits(outputs.logits, outputs.targets),
          outputs.logits.argmax(axis=1) == outputs.targets)


def resmem_grid(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, ks: Sequence[int],
                sigmas: Sequence[float | None], temperature: float, floor: float,
                scales: Sequence[float] = (1.0,), chunk: int = 1024
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per-token (bits, correct), each (Q, len(ks), len(sigmas), len(scales)), of ResMem at one
  temperature. `scales` multiply the correction (1: the paper's ResMem; below 1 shrinks it)."""
  ks = tuple(int(k) for k in ks)
  _check_outputs(outputs, nb, max(ks), kernel)
  memory_lib.check_temperature(temperature)
  if not 0 < floor <= 1:
    raise LMMemoryError(f'floor must lie in (0, 1], got {floor!r}.')
  if not all(0 <= a for a in scales):
    raise LMMemoryError(f'Every scale must be >= 0, got {tuple(scales)}.')
  sig = jnp.asarray([_sigma_value(s) for s in sigmas], jnp.float32)
  kern = jnp.asarray(kernel, jnp.float32)
  parts = [mesh_lib.fetch(_resmem_grid(
      jnp.asarray(outputs.logits[s]), jnp.asarray(nb.hidden[s]), jnp.asarray(nb.next_ids[s]),
      jnp.asarray(nb.dist[s]), jnp.asarray(outputs.targets[s]), kern, float(temperature), sig,
      jnp.asarray(scales, jnp.float32), float(floor), ks))
      for s in _chunks(len(outputs), chunk)]
  return tuple(np.concatenate(p) for p in zip(*parts))


def knnlm_grid(outputs: LMOutputs, nb: Neighbours, *, ks: Sequence[int],
               sigmas: Sequence[float | None], lambdas: Sequence[float],
               chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Per-token (bits, correct), each (Q, len(ks), len(sigmas), len(lambdas)), of k-NN-LM."""
  ks = tuple(int(k) for k in ks)
  _check_outputs(outputs, nb, max(ks))
  if not all(0 <= lam <= 1 for lam in lambdas):
    raise LMMemoryError(f'Every lambda must lie in [0, 1], got {tuple(lambdas)}.')
  sig = jnp.asarray([_sigma_value(s) for s in sigmas], jnp.float32)
  lams = jnp.asarray(lambdas, jnp.float32)
  parts = [mesh_lib.fetch(_knnlm_grid(
      jnp.asarray(outputs.logits[s]), jnp.asarray(nb.next_ids[s]), jnp.asarray(nb.dist[s]),
      jnp.asarray(outputs.targets[s]), sig, lams, ks)) for s in _chunks(len(outputs), chunk)]
  return tuple(np.concatenate(p) for p in zip(*parts))


def resmem_bits(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, k: int,
                sigma: float | None, temperature: float, floor: float, scale: float = 1.0):
  """ResMem's per-token (bits (Q,), correct (Q,)) at one setting."""
  bits, correct = resmem_grid(outputs, nb, kernel, ks=(k,), sigmas=(sigma,),
                              temperature=temperature, floor=floor, scales=(scale,))
  return bits[:, 0, 0, 0], correct[:, 0, 0, 0]


def knnlm_bits(outputs: LMOutputs, nb: Neighbours, *, k: int, sigma: float | None,
               lam: float):
  """k-NN-LM's per-token (bits (Q,), correct (Q,)) at one setting."""
  bits, correct = knnlm_grid(outputs, nb, ks=(k,), sigmas=(sigma,), lambdas=(lam,))
  return bits[:, 0, 0, 0], correct[:, 0, 0, 0]


def resmem_probs(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, k: int,
                 sigma: float | None, temperature: float, floor: float,
                 scale: float = 1.0) -> np.ndarray:
  """(Q, V) ResMem distributions (non-negative, rows summing to 1)."""
  _check_outputs(outputs, nb, k, kernel)
  return np.asarray(jax.jit(_resmem_probs, static_argnames=('k',))(
      jnp.asarray(outputs.logits), jnp.asarray(nb.hidden), jnp.asarray(nb.next_ids),
      jnp.asarray(nb.dist), jnp.asarray(kernel, jnp.float32), float(temperature),
      _sigma_value(sigma), float(floor), k=int(k), scale=float(scale)))
