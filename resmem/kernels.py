"""Exact (and approximate) k-nearest neighbours by blocks: a GEMM plus a two-level top-k.

    sq_dist, idx = kernels.knn(queries, database, k=50)              # (Q, k) each, nearest first
    sq_dist, idx = kernels.knn(queries, database, k=50, mesh=mesh)   # database sharded over 'data'

Squared L2 distance is |q|^2 - s with the score s = 2 q.d - |d|^2, so the nearest neighbours are the
largest scores and |q|^2 is added only to the k survivors. Queries are processed `query_block` at a
time and the database `db_block` at a time; a running top-k per query is merged with each block's
top-k, so the working set is O(query_block x (db_block + k)) whatever the database size.

In float32, |q|^2 - 2 q.d + |d|^2 cancels badly for points far from the origin (terms of 1e7 for
squared distances of 0.3 at an offset of 1000 in 16 dimensions: recall 0.013), so queries and
database are first shifted by one shared vector, the database mean. Distances do not change under a
shared shift, and around the mean the GEMM no longer cancels. On one device each database block is
shifted as it is read (no shifted copy of the database); sharded, the database is shifted where its
padding copies it anyway, every shard by the same global mean.

Within a block the top-k is exact but two-level: the block's columns are cut into groups of `group`,
each group's maximum is taken (one cheap pass), the k groups with the largest maxima are kept, and
the top-k is taken over their k x group elements. That is exact: the k-th largest score t of the
block sits in a group whose maximum is >= t, every element >= t is in a group whose maximum is >= t,
and at most k groups have a maximum >= t (each holds a distinct element >= t), so the k best groups
hold all of the top-k (ties aside). On a CPU each `lax.top_k` call has a large fixed cost besides
its per-element cost, so the defaults use few, wide database blocks (65,536 rows) and the two-level
top-k: one top-k over N/16 group maxima and one over 16k candidates instead of one over N.

`mode='approx'` replaces the per-block top-k by `jax.lax.approx_max_k` (the fast path on TPUs; on
CPUs and GPUs XLA falls back to an exact top-k).
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

P = jax.sharding.PartitionSpec
MODES = ('exact', 'approx')
# Defaults measured on one CPU core (benchmarks/knn.py): few, wide database blocks are fastest,
# since every lax.top_k call has a large fixed cost; 256 x 65536 scores are 64 MiB.
QUERY_BLOCK, DB_BLOCK, GROUP = 256, 65536, 16
# The search runs in float32, which holds every integer of magnitude up to 2^24 exactly and no
# longer all of them beyond (16,777,217 becomes 16,777,216): larger integer inputs are refused.
FLOAT32_EXACT_INTEGERS = 2 ** 24


class KnnError(ValueError):
  """Inputs the k-NN kernel cannot serve (the message says which and why)."""


def check_k(k) -> int:
  """k as a Python int; a float, a bool or k < 1 is a KnnError (a float k fails deep in XLA)."""
  if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
    raise KnnError(f'k must be a positive integer, got k={k!r} ({type(k).__name__}).')
  if k < 1:
    raise KnnError(f'k must be a positive integer, got k={k}.')
  return int(k)


def check_integers(x, name: str, error: type[Exception] | None = None) -> None:
  """Refuses integer arrays holding values float32 cannot represent exactly (|v| > 2^24).

  Searched in float32 they would be rounded first, and the neighbours found between the rounded
  points (e.g. 16,777,219 and 16,777,221 both become 16,777,220). Floats are the caller's
  precision choice and are not checked.
  """
  if np.dtype(x.dtype).kind not in 'iu' or not x.size:
    return
  lo, hi = (int(v) for v in jax.device_get((x.min(), x.max())))
  if max(-lo, hi) > FLOAT32_EXACT_INTEGERS:
    raise (error or KnnError)(
        f'{name} are integers of magnitude up to {max(-lo, hi):,}, but the search runs in '
        f'float32, which holds integers exactly only up to 2^24 = {FLOAT32_EXACT_INTEGERS:,}: '
        'they would be rounded and the neighbours found between the rounded points. Subtract an '
        'offset or rescale them into that range (or cast them to float yourself, accepting the '
        'rounding); brute_force searches in float64.')


def as_array(x, name: str):
  """jax arrays as they are (no copy to the host); lists and other array-likes via np.asarray.

  Integer arrays must fit float32's exact range (`check_integers`): the search casts to float32.
  """
  if not isinstance(x, jax.Array):
    try:
      x = np.asarray(x)
    except (TypeError, ValueError) as e:  # ragged lists, objects numpy cannot stack
      raise KnnError(f'{name} must be a rectangular array of numbers: {e}') from None
  dtype = np.dtype(x.dtype)
  if dtype.kind not in 'biuf' and dtype.name != 'bfloat16':  # complex, strings, objects
    raise KnnError(f'{name} must hold real numbers, got dtype {dtype}.')
  check_integers(x, name)
  return x


def check_inputs(queries, database, k: int, finite: bool = True) -> None:
  """Shapes, k and (when `finite`) finiteness; raises KnnError with what is wrong."""
  if database.ndim != 2 or database.shape[0] == 0:
    raise KnnError(f'The database must be a non-empty (N, D) array, got shape {database.shape}.')
  if queries.ndim != 2:
    raise KnnError(f'Queries must be a (Q, D) array, got shape {queries.shape}.')
  if queries.shape[1] != database.shape[1]:
    raise KnnError(f'Queries have dimension {queries.shape[1]} but the database has '
                   f'{database.shape[1]}: embed both with the same layer.')
  if not 1 <= check_k(k) <= database.shape[0]:
    raise KnnError(f'k={k} must be between 1 and the database size {database.shape[0]}.')
  if not finite:
    return
  for name, x in (('queries', queries), ('database', database)):
    bad = ~np.isfinite(np.asarray(x)).all(axis=1)
    if bad.any():
      rows = np.flatnonzero(bad)
      raise KnnError(f'{len(rows)} {name} rows contain NaN or inf (first rows: '
                     f'{rows[:5].tolist()}).')


def centre(database):
  """(D,) mean of the database rows: the shift that makes the score GEMM exact (module doc).

  Summed relative to the first row, so that the float32 sum of N large equal offsets does not
  itself lose the mean (any shift is correct; one near the data is what keeps the precision).
  """
  anchor = database[0]
  return anchor + jnp.mean(database - anchor[None, :], axis=0)


def _block_top_k(scores, k: int, group: int, mode: str, recall_target: float):
  """(values, column indices) of the k largest scores per row of a (bq, bn) block."""
  bq, bn = scores.shape
  if mode == 'approx':
    return jax.lax.approx_max_k(scores, k, recall_target=recall_target)
  if group <= 1 or bn % group or bn // group <= k:
    return jax.lax.top_k(scores, k)
  grouped = scores.reshape(bq, bn // group, group)
  _, best_groups = jax.lax.top_k(grouped.max(axis=2), k)               # (bq, k)
  candidates = jnp.take_along_axis(grouped, best_groups[:, :, None], axis=1)  # (bq, k, group)
  values, flat = jax.lax.top_k(candidates.reshape(bq, k * group), k)
  cols = jnp.take_along_axis(best_groups, flat // group, axis=1) * group + flat % group
  chex.assert_shape([values, cols], (bq, k))
  return values, cols


def _merge(values_a, idx_a, values_b, idx_b, k: int):
  values, pos = jax.lax.top_k(jnp.concatenate([values_a, values_b], axis=1), k)
  return values, jnp.take_along_axis(jnp.concatenate([idx_a, idx_b], axis=1), pos, axis=1)


def _local_knn(queries, database, *, k, query_block, db_block, group, mode, recall_target,
               num_valid=None, index_offset=0, shift=None):
  """Top-k scores (2 q.d - |d|^2) and database indices; queries a multiple of query_block.

  The database is read in place, `db_block` rows at a time (no padded copy): the last block starts
  at N - db_block and its columns already seen are masked, as are rows at or beyond `num_valid`.
  `shift` (D,), when given, is subtracted from each database block as it is read (the queries
  must come already shifted by it); the scores are then those of the shifted points.
  """
  chex.assert_rank([queries, database], 2)
  chex.assert_equal_shape_suffix([queries, database], 1)
  nq, dim = queries.shape
  n = database.shape[0]
  num_valid = n if num_valid is None else num_valid
  nb = -(-n // db_block)

  def one_query_block(q):
    def step(carry, b):
      best, best_idx = carry
      nominal = b * db_block
      start = jnp.minimum(nominal, n - db_block)
      block = jax.lax.dynamic_slice_in_dim(database, start, db_block)
      if shift is not None:  # in the block, not up front: no shifted copy of the whole database
        block = block - shift[None, :]
      cols = start + jnp.arange(db_block, dtype=jnp.int32)
      norms = jnp.where((cols >= nominal) & (cols < num_valid), jnp.sum(block * block, axis=1),
                        jnp.inf)  # seen or padding: never selected
      # HIGHEST: on GPUs the default float32 matmul is TF32 (bfloat16 passes on TPUs), which
      # would make the exact search inexact there (near-tied neighbours swapped).
      scores = 2.0 * jnp.dot(q, block.T, preferred_element_type=jnp.float32,
                             precision=jax.lax.Precision.HIGHEST) - norms[None, :]
      values, local = _block_top_k(scores, k, group, mode, recall_target)
      return _merge(best, best_idx, values, local + start + index_offset, k), None

    init = (jnp.full((q.shape[0], k), -jnp.inf, jnp.float32),
            jnp.full((q.shape[0], k), -1, jnp.int32))
    (best, best_idx), _ = jax.lax.scan(step, init, jnp.arange(nb, dtype=jnp.int32))
    return best, best_idx

  q_blocks = queries.reshape(nq // query_block, query_block, dim)
  best, best_idx = jax.lax.map(one_query_block, q_blocks)
  return best.reshape(nq, k), best_idx.reshape(nq, k)


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _block_sizes(nq, n_local, k, query_block, db_block, group):
  """Block sizes that fit the inputs: db_block <= the (per-shard) database, >= k."""
  query_block = max(1, min(query_block, nq))
  db_block = max(min(db_block, n_local), k)
  if group > 1 and db_block > group:
    db_block = max(db_block - db_block % group, k)  # whole groups when possible
  return query_block, db_block


@functools.partial(jax.jit, static_argnames=('k', 'query_block', 'db_block', 'group', 'mode',
                                             'recall_target'))
def _knn_single(queries, database, *, k, query_block, db_block, group, mode, recall_target):
  nq = queries.shape[0]
  database = database.astype(jnp.float32)
  shift = centre(database)
  queries = queries.astype(jnp.float32) - shift[None, :]
  scores, idx = _local_knn(jnp.pad(queries, ((0, _round_up(nq, query_block) - nq), (0, 0))),
                           database, k=k, query_block=query_block, db_block=db_block, group=group,
                           mode=mode, recall_target=recall_target, shift=shift)
  q_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  return jnp.maximum(q_norms - scores[:nq], 0.0), idx[:nq]


def _knn_sharded(queries, database, *, k, query_block, db_block, group, mode, recall_target,
                 mesh, axis):
  """The database split over mesh axis `axis`; each shard's top-k, then one merge of them all."""
  shards = mesh.shape[axis]
  nq, n = queries.shape[0], database.shape[0]
  per_shard = _round_up(n, shards) // shards
  database = jnp.asarray(database, jnp.float32)
  # One global shift for every shard (each shard's own mean would change the scores they merge);
  # shifted here, where the padding copies the database anyway.
  shift = jax.jit(centre)(database)
  queries = jnp.asarray(queries, jnp.float32) - shift[None, :]
  database = jnp.pad(database - shift[None, :], ((0, shards * per_shard - n), (0, 0)))
  database = jax.device_put(database, jax.sharding.NamedSharding(mesh, P(axis, None)))
  queries_p = jnp.pad(queries, ((0, _round_up(nq, query_block) - nq), (0, 0)))

  def per_device(q, db):
    offset = jax.lax.axis_index(axis) * per_shard
    scores, idx = _local_knn(q, db, k=k, query_block=query_block, db_block=db_block, group=group,
                             mode=mode, recall_target=recall_target, num_valid=n - offset,
                             index_offset=offset)
    all_scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)   # (Q, shards * k)
    all_idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    best, pos = jax.lax.top_k(all_scores, k)
    return best, jnp.take_along_axis(all_idx, pos, axis=1)

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis, None)),
                             out_specs=(P(), P()), check_vma=False))
  scores, idx = fn(queries_p, database)
  q_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  return jnp.maximum(q_norms - scores[:nq], 0.0), idx[:nq]


def knn(queries, database, k: int, *, query_block: int = QUERY_BLOCK, db_block: int = DB_BLOCK,
        group: int = GROUP, mode: str = 'exact', recall_target: float = 0.95,
        mesh: jax.sharding.Mesh | None = None, axis: str = 'data', validate: bool = True):
  """The k nearest database rows (squared L2) of every query, nearest first.

  Args:
    queries: (Q, D) array.
    database: (N, D) array, N >= k. Both are searched in float32 (float64 rounded to it); integer
      inputs beyond float32's exact range (|v| > 2^24) are refused (`check_integers`).
    k: neighbours per query.
    query_block, db_block: block sizes (the working set is about query_block x db_block floats).
    group: columns per group of the two-level top-k (1 turns it off: a plain top-k per block).
    mode: 'exact', or 'approx' for `jax.lax.approx_max_k` per block (TPU).
    recall_target: approx mode's per-block recall target.
    mesh, axis: shard the database over `mesh`'s axis `axis` (queries replicated); each shard's
      top-k is merged after one all-gather of Q x k candidates per shard.
    validate: also check on the host that every row is finite (a pass over both arrays; shapes,
      dtypes and k are always checked). KnnError for any of them.

  Returns:
    (squared distances (Q, k) float32, database indices (Q, k) int32), ascending distance. The
    distances are computed from queries and database shifted by the database mean; a shared shift
    leaves every distance unchanged, so they are the squared distances between the points given,
    with float32 rounding relative to the data's spread around its mean, not to its distance from
    the origin.
  """
  if mode not in MODES:
    raise KnnError(f'Unknown mode {mode!r}; use one of {MODES}.')
  if mode == 'approx' and not 0 < recall_target <= 1:
    raise KnnError(f'recall_target={recall_target} must lie in (0, 1].')
  queries, database = as_array(queries, 'queries'), as_array(database, 'database')
  check_inputs(queries, database, k, finite=validate)
  k = int(k)
  nq, n = queries.shape[0], database.shape[0]
  if nq == 0:  # nothing to search; the blocked scan needs at least one query block
    return jnp.zeros((0, k), jnp.float32), jnp.zeros((0, k), jnp.int32)
  if mesh is not None and axis not in mesh.shape:
    raise KnnError(f'The mesh has no axis {axis!r} to shard the database over; its axes are '
                   f'{tuple(mesh.shape)}.')
  shards = 1 if mesh is None else mesh.shape[axis]
  query_block, db_block = _block_sizes(nq, math.ceil(n / shards), k, query_block, db_block,
                                       group)
  if shards > 1 and k > math.ceil(n / shards):
    raise KnnError(f'k={k} exceeds the {math.ceil(n / shards)} database rows per shard '
                   f'({n} rows over {shards} shards); use fewer shards or a smaller k.')
  kwargs = dict(k=k, query_block=query_block, db_block=db_block, group=group, mode=mode,
                recall_target=recall_target)
  if mesh is None or shards == 1:
    sq, idx = _knn_single(queries, database, **kwargs)
  else:
    sq, idx = _knn_sharded(queries, database, mesh=mesh, axis=axis, **kwargs)
  chex.assert_shape([sq, idx], (nq, k))
  chex.assert_type([sq, idx], [jnp.float32, jnp.int32])
  return sq, idx


def brute_force(queries: np.ndarray, database: np.ndarray, k: int):
  """float64 reference: (squared distances, indices) by a full sort; for tests and recall.

  Shifted by the database mean like the kernel, so that float64 stays exact on uncentred data too.
  """
  q, d = np.asarray(queries, np.float64), np.asarray(database, np.float64)
  shift = d.mean(axis=0, keepdims=True)
  q, d = q - shift, d - shift
  sq = (q * q).sum(1)[:, None] - 2 * q @ d.T + (d * d).sum(1)[None, :]
  idx = np.argsort(sq, axis=1, kind='stable')[:, :k]
  return np.take_along_axis(sq, idx, axis=1), idx


def recall(found: np.ndarray, reference: np.ndarray) -> float:
  """Fraction of the reference neighbours present in `found`, averaged over queries."""
  k = reference.shape[1]
  hits = [len(np.intersect1d(a, b)) for a, b in zip(np.asarray(found), np.asarray(reference))]
  return float(np.sum(hits) / (k * len(hits)))


@functools.partial(jax.jit, static_argnames=('num_valid',))
def _valid_mean(database, num_valid: int):
  """(D,) mean of the first `num_valid` rows (the rest are padding), as `centre` computes it."""
  rows = jnp.arange(database.shape[0])[:, None] < num_valid
  anchor = database[0].astype(jnp.float32)
  diff = jnp.where(rows, database.astype(jnp.float32) - anchor[None, :], 0.0)
  return anchor + jnp.sum(diff, axis=0) / num_valid


@functools.partial(jax.jit, static_argnames=('num_valid',))
def _bad_rows(database, num_valid: int):
  """(count, first row) of valid rows holding NaN or inf, reduced where the shards live."""
  bad = ~jnp.isfinite(database).all(axis=1) & (jnp.arange(database.shape[0]) < num_valid)
  return jnp.sum(bad), jnp.argmax(bad)


def knn_sharded(queries, database: jax.Array, k: int, *, mesh: jax.sharding.Mesh,
                axis: str = 'data', num_valid: int | None = None,
                query_block: int = QUERY_BLOCK, db_block: int = DB_BLOCK, group: int = GROUP,
                mode: str = 'exact', recall_target: float = 0.95, validate: bool = True):
  """`knn` over a database that already lives sharded on the mesh: never one host array.

  `knn(..., mesh=)` takes the database whole and pads and shards it itself, which needs it in one
  array first. Here the caller lays it out (e.g. `jax.make_array_from_callback` reading each
  device's rows from a file): `database` is a global (shards x rows_per_shard, D) jax.Array split
  over `axis`, whose rows at and beyond `num_valid` (default: all) are padding and never returned.
  The database-mean shift is one global (masked) mean computed where the shards live, subtracted
  from each database block as it is read (no shifted copy); each shard's top-k is merged after one
  all-gather, as in `knn`. Validation (shapes, k, finiteness of queries and of the valid rows) runs
  before the search; the finiteness scan of the database is a reduction on the devices.

  Returns:
    (squared distances (Q, k) float32, global row indices (Q, k) int32), ascending distance.
  """
  if mode not in MODES:
    raise KnnError(f'Unknown mode {mode!r}; use one of {MODES}.')
  if mode == 'approx' and not 0 < recall_target <= 1:
    raise KnnError(f'recall_target={recall_target} must lie in (0, 1].')
  if not isinstance(database, jax.Array):
    raise KnnError(f'knn_sharded takes the database as a jax.Array laid out on the mesh, got '
                   f'{type(database).__name__}; use knn(..., mesh=mesh) for a host array.')
  if axis not in mesh.shape:
    raise KnnError(f'The mesh has no axis {axis!r} to shard the database over; its axes are '
                   f'{tuple(mesh.shape)}.')
  queries = as_array(queries, 'queries')
  shards = mesh.shape[axis]
  total = database.shape[0] if database.ndim == 2 else 0
  num_valid = total if num_valid is None else int(num_valid)
  if database.ndim != 2 or not 1 <= num_valid <= total:
    raise KnnError(f'The database must be a non-empty (N, D) array with 1 <= num_valid <= N; got '
                   f'shape {database.shape} and num_valid={num_valid}.')
  if total % shards:
    raise KnnError(f'The database has {total} rows, not a multiple of the {shards} shards of '
                   f'axis {axis!r}: pad it to {_round_up(total, shards)} (num_valid marks the '
                   'padding).')
  check_inputs(queries, _ShapeOnly(database.shape[1], num_valid), k, finite=False)
  check_integers(database, 'database')
  per_shard = total // shards
  if k > per_shard:
    raise KnnError(f'k={k} exceeds the {per_shard} database rows per shard ({total} rows over '
                   f'{shards} shards); use fewer shards or a smaller k.')
  spec = jax.sharding.NamedSharding(mesh, P(axis, None))
  if database.sharding != spec:
    database = jax.device_put(database, spec)  # re-laid out device to device, not via the host
  if validate:
    bad_q = ~np.isfinite(np.asarray(queries)).all(axis=1)
    if bad_q.any():
      rows = np.flatnonzero(bad_q)
      raise KnnError(f'{len(rows)} queries rows contain NaN or inf (first rows: '
                     f'{rows[:5].tolist()}).')
    count, first = (int(v) for v in jax.device_get(_bad_rows(database, num_valid)))
    if count:
      raise KnnError(f'{count} database rows contain NaN or inf (first row: {first}).')
  k = int(k)
  nq = queries.shape[0]
  if nq == 0:
    return jnp.zeros((0, k), jnp.float32), jnp.zeros((0, k), jnp.int32)
  query_block, db_block = _block_sizes(nq, per_shard, k, query_block, db_block, group)
  shift = _valid_mean(database, num_valid)
  queries = jnp.asarray(queries, jnp.float32) - shift[None, :]
  queries_p = jnp.pad(queries, ((0, _round_up(nq, query_block) - nq), (0, 0)))

  def per_device(q, db, s):
    offset = jax.lax.axis_index(axis) * per_shard
    scores, idx = _local_knn(q, db.astype(jnp.float32), k=k, query_block=query_block,
                             db_block=db_block, group=group, mode=mode,
                             recall_target=recall_target, num_valid=num_valid - offset,
                             index_offset=offset, shift=s)
    all_scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)   # (Q, shards * k)
    all_idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    best, pos = jax.lax.top_k(all_scores, k)
    return best, jnp.take_along_axis(all_idx, pos, axis=1)

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(axis, None), P()),
                             out_specs=(P(), P()), check_vma=False))
  scores, idx = fn(queries_p, database, shift)
  q_norms = jnp.sum(queries * queries, axis=1, keepdims=True)
  sq = jnp.maximum(q_norms - scores[:nq], 0.0)
  chex.assert_shape([sq, idx[:nq]], (nq, k))
  return sq, idx[:nq]


class _ShapeOnly:
  """An (num_valid, D) stand-in for `check_inputs`' shape and k checks of a sharded database."""

  def __init__(self, dim: int, rows: int):
    self.shape, self.ndim = (rows, dim), 2
