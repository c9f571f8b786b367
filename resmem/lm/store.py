"""The memory of an LM's training positions: built in chunks (optionally straight into files),
saved and loaded, laid out over a mesh, searched and gathered."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib
from resmem import kernels
from resmem import memory as memory_lib
from resmem.lm import outputs as outputs_lib
from resmem.lm.outputs import LMMemoryError

FORMAT = 'resmem-lm-memory/1'
P = jax.sharding.PartitionSpec

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
    fields = outputs_lib.model_fields(model)
    if fields['d_model'] != self.key_dim:
      raise LMMemoryError(f'The memory\'s keys have width {self.key_dim} but the LM\'s hidden '
                          f'states have {fields["d_model"]}: it was built with another LM.')
    if fields['vocab_size'] != int(self.meta['vocab_size']):
      raise LMMemoryError(f'The memory was built for a vocabulary of {self.meta["vocab_size"]} '
                          f'tokens, the LM predicts {fields["vocab_size"]}.')
    mine = outputs_lib.fingerprint(model, params)
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
        mesh_lib.fetch(a))[:self.num_keys]
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
    outputs_lib.check_finite(hidden, 'query hidden states')
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
      hidden, nxt = mesh_lib.fetch(_gather(self.keys, self.norms, self.next_ids,
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
          mesh_lib.fetch(arr))[:self.num_keys]
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
  # windows() validates the corpus and the context.
  num = len(outputs_lib.windows(ids, context, max_tokens)) * int(context)
  d = int(model.d_model)
  kernel = outputs_lib.readout(params)
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
  for hidden, logits, targets in outputs_lib.batches(model, params, ids, context, batch_size,
                                                     max_tokens):
    if pos == 0:
      outputs_lib.check_readout(hidden[:256], logits[:256], kernel)
    outputs_lib.check_finite(hidden, 'training hidden states', pos)
    norms = np.linalg.norm(hidden, axis=1)
    if not (norms > 0).all():
      raise LMMemoryError(f'A hidden state of norm 0 at position {pos + int(np.argmin(norms))}: '
                          'it has no direction to be a key.')
    n = len(targets)
    out['keys'][pos:pos + n] = hidden / norms[:, None]
    out['norms'][pos:pos + n] = norms
    out['next_ids'][pos:pos + n] = targets
    bits += float(np.sum(outputs_lib.token_bits(logits, targets)))
    pos += n
  meta = dict(meta or {}, fingerprint=outputs_lib.fingerprint(model, params), key_dim=d,
              vocab_size=int(model.vocab_size), context=int(context), num_keys=num,
              train_bits_per_token=bits / num, model=outputs_lib.model_fields(model))
  if path is None:
    return LMMemory(meta=meta, **out)
  for arr in out.values():
    arr.flush()
  del out
  _finish(tmp, path, meta)
  return LMMemory.load(path)
