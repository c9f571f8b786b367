"""Exact (and approximate) k-nearest neighbours by blocks: a GEMM plus a two-level top-k.

    sq_dist, idx = kernels.knn(queries, database, k=50)              # (Q, k) each, nearest first
    sq_dist, idx = kernels.knn(queries, database, k=50, mesh=mesh)   # database sharded over 'data'

Squared L2 distance is |q|^2 - s with the score s = 2 q.d - |d|^2, so the nearest neighbours are the
largest scores and |q|^2 is added only to the k survivors. Queries are processed `query_block` at a
time and the database `db_block` at a time; a running top-k per query is merged with each block's
top-k, so the working set is O(query_block x (db_block + k)) whatever the database size.

Within a block the top-k is exact but two-level: the block's columns are cut into groups of `group`,
each group's maximum is taken (one cheap pass), the k groups with the largest maxima are kept, and the
top-k is taken over their k x group elements. That is exact: the k-th largest score t of the block
sits in a group whose maximum is >= t, every element >= t is in a group whose maximum is >= t, and
at most k groups have a maximum >= t (each holds a distinct element >= t), so the k best groups hold
all of the top-k (ties aside). A full `lax.top_k` over the block costs several times the GEMM on a
CPU; the group maxima cost one pass.

`mode='approx'` replaces the per-block top-k by `jax.lax.approx_max_k` (the fast path on TPUs; on
CPUs and GPUs XLA falls back to an exact top-k).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

P = jax.sharding.PartitionSpec
MODES = ('exact', 'approx')


class KnnError(ValueError):
  """Inputs the k-NN kernel cannot serve (the message says which and why)."""


def check_inputs(queries, database, k: int) -> None:
  """Shapes, k and finiteness; raises KnnError with what is wrong."""
  if database.ndim != 2 or database.shape[0] == 0:
    raise KnnError(f'The database must be a non-empty (N, D) array, got shape {database.shape}.')
  if queries.ndim != 2:
    raise KnnError(f'Queries must be a (Q, D) array, got shape {queries.shape}.')
  if queries.shape[1] != database.shape[1]:
    raise KnnError(f'Queries have dimension {queries.shape[1]} but the database has '
                   f'{database.shape[1]}: embed both with the same layer.')
  if not 1 <= k <= database.shape[0]:
    raise KnnError(f'k={k} must be between 1 and the database size {database.shape[0]}.')
  for name, x in (('queries', queries), ('database', database)):
    bad = ~np.isfinite(np.asarray(x)).all(axis=1)
    if bad.any():
      rows = np.flatnonzero(bad)
      raise KnnError(f'{len(rows)} {name} rows contain NaN or inf (first rows: {rows[:5].tolist()}).')


def _block_top_k(scores, k: int, group: int, mode: str, recall_target: float):
  """(values, column indices) of the k largest scores per row of a (bq, bn) block."""
  bq, bn = scores.shape
  if mode == 'approx':
    return jax.lax.approx_max_k(scores, k, recall_target=recall_target)
  if group <= 1 or bn // group <= k:
    return jax.lax.top_k(scores, k)
  grouped = scores.reshape(bq, bn // group, group)
  _, best_groups = jax.lax.top_k(grouped.max(axis=2), k)               # (bq, k)
  candidates = jnp.take_along_axis(grouped, best_groups[:, :, None], axis=1)  # (bq, k, group)
  values, flat = jax.lax.top_k(candidates.reshape(bq, k * group), k)
  cols = jnp.take_along_axis(best_groups, flat // group, axis=1) * group + flat % group
  return values, cols


def _merge(values_a, idx_a, values_b, idx_b, k: int):
  values, pos = jax.lax.top_k(jnp.concatenate([values_a, values_b], axis=1), k)
  return values, jnp.take_along_axis(jnp.concatenate([idx_a, idx_b], axis=1), pos, axis=1)


def _local_knn(queries, database, db_sq_norms, *, k, query_block, db_block, group, mode,
               recall_target, index_offset=0):
  """Top-k scores (2 q.d - |d|^2) and database indices for padded, block-aligned inputs."""
  nq, dim = queries.shape
  nb = database.shape[0] // db_block
  db_blocks = database.reshape(nb, db_block, dim)
  norm_blocks = db_sq_norms.reshape(nb, db_block)

  def one_query_block(q):
    def step(carry, xs):
      best, best_idx = carry
      block, norms, start = xs
      scores = 2.0 * jnp.dot(q, block.T, preferred_element_type=jnp.float32) - norms[None, :]
      values, cols = _block_top_k(scores, k, group, mode, recall_target)
      return _merge(best, best_idx, values, cols + start, k), None

    init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32),
            jnp.full((q.shape[0], k), -1, jnp.int32))
    starts = jnp.arange(nb, dtype=jnp.int32) * db_block + index_offset
    (best, best_idx), _ = jax.lax.scan(step, init, (db_blocks, norm_blocks, starts))
    return best, best_idx

  q_blocks = queries.reshape(nq // query_block, query_block, dim)
  best, best_idx = jax.lax.map(one_query_block, q_blocks)
  return best.reshape(nq, k), best_idx.reshape(nq, k)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block_sizes(nq, n_local, k, query_block, db_block, group):
  query_block = max(1, min(query_block, nq))
  db_block = min(db_block, _round_up(n_local, group))
  db_block = max(_round_up(db_block, group), _round_up(k, group))
  return query_block, db_block


@functools.partial(jax.jit, static_argnames=('k', 'query_block', 'db_block', 'group', 'mode',
                                             'recall_target'))
def _knn_single(queries, database, *, k, query_block, db_block, group, mode, recall_target):
  nq, n = queries.shape[0], database.shape[0]
  queries = queries.astype(jnp.float32)
  database = database.astype(jnp.float32)
  norms = jnp.sum(database * database, axis=1)
  q_pad, n_pad = _round_up(nq, query_block) - nq, _round_up(n, db_block) - n
  database = jnp.pad(database, ((0, n_pad), (0, 0)))
  norms = jnp.pad(norms, (0, n_pad), constant_values=jnp.inf)  # padding never wins
  scores, idx = _local_knn(jnp.pad(queries, ((0, q_pad), (0, 0))), database, norms, k=k,
                           query_block=query_block, db_block=db_block, group=group, mode=mode,
                           recall_target=recall_target)
  q_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  return jnp.maximum(q_norms - scores[:nq], 0.0), idx[:nq]


def _knn_sharded(queries, database, *, k, query_block, db_block, group, mode, recall_target,
                 mesh, axis):
  """The database split over mesh axis `axis`; each shard's top-k, then one merge of them all."""
  shards = mesh.shape[axis]
  nq, n = queries.shape[0], database.shape[0]
  per_shard = _round_up(_round_up(n, shards) // shards, db_block)
  padded = shards * per_shard
  queries = jnp.asarray(queries, jnp.float32)
  database = jnp.pad(jnp.asarray(database, jnp.float32), ((0, padded - n), (0, 0)))
  norms = jnp.sum(database * database, axis=1).at[n:].set(jnp.inf)
  q_pad = _round_up(nq, query_block) - nq
  queries_p = jnp.pad(queries, ((0, q_pad), (0, 0)))
  database = jax.device_put(database, jax.sharding.NamedSharding(mesh, P(axis, None)))
  norms = jax.device_put(norms, jax.sharding.NamedSharding(mesh, P(axis)))

  def per_device(q, db, db_norms):
    offset = jax.lax.axis_index(axis) * per_shard
    scores, idx = _local_knn(q, db, db_norms, k=k, query_block=query_block, db_block=db_block,
                             group=group, mode=mode, recall_target=recall_target,
                             index_offset=offset)
    all_scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)   # (Q, shards * k)
    all_idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    best, pos = jax.lax.top_k(all_scores, k)
    return best, jnp.take_along_axis(all_idx, pos, axis=1)

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis, None), P(axis)),
                             out_specs=(P(), P()), check_vma=False))
  scores, idx = fn(queries_p, database, norms)
  q_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  return jnp.maximum(q_norms - scores[:nq], 0.0), idx[:nq]


def knn(queries, database, k: int, *, query_block: int = 256, db_block: int = 16384,
        group: int = 16, mode: str = 'exact', recall_target: float = 0.95,
        mesh: jax.sharding.Mesh | None = None, axis: str = 'data', validate: bool = True):
  """The k nearest database rows (squared L2) of every query, nearest first.

  Args:
    queries: (Q, D) array.
    database: (N, D) array, N >= k.
    k: neighbours per query.
    query_block, db_block: block sizes (the working set is about query_block x db_block floats).
    group: columns per group of the two-level top-k (1 turns it off: a plain top-k per block).
    mode: 'exact', or 'approx' for `jax.lax.approx_max_k` per block (TPU).
    recall_target: approx mode's per-block recall target.
    mesh, axis: shard the database over `mesh`'s axis `axis` (queries replicated); each shard's
      top-k is merged after one all-gather of Q x k candidates per shard.
    validate: check shapes, k and finiteness on the host first (KnnError).

  Returns:
    (squared distances (Q, k) float32, database indices (Q, k) int32), ascending distance.
  """
  if mode not in MODES:
    raise KnnError(f'Unknown mode {mode!r}; use one of {MODES}.')
  if validate:
    check_inputs(queries, database, k)
  nq, n = queries.shape[0], database.shape[0]
  shards = 1 if mesh is None else mesh.shape[axis]
  query_block, db_block = _block_sizes(nq, math.ceil(n / shards), k, query_block, db_block,
                                       group)
  kwargs = dict(k=k, query_block=query_block, db_block=db_block, group=group, mode=mode,
                recall_target=recall_target)
  if mesh is None or shards == 1:
    return _knn_single(queries, database, **kwargs)
  return _knn_sharded(queries, database, mesh=mesh, axis=axis, **kwargs)


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
  """float64 reference: (squared distances, indices) by a full sort; for tests and recall."""
  q, d = np.asarray(queries, np.float64), np.asarray(database, np.float64)
  sq = (q * q).sum(1)[:, None] - 2 * q @ d.T + (d * d).sum(1)[None, :]
  idx = np.argsort(sq, axis=1, kind='stable')[:, :k]
  return np.take_along_axis(sq, idx, axis=1), idx


def recall(found: np.ndarray, reference: np.ndarray) -> float:
  """Fraction of the reference neighbours present in `found`, averaged over queries."""
  k = reference.shape[1]
  hits = [len(np.intersect1d(a, b)) for a, b in zip(np.asarray(found), np.asarray(reference))]
  return float(np.sum(hits) / (k * len(hits)))
