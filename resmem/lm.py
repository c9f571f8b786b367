"""ResMem over a trained decoder-only LM (common.models.TransformerLM), and k-NN-LM beside it.

    memory = lm.build_memory(model, params, train_ids, context=64, path='/tmp/mem')  # in chunks
    val = lm.lm_outputs(model, params, val_ids, context=64)     # hidden, logits, targets
    test = lm.lm_outputs(model, params, test_ids, context=64)
    nb_val, nb_test = lm.neighbours(memory, val, 32), lm.neighbours(memory, test, 32)
    kernel = lm.readout(params)                                 # (D, V): logits = hidden @ W
    best, grid = lm.tune_resmem(val, nb_val, kernel, ks=(1, 8, 32), sigmas=(0.1, None),
                                temperatures=(1.0, 2.0), floor=0.01)
    bits, correct = lm.resmem_bits(test, nb_test, kernel, floor=0.01, **best)  # per token
    best_knn, _ = lm.tune_knnlm(val, nb_val, ks=(8, 32), sigmas=(0.1,), lambdas=(0.1, 0.3))
    bits_knn, _ = lm.knnlm_bits(test, nb_test, **best_knn)

The key of a training position is the LM's last hidden state there (the final norm's output, the
readout's input), L2-normalised; its residual is the next token's one-hot minus the LM's softmax
at temperature T. ResMem predicts

    f(x) = softmax(g(x) / T) + sum_{j in N_k(x)} w_j(x) (e_{y_j} - softmax(g(x_j) / T)),
    w_j = exp(-||phi(x) - phi(x_j)|| / sigma), normalised over the k neighbours (sigma None:
    uniform).

Storage. A residual is V floats per training token (V = 259 bytes and specials: 1 GB at 1M
tokens). It is never stored: g(x_j) = h_j W with W the LM's readout (no bias) and h_j the hidden
state, which is the key (already stored, D floats) times its norm. So the memory holds the keys
(N, D) float32, the hidden-state norms (N,) and the next-token ids (N,): 8 bytes per token beyond
the keys, the residuals exact (float32, not a rounded softmax), and T is free to tune after the
memory is built. The readout belongs to the LM, which the memory's fingerprint pins.

A valid distribution. f sums to 1 but can go negative (a neighbour whose LM was confident in a
token that did not follow). Bits per byte need probabilities, so f is clipped from below at
`floor` times the base distribution softmax(g(x)/T) and renormalised: the memory may take away at
most (1 - floor) of the LM's probability of a token, never all of it. The clip is a no-op wherever
f >= floor * p, so ResMem with zero residuals returns the LM's distribution exactly.

`scale` (default 1, the paper's ResMem) multiplies the correction: f = p + scale * sum_j w_j r_j.
Below 1 it shrinks the memory's say, as lambda does in k-NN-LM; with scale = lambda the two differ
only by the term lambda * (p - sum_j w_j p_j), the neighbours' own LM predictions taken away.

k-NN-LM (Khandelwal et al., 2020), the best-known relative, on the same keys: p = lambda p_kNN +
(1 - lambda) p_LM with p_kNN(y) = sum_j w_j [y_j = y] (the same distance weights, sigma tuned;
the LM at T = 1).

Memories are built in chunks (fixed-shape batches of windows through one jitted forward pass),
optionally straight into .npy files on disk, and saved with their metadata (the LM's fingerprint,
key width, vocabulary, context). `LMMemory.load(path, mesh=)` lays the keys out over the mesh
from the files, each device reading its own rows: the database never sits in one host array.
The search is `resmem.kernels.knn` (one device) or `kernels.knn_sharded` (over the mesh).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from resmem import kernels
from resmem import memory as memory_lib

FORMAT = 'resmem-lm-memory/1'
P = jax.sharding.PartitionSpec


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


def _plain(params):
  """Parameters without flax's logical-partitioning boxes (as `model.init` returns them)."""
  return nn.meta.unbox(params)


def fingerprint(model, params) -> str:
  """A hash of the LM: its fields and every parameter's path, dtype, shape and bytes."""
  params = _plain(params)
  h = hashlib.blake2b(digest_size=16)
  h.update(json.dumps(model_fields(model), sort_keys=True).encode())
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f'{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape}'.encode())
    h.update(a.view(np.uint8).reshape(-1).tobytes())
  return h.hexdigest()


def readout(params) -> np.ndarray:
  """(D, V) readout kernel W: logits = hidden @ W (TransformerLM's readout has no bias)."""
  try:
    return np.asarray(jax.device_get(_plain(params)['readout']['kernel']), np.float32)
  except (KeyError, TypeError):
    raise LMMemoryError('The parameters have no readout/kernel: ResMem-LM needs a '
                        'common.models.TransformerLM.') from None


@functools.lru_cache(maxsize=16)
def _forward(model):
  def forward(params, tokens):
    logits, state = model.apply({'params': params}, tokens,
                                capture_intermediates=lambda m, _: m.name == 'final_norm')
    return state['intermediates']['final_norm']['__call__'][0], logits
  return jax.jit(forward)


def forward(model, params, tokens):
  """(hidden (B, L, D), logits (B, L, V)): the final norm's output and the next-token logits."""
  return _forward(model)(_plain(params), tokens)


def _check_readout(hidden, logits, kernel) -> None:
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


def _batches(model, params, ids, context, batch_size, max_tokens
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
    hidden, logits = jax.device_get(forward(model, params, jnp.asarray(padded[:, :-1])))
    yield (np.asarray(hidden[:n], np.float32).reshape(n * context, -1),
           np.asarray(logits[:n], np.float32).reshape(n * context, -1),
           rows[:, 1:].reshape(-1).astype(np.int32))


@dataclasses.dataclass
class LMOutputs:
  """The LM over held-out text: one row per target position."""
  hidden: np.ndarray    # (Q, D) float32, unnormalised
  logits: np.ndarray    # (Q, V) float32
  targets: np.ndarray   # (Q,) int32

  def __len__(self) -> int:
    return len(self.targets)


def lm_outputs(model, params, ids: np.ndarray, *, context: int, batch_size: int = 64,
               max_tokens: int | None = None) -> LMOutputs:
  """Hidden states, logits and targets of every position of `ids` (windows at stride context)."""
  parts = list(_batches(model, params, ids, context, batch_size, max_tokens))
  hidden, logits, targets = (np.concatenate(p) for p in zip(*parts))
  _check_finite(hidden, 'held-out hidden states')
  return LMOutputs(hidden=hidden, logits=logits, targets=targets)


def _check_finite(x: np.ndarray, what: str, offset: int = 0) -> None:
  bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
  if bad.any():
    rows = np.flatnonzero(bad)[:5] + offset
    raise LMMemoryError(f'{int(bad.sum())} {what} contain NaN or inf (first rows: '
                        f'{rows.tolist()}); the LM may have diverged.')


# ---------------------------------------------------------------------------------------------
# The memory.
# ---------------------------------------------------------------------------------------------
_ARRAYS = ('keys', 'norms', 'next_ids')


def _sharded_from_host(host, rows: int, sharding) -> jax.Array:
  """A global (rows, ...) array over `sharding`, each device's rows read from `host` (a numpy
  array or memmap) as it is placed; rows past len(host) are zero padding."""
  n = host.shape[0]

  def block(index):
    sl = index[0]
    start = sl.start or 0
    stop = rows if sl.stop is None else sl.stop
    out = np.zeros((stop - start,) + tuple(host.shape[1:]), host.dtype)
    hi = min(stop, n)
    if hi > start:
      out[:hi - start] = host[start:hi]
    return out[(slice(None),) + tuple(index[1:])]

  return jax.make_array_from_callback((rows,) + tuple(host.shape[1:]), sharding, block)


@jax.jit
def _gather(keys, norms, next_ids, idx):
  return (jnp.take(keys, idx, axis=0) * jnp.take(norms, idx, axis=0)[..., None],
          jnp.take(next_ids, idx, axis=0))


@dataclasses.dataclass
class LMMemory:
  """Keys, hidden-state norms and next-token ids of N training positions, and what built them.

  Attributes:
    keys: (N', D) float32 L2-normalised hidden states; N' >= N (rows past N pad a sharded array).
    norms: (N',) float32 norms of the hidden states (key * norm is the hidden state).
    next_ids: (N',) int32 next-token ids.
    meta: 'fingerprint' (of the LM), 'key_dim', 'vocab_size', 'context', 'num_keys' (N), and
      whatever else the builder records (e.g. 'train_bits_per_token', tuned settings).
    mesh, axis: when set, the arrays are jax.Arrays split over the mesh axis and the search is
      sharded. A runtime choice: never saved.
    knn_kwargs: block sizes / mode for the kernel.
  """
  keys: Any
  norms: Any
  next_ids: Any
  meta: dict[str, Any]
  mesh: jax.sharding.Mesh | None = dataclasses.field(default=None, repr=False)
  axis: str = 'data'
  knn_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    missing = {'fingerprint', 'key_dim', 'vocab_size', 'context', 'num_keys'} - set(self.meta)
    if missing:
      raise LMMemoryError(f'The memory\'s metadata lacks {sorted(missing)}.')
    n, d = int(self.meta['num_keys']), int(self.meta['key_dim'])
    if n < 1:
      raise LMMemoryError('The memory is empty.')
    if self.keys.ndim != 2 or self.keys.shape[1] != d:
      raise LMMemoryError(f'Keys of shape {self.keys.shape} do not match key_dim={d}.')
    if not self.keys.shape[0] == self.norms.shape[0] == self.next_ids.shape[0] >= n:
      raise LMMemoryError(f'{self.keys.shape[0]} keys, {self.norms.shape[0]} norms and '
                          f'{self.next_ids.shape[0]} next ids for {n} positions.')
    self._device_keys = None

  @property
  def num_keys(self) -> int:
    return int(self.meta['num_keys'])

  @property
  def key_dim(self) -> int:
    return int(self.meta['key_dim'])

  def check_lm(self, model, params) -> None:
    """LMMemoryError unless the memory was built by this LM (key width, vocabulary, weights)."""
    fields = model_fields(model)
    if fields['d_model'] != self.key_dim:
      raise LMMemoryError(f'The memory\'s keys have width {self.key_dim} but the LM\'s hidden '
                          f'states have {fields["d_model"]}: it was built with another LM.')
    if fields['vocab_size'] != int(self.meta['vocab_size']):
      raise LMMemoryError(f'The memory was built for a vocabulary of {self.meta["vocab_size"]} '
                          f'tokens, the LM predicts {fields["vocab_size"]}.')
    mine = fingerprint(model, params)
    if mine != self.meta['fingerprint']:
      raise LMMemoryError(f'The memory was built with another LM (fingerprint '
                          f'{self.meta["fingerprint"]}, this LM {mine}): its residuals belong '
                          'to that LM. Rebuild the memory with this one.')

  # -- layout --------------------------------------------------------------------------------
  def shard(self, mesh: jax.sharding.Mesh, axis: str = 'data') -> 'LMMemory':
    """This memory with its arrays split over `mesh`'s `axis` (each device's rows read from the
    host arrays or files as they are placed, padded to a multiple of the shards)."""
    if axis not in mesh.shape:
      raise LMMemoryError(f'The mesh has no axis {axis!r}; its axes are {tuple(mesh.shape)}.')
    shards = mesh.shape[axis]
    rows = -(-self.num_keys // shards) * shards
    host = lambda a: a[:self.num_keys] if isinstance(a, np.ndarray) else np.asarray(
        jax.device_get(a))[:self.num_keys]
    keys = _sharded_from_host(host(self.keys), rows, jax.sharding.NamedSharding(
        mesh, P(axis, None)))
    vec = jax.sharding.NamedSharding(mesh, P(axis))
    return dataclasses.replace(
        self, keys=keys, norms=_sharded_from_host(host(self.norms), rows, vec),
        next_ids=_sharded_from_host(host(self.next_ids), rows, vec), mesh=mesh, axis=axis)

  # -- search --------------------------------------------------------------------------------
  def search(self, hidden: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Euclidean distances (Q, k) float32, key indices (Q, k)) of the L2-normalised queries."""
    k = check_k(k, self.num_keys)
    hidden = np.asarray(hidden, np.float32)
    if hidden.ndim != 2 or hidden.shape[1] != self.key_dim:
      raise LMMemoryError(f'Queries of shape {hidden.shape} do not match the memory\'s key width '
                          f'{self.key_dim}: embed them with the LM that built it.')
    _check_finite(hidden, 'query hidden states')
    queries = memory_lib.normalize(hidden)
    if self.mesh is not None:
      sq, idx = kernels.knn_sharded(queries, self.keys, k, mesh=self.mesh, axis=self.axis,
                                    num_valid=self.num_keys, validate=False, **self.knn_kwargs)
    else:
      if self._device_keys is None:  # one transfer, reused by every search
        self._device_keys = jnp.asarray(np.asarray(self.keys[:self.num_keys], np.float32))
      sq, idx = kernels.knn(queries, self._device_keys, k, validate=False, **self.knn_kwargs)
    return np.sqrt(np.asarray(sq)), np.asarray(idx)

  def gather(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hidden states (Q, k, D), next ids (Q, k)) of the keys `idx`."""
    if self.mesh is not None:
      hidden, nxt = jax.device_get(_gather(self.keys, self.norms, self.next_ids,
                                           jnp.asarray(idx, jnp.int32)))
      return np.asarray(hidden, np.float32), np.asarray(nxt, np.int32)
    flat = np.asarray(idx).reshape(-1)
    order = np.argsort(flat, kind='stable')  # sorted reads: memmapped files page in once
    keys, norms = np.empty((len(flat), self.key_dim), np.float32), np.empty(len(flat), np.float32)
    nxt = np.empty(len(flat), np.int32)
    keys[order], norms[order], nxt[order] = (self.keys[flat[order]], self.norms[flat[order]],
                                             self.next_ids[flat[order]])
    return ((keys * norms[:, None]).reshape(idx.shape + (self.key_dim,)), nxt.reshape(idx.shape))

  # -- files ---------------------------------------------------------------------------------
  def save(self, path: str) -> str:
    """A directory of keys.npy, norms.npy, next_ids.npy and meta.json (the mesh is not saved)."""
    tmp = path.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in _ARRAYS:
      arr = getattr(self, name)
      host = arr[:self.num_keys] if isinstance(arr, np.ndarray) else np.asarray(
          jax.device_get(arr))[:self.num_keys]
      np.save(os.path.join(tmp, f'{name}.npy'), host)
    _finish(tmp, path, self.meta)
    return path

  @classmethod
  def load(cls, path: str, *, mesh: jax.sharding.Mesh | None = None, axis: str = 'data',
           model=None, params=None, **knn_kwargs) -> 'LMMemory':
    """The memory at `path` (its arrays memory-mapped, or laid out over `mesh` from the files);
    given `model` and `params`, refused unless it was built with that LM."""
    meta_path = os.path.join(path, 'meta.json')
    if not os.path.exists(meta_path):
      raise FileNotFoundError(f'No ResMem-LM memory at {path} (no meta.json).')
    with open(meta_path, encoding='utf-8') as f:
      meta = json.load(f)
    if meta.get('format') != FORMAT:
      raise LMMemoryError(f'{path} holds format {meta.get("format")!r}, not {FORMAT!r}.')
    arrays = {n: np.load(os.path.join(path, f'{n}.npy'), mmap_mode='r') for n in _ARRAYS}
    memory = cls(meta=meta, knn_kwargs=knn_kwargs, **arrays)
    if model is not None:
      memory.check_lm(model, params)
    return memory.shard(mesh, axis) if mesh is not None else memory


def _finish(tmp: str, path: str, meta: dict[str, Any]) -> None:
  with open(os.path.join(tmp, 'meta.json'), 'w', encoding='utf-8') as f:
    json.dump(dict(meta, format=FORMAT), f, indent=1)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(tmp, path)


def check_k(k, num_keys: int) -> int:
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
    raise LMMemoryError(f'k must be a positive integer, got {k!r}.')
  if k > num_keys:
    raise LMMemoryError(f'k={k} is larger than the memory, which holds {num_keys} keys.')
  return int(k)


def build_memory(model, params, ids: np.ndarray, *, context: int, batch_size: int = 64,
                 max_tokens: int | None = None, path: str | None = None,
                 meta: dict[str, Any] | None = None) -> LMMemory:
  """The memory of `ids` (every target position of its windows), built a batch at a time.

  Args:
    model, params: the trained TransformerLM.
    ids: (T,) token ids of the training text; at least context + 1 of them.
    context: the window length (the LM's training length).
    batch_size: windows per call of the jitted forward pass (a chunk: host memory beyond the
      output arrays is O(batch_size x context x V)).
    max_tokens: cap on the positions stored (a multiple of the context).
    path: write the arrays straight into .npy files in this directory (memory-mapped: the
      memory is never whole in host RAM), saved when done; None keeps them in host arrays.
    meta: extra metadata saved with the memory.

  Returns:
    The LMMemory (memory-mapped from `path` when given). Its meta records the LM's mean training
    loss over these positions in bits per token ('train_bits_per_token').
  """
  num = len(windows(ids, context, max_tokens)) * int(context)  # validates corpus and context
  d = int(model.d_model)
  kernel = readout(params)
  tmp = None
  if path is None:
    out = {'keys': np.empty((num, d), np.float32), 'norms': np.empty(num, np.float32),
           'next_ids': np.empty(num, np.int32)}
  else:
    tmp = path.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    out = {n: np.lib.format.open_memmap(os.path.join(tmp, f'{n}.npy'), mode='w+', dtype=dt,
                                        shape=shape)
           for n, dt, shape in (('keys', np.float32, (num, d)), ('norms', np.float32, (num,)),
                                ('next_ids', np.int32, (num,)))}
  pos, bits = 0, 0.0
  for hidden, logits, targets in _batches(model, params, ids, context, batch_size, max_tokens):
    if pos == 0:
      _check_readout(hidden[:256], logits[:256], kernel)
    _check_finite(hidden, 'training hidden states', pos)
    norms = np.linalg.norm(hidden, axis=1)
    if not (norms > 0).all():
      raise LMMemoryError(f'A hidden state of norm 0 at position {pos + int(np.argmin(norms))}: '
                          'it has no direction to be a key.')
    n = len(targets)
    out['keys'][pos:pos + n] = hidden / norms[:, None]
    out['norms'][pos:pos + n] = norms
    out['next_ids'][pos:pos + n] = targets
    bits += float(np.sum(_bits_np(logits, targets)))
    pos += n
  meta = dict(meta or {}, fingerprint=fingerprint(model, params), key_dim=d,
              vocab_size=int(model.vocab_size), context=int(context), num_keys=num,
              train_bits_per_token=bits / num, model=model_fields(model))
  if path is None:
    return LMMemory(meta=meta, **out)
  for arr in out.values():
    arr.flush()
  del out
  _finish(tmp, path, meta)
  return LMMemory.load(path)


def _bits_np(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  logz = np.log(np.exp(z).sum(axis=1))
  return (logz - np.take_along_axis(z, targets[:, None], axis=1)[:, 0]) / np.log(2.0)


# ---------------------------------------------------------------------------------------------
# Predictions: the LM, ResMem, k-NN-LM.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Neighbours:
  """The k nearest training positions of each query: distances, hidden states, next ids."""
  dist: np.ndarray      # (Q, k) float32 Euclidean distance between normalised keys
  hidden: np.ndarray    # (Q, k, D) float32
  next_ids: np.ndarray  # (Q, k) int32

  @property
  def k(self) -> int:
    return self.dist.shape[1]


def neighbours(memory: LMMemory, outputs: LMOutputs, k: int) -> Neighbours:
  """One search of the memory for every query (the largest k of a grid serves every smaller)."""
  dist, idx = memory.search(outputs.hidden, k)
  hidden, nxt = memory.gather(idx)
  return Neighbours(dist=dist.astype(np.float32), hidden=hidden, next_ids=nxt)


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
  """(bits (c,), correct (c,)) of distributions (c, V) against targets."""
  p_y = jnp.take_along_axis(probs, targets[:, None], axis=1)[:, 0]
  return -jnp.log2(p_y), (jnp.argmax(probs, -1) == targets)


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


def _check_outputs(outputs: LMOutputs, nb: Neighbours | None = None, k_max: int | None = None):
  if not len(outputs.hidden) == len(outputs.logits) == len(outputs.targets):
    raise LMMemoryError(f'{len(outputs.hidden)} hidden states, {len(outputs.logits)} logits and '
                        f'{len(outputs.targets)} targets.')
  if nb is not None:
    if len(nb.dist) != len(outputs.targets):
      raise LMMemoryError(f'{len(nb.dist)} neighbour rows for {len(outputs.targets)} queries.')
    if k_max is not None and k_max > nb.k:
      raise LMMemoryError(f'k={k_max} needs at least {k_max} neighbours per query; the search '
                          f'found {nb.k}.')


def lm_bits(outputs: LMOutputs) -> tuple[np.ndarray, np.ndarray]:
  """The LM alone (T = 1): (bits per token (Q,), correct (Q,))."""
  return (_bits_np(outputs.logits, outputs.targets),
          outputs.logits.argmax(axis=1) == outputs.targets)


def resmem_grid(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, ks: Sequence[int],
                sigmas: Sequence[float | None], temperature: float, floor: float,
                scales: Sequence[float] = (1.0,), chunk: int = 1024
                ) -> tuple[np.ndarray, np.ndarray]:
  """Per-token (bits, correct), each (Q, len(ks), len(sigmas), len(scales)), of ResMem at one
  temperature. `scales` multiply the correction (1: the paper's ResMem; below 1 shrinks it)."""
  ks = tuple(int(k) for k in ks)
  _check_outputs(outputs, nb, max(ks))
  memory_lib.check_temperature(temperature)
  if not 0 < floor <= 1:
    raise LMMemoryError(f'floor must lie in (0, 1], got {floor!r}.')
  if not all(0 <= a for a in scales):
    raise LMMemoryError(f'Every scale must be >= 0, got {tuple(scales)}.')
  sig = jnp.asarray([_sigma_value(s) for s in sigmas], jnp.float32)
  kern = jnp.asarray(kernel, jnp.float32)
  parts = [jax.device_get(_resmem_grid(
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
  parts = [jax.device_get(_knnlm_grid(
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
  _check_outputs(outputs, nb, k)
  return np.asarray(jax.jit(_resmem_probs, static_argnames=('k',))(
      jnp.asarray(outputs.logits), jnp.asarray(nb.hidden), jnp.asarray(nb.next_ids),
      jnp.asarray(nb.dist), jnp.asarray(kernel, jnp.float32), float(temperature),
      _sigma_value(sigma), float(floor), k=int(k), scale=float(scale)))


def tune_resmem(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, ks: Sequence[int],
                sigmas: Sequence[float | None], temperatures: Sequence[float],
                floor: float, scales: Sequence[float] = (1.0,)
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The (k, sigma, temperature, scale) of lowest mean bits per token on `outputs` (held-out
  text), and the whole grid [{k, sigma, temperature, scale, bits, accuracy}]."""
  grid = []
  for t in temperatures:
    bits, correct = resmem_grid(outputs, nb, kernel, ks=ks, sigmas=sigmas, temperature=t,
                                floor=floor, scales=scales)
    for i, k in enumerate(ks):
      for j, s in enumerate(sigmas):
        for m, a in enumerate(scales):
          grid.append({'k': int(k), 'sigma': s, 'temperature': float(t), 'scale': float(a),
                       'bits': float(bits[:, i, j, m].mean()),
                       'accuracy': float(correct[:, i, j, m].mean())})
  return best_of(grid), grid


def best_of(grid: list[dict[str, Any]], **fixed) -> dict[str, Any]:
  """The settings of the grid row of lowest bits among those matching `fixed` (e.g. scale=1)."""
  rows = [r for r in grid if all(r[key] == value for key, value in fixed.items())]
  if not rows:
    raise LMMemoryError(f'No grid row has {fixed}.')
  best = min(rows, key=lambda r: r['bits'])
  return {key: v for key, v in best.items() if key not in ('bits', 'accuracy')}


def tune_knnlm(outputs: LMOutputs, nb: Neighbours, *, ks: Sequence[int],
               sigmas: Sequence[float | None], lambdas: Sequence[float]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The (k, sigma, lambda) of lowest mean bits per token on `outputs`, and the grid."""
  bits, correct = knnlm_grid(outputs, nb, ks=ks, sigmas=sigmas, lambdas=lambdas)
  grid = [{'k': int(k), 'sigma': s, 'lam': float(lam), 'bits': float(bits[:, i, j, m].mean()),
           'accuracy': float(correct[:, i, j, m].mean())}
          for i, k in enumerate(ks) for j, s in enumerate(sigmas)
          for m, lam in enumerate(lambdas)]
  return best_of(grid), grid
