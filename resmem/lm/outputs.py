"""The LM side of ResMem-LM: its fingerprint and readout, its forward pass, text cut into windows,
and the LM's outputs (hidden states, logits, targets) over them."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from common import mesh as mesh_lib


class LMMemoryError(ValueError):
  """Bad input to the LM memory: short corpus, another LM's memory, k beyond the memory, ..."""


# ---------------------------------------------------------------------------------------------
# The LM: hidden states, logits, readout, fingerprint.
# ---------------------------------------------------------------------------------------------
def model_fields(model) -> dict[str, Any]:
  """What shapes the LM's keys and predictions besides its parameters."""
  return {'vocab_size': int(model.vocab_size), 'num_layers': int(model.num_layers),
          'd_model': int(model.d_model), 'num_heads': int(model.num_heads),
          'mlp_dim': int(model.mlp_dim or 4 * model.d_model),
          'num_special_tokens': int(model.num_special_tokens)}


def plain(params):
  """Parameters without flax's logical-partitioning boxes (as `model.init` returns them)."""
  return nn.meta.unbox(params)


def fingerprint(model, params) -> str:
  """A hash of the LM: its fields and every parameter's path, dtype, shape and bytes."""
  params = plain(params)
  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps(model_fields(model), sort_keys=True).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.ascontiguousarray(mesh_lib.fetch(leaf))
    h.update(f'{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}'.encode())
    h.update(a.view(np.uint8).reshape(-1).tobytes())
  return h.hexdigest()


def readout(params) -> np.ndarray:
  """(D, V) readout kernel W: logits = hidden @ W (TransformerLM's readout has no bias)."""
  try:
    return np.asarray(mesh_lib.fetch(plain(params)['readout']['kernel']), np.float32)
  except (KeyError, TypeError):
    raise LMMemoryError('The parameters have no readout/kernel: ResMem-LM needs a '
                        'common.models.TransformerLM.') from None


def kernel_fingerprint(kernel) -> str:
  """A hash of a (D, V) readout kernel's float32 values: what `LMOutputs.readout_fingerprint`
  holds for the LM's own readout, so a kernel of another LM is recognised."""
  a = np.ascontiguousarray(np.asarray(mesh_lib.fetch(kernel), np.float32))
  h = hashlib.blake2b(digest_size=16)
  h.update(f'{a.shape}'.encode())
  h.update(a.view(np.uint8).reshape(-1).tobytes())
  return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _forward(model):
  def forward(params, tokens):
    logits, state = model.apply({'params': params}, tokens,
                                capture_intermediates=lambda m, _: m.name == 'final_norm')
    return state['intermediates']['final_norm']['__call__'][0], logits
  return jax.jit(forward)


def forward(model, params, tokens):
  """(hidden (B, L, D), logits (B, L, V)): the final norm's output and the next-token logits."""
  return _forward(model)(plain(params), tokens)


def check_readout(hidden, logits, kernel) -> None:
  """The stored residuals rest on logits == hidden @ W: refuse an LM where that fails."""
  recomputed = np.asarray(hidden, np.float64) @ kernel.astype(np.float64)
  err = np.max(np.abs(recomputed - np.asarray(logits, np.float64)))
  if not err <= 1e-3 * (1.0 + np.max(np.abs(logits))):
    raise LMMemoryError(f'The LM\'s logits are not final_norm output @ readout/kernel (max error '
                        f'{err:.3g}): the memory cannot recompute residuals for this model.')


# ---------------------------------------------------------------------------------------------
# Text into windows, and the LM's outputs over them.
# ---------------------------------------------------------------------------------------------
def windows(ids: np.ndarray, context: int, max_tokens: int | None = None) -> np.ndarray:
  """(W, context + 1) windows at stride `context`: every position but the last gets a target.

  Window w reads ids[w c : w c + c] and predicts ids[w c + 1 : w c + c + 1], so consecutive windows
  share one token and every token of ids[1 : W c + 1] is a target exactly once. `max_tokens` caps
  the targets at the largest multiple of the context not above it (at least one window).
  """
  ids = np.asarray(ids)
  if isinstance(context, bool) or int(context) != context or context < 1:
    raise LMMemoryError(f'context must be a positive whole number, got {context!r}.')
  context = int(context)
  if ids.ndim != 1:
    raise LMMemoryError(f'The corpus must be a 1-D array of token ids, got shape {ids.shape}.')
  if len(ids) < context + 1:
    raise LMMemoryError(f'The corpus has {len(ids)} tokens, shorter than the LM\'s context of '
                        f'{context} (+1 for the last target): not one window.')
  count = (len(ids) - 1) // context
  if max_tokens is not None:
    count = max(1, min(count, int(max_tokens) // context))
  idx = np.arange(count)[:, None] * context + np.arange(context + 1)[None, :]
  return ids[idx]


def batches(model, params, ids, context, batch_size, max_tokens
             ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """(hidden (b*L, D), logits (b*L, V), targets (b*L,)) per batch of windows; every call of the
  jitted forward pass has the same shape (the last batch padded), so chunking cannot change it."""
  data = windows(ids, context, max_tokens)
  vocab = model.vocab_size + model.num_special_tokens
  if data.min() < 0 or data.max() >= vocab:
    bad = int(data[(data < 0) | (data >= vocab)][0])
    raise LMMemoryError(f'Token id {bad} is outside the LM\'s vocabulary [0, {vocab}).')
  batch_size = max(1, min(int(batch_size), len(data)))
  for start in range(0, len(data), batch_size):
    rows = data[start:start + batch_size]
    n = len(rows)
    padded = np.zeros((batch_size, context + 1), np.int32)
    padded[:n] = rows
    hidden, logits = mesh_lib.fetch(forward(model, params, jnp.asarray(padded[:, :-1])))
    yield (np.asarray(hidden[:n], np.float32).reshape(n * context, -1),
           np.asarray(logits[:n], np.float32).reshape(n * context, -1),
           rows[:, 1:].reshape(-1).astype(np.int32))


@dataclasses.dataclass
class LMOutputs:
  """The LM over held-out text: one row per target position, and which LM it was.

  The fingerprints travel with the arrays: every function that mixes these outputs with a memory
  (`neighbours`) or with a readout kernel (ResMem's scores) refuses another LM's (`check_same_lm`).
  """
  hidden: np.ndarray    # (Q, D) float32, unnormalised
  logits: np.ndarray    # (Q, V) float32
  targets: np.ndarray   # (Q,) int32
  fingerprint: str      # the LM's `fingerprint(model, params)`
  readout_fingerprint: str  # `kernel_fingerprint(readout(params))`

  def __len__(self) -> int:
    return len(self.targets)


def lm_outputs(model, params, ids: np.ndarray, *, context: int, batch_size: int = 64,
               max_tokens: int | None = None) -> LMOutputs:
  """Hidden states, logits and targets of every position of `ids` (windows at stride context),
  with the LM's fingerprint and its readout's."""
  parts = list(batches(model, params, ids, context, batch_size, max_tokens))
  hidden, logits, targets = (np.concatenate(p) for p in zip(*parts))
  check_finite(hidden, 'held-out hidden states')
  check_finite(logits, 'held-out logits')
  return LMOutputs(hidden=hidden, logits=logits, targets=targets,
                   fingerprint=fingerprint(model, params),
                   readout_fingerprint=kernel_fingerprint(readout(params)))


def check_same_lm(memory_fingerprint: str, outputs: LMOutputs, what: str = 'The memory') -> None:
  """LMMemoryError unless `what` (a memory, or neighbours found in one) was built by the LM whose
  outputs these are: its keys and residuals belong to that LM."""
  if memory_fingerprint != outputs.fingerprint:
    raise LMMemoryError(
        f'{what} was built by the LM with fingerprint {memory_fingerprint}, but the outputs come '
        f'from the LM with fingerprint {outputs.fingerprint}: a memory serves only the LM that '
        'built it (its keys, residuals and readout are that LM\'s). Compute the outputs with the '
        'memory\'s LM, or build a memory with this one.')


def check_readout_of(kernel, outputs: LMOutputs) -> None:
  """LMMemoryError unless `kernel` is the readout of the LM whose outputs these are."""
  mine = kernel_fingerprint(kernel)
  if mine != outputs.readout_fingerprint:
    raise LMMemoryError(
        f'The readout kernel (fingerprint {mine}) is not the readout of the LM that gave the '
        f'outputs (LM fingerprint {outputs.fingerprint}, readout fingerprint '
        f'{outputs.readout_fingerprint}): ResMem recomputes residuals with it. Pass '
        'lm.readout(params) of that LM.')


def check_finite(x: np.ndarray, what: str, offset: int = 0) -> None:
  bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)[:5] + offset
    raise LMMemoryError(f'{int(bad.sum())} {what} contain NaN or inf (first rows: '
                        f'{rows.tolist()}); the LM may have diverged.')


def token_bits(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
  log_probs = scipy.special.log_softmax(logits, axis=1)
  return -np.take_along_axis(log_probs, targets[:, None], axis=1)[:, 0] / np.log(2.0)
