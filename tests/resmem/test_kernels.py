"""The k-NN kernel: exact against a float64 brute force (blocked, grouped, sharded), bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import mesh as mesh_lib
from resmem import kernels


def _data(seed, nq, n, d, clustered=False):
  rng = np.random.default_rng(seed)
  if clustered:  # many near-ties: points around a few centres
    centres = rng.normal(size=(5, d))
    db = centres[rng.integers(0, 5, n)] + 0.05 * rng.normal(size=(n, d))
  else:
    db = rng.normal(size=(n, d))
  q = rng.normal(size=(nq, d))
  return q.astype(np.float32), db.astype(np.float32)


def _assert_exact(q, db, k, sq, idx):
  """Same neighbours as float64 brute force, up to ties (a swap only between equal distances)."""
  ref_sq, ref_idx = kernels.brute_force(q, db, k)
  np.testing.assert_allclose(np.asarray(sq), ref_sq, rtol=1e-4, atol=1e-3)
  idx = np.asarray(idx)
  assert (idx >= 0).all() and (idx < len(db)).all()
  assert all(len(set(row)) == k for row in idx)  # no duplicates, no padding rows
  exact_sq = ((q[:, None, :].astype(np.float64) - db[idx].astype(np.float64)) ** 2).sum(-1)
  kth = ref_sq[:, -1:]
  # Every returned point is within float32 rounding of the true k-th distance ...
  assert (exact_sq <= kth + 1e-3 * np.maximum(1, kth)).all()
  # ... and every true neighbour strictly closer than the k-th (by a margin) is returned.
  for row, ref_row, ref_d, t in zip(idx, ref_idx, ref_sq, kth[:, 0]):
    must = ref_row[ref_d < t - 1e-3 * max(1, t)]
    assert set(must) <= set(row)


@pytest.mark.parametrize('nq,n,d,k,qb,dbb,group', [
    (37, 1000, 16, 5, 8, 128, 16),     # ragged: queries and database padded
    (64, 3000, 32, 50, 64, 512, 8),    # k larger than a group count threshold
    (10, 777, 8, 1, 16, 256, 1),       # plain top-k path, k = 1
    (20, 60, 4, 60, 8, 32, 16),        # k = N
])
def test_exact_matches_float64_brute_force(nq, n, d, k, qb, dbb, group):
  q, db = _data(nq + n, nq, n, d)
  sq, idx = kernels.knn(q, db, k, query_block=qb, db_block=dbb, group=group)
  assert sq.shape == idx.shape == (nq, k)
  _assert_exact(q, db, k, sq, idx)
  assert kernels.recall(idx, kernels.brute_force(q, db, k)[1]) > 0.999


def test_near_ties_and_default_blocks():
  q, db = _data(3, 50, 5000, 24, clustered=True)
  sq, idx = kernels.knn(q, db, 20)
  _assert_exact(q, db, 20, sq, idx)


def test_grouped_and_plain_top_k_agree():
  q, db = _data(4, 40, 4096, 16)
  a = kernels.knn(q, db, 30, db_block=2048, group=16)
  b = kernels.knn(q, db, 30, db_block=2048, group=1)
  np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))


def test_sharded_database_matches_single_device():
  assert jax.device_count() == 8
  mesh = mesh_lib.make_mesh((('data', 8),))
  q, db = _data(5, 33, 2001, 16)  # 2001 rows: shards padded unevenly
  sq, idx = kernels.knn(q, db, 10, mesh=mesh, db_block=128, query_block=16)
  _assert_exact(q, db, 10, sq, idx)
  single = kernels.knn(q, db, 10, db_block=128, query_block=16)
  np.testing.assert_array_equal(np.asarray(idx), np.asarray(single[1]))


def test_approx_mode_runs_and_recalls_on_cpu():
  q, db = _data(6, 30, 2000, 16)
  _, idx = kernels.knn(q, db, 10, mode='approx', recall_target=0.99)
  assert kernels.recall(idx, kernels.brute_force(q, db, 10)[1]) >= 0.95


def test_bad_inputs():
  q, db = _data(7, 4, 10, 3)
  with pytest.raises(kernels.KnnError, match='k=11 must be between 1 and the database size 10'):
    kernels.knn(q, db, 11)
  with pytest.raises(kernels.KnnError, match='dimension 4 but the database has 3'):
    kernels.knn(np.zeros((2, 4), np.float32), db, 2)
  bad = db.copy()
  bad[3, 1] = np.nan
  with pytest.raises(kernels.KnnError,
                     match=r'1 database rows contain NaN or inf \(first rows: \[3\]\)'):
    kernels.knn(q, bad, 2)
  with pytest.raises(kernels.KnnError, match='non-empty'):
    kernels.knn(q, np.zeros((0, 3), np.float32), 1)
  with pytest.raises(kernels.KnnError, match='Unknown mode'):
    kernels.knn(q, db, 2, mode='fast')


@pytest.mark.parametrize('path', ['single', 'blocked', 'sharded'])
@pytest.mark.parametrize('offset', [10.0, 100.0, 1000.0])
def test_uncentred_data_stays_exact(offset, path):
  # Far from the origin |q|^2 - 2 q.d + |d|^2 cancels in float32 (recall fell to 0.994, 0.555 and
  # 0.013 at these offsets); the database-mean shift must keep every path exact.
  rng = np.random.default_rng(int(offset))
  db = (offset + 0.1 * rng.normal(size=(2000, 16))).astype(np.float32)
  q = (offset + 0.1 * rng.normal(size=(60, 16))).astype(np.float32)
  kwargs = {'single': {},
            'blocked': {'query_block': 16, 'db_block': 256},  # 4 query x 8 database blocks
            'sharded': {'query_block': 16, 'db_block': 64,
                        'mesh': mesh_lib.make_mesh((('data', 8),))}}[path]
  sq, idx = kernels.knn(q, db, 10, **kwargs)
  # The reference from differences in float64: no cancellation, whatever the offset.
  exact = ((q[:, None, :].astype(np.float64) - db[None].astype(np.float64)) ** 2).sum(-1)
  ref_idx = np.argsort(exact, axis=1, kind='stable')[:, :10]
  assert kernels.recall(idx, ref_idx) == 1.0
  np.testing.assert_allclose(np.asarray(sq), np.take_along_axis(exact, ref_idx, 1), rtol=1e-3,
                             atol=1e-5)
  np.testing.assert_array_equal(kernels.brute_force(q, db, 10)[1], ref_idx)


def test_array_likes_are_accepted():
  q, db = _data(8, 5, 40, 3)
  expected = kernels.knn(q, db, 4)
  for got in (kernels.knn(q.tolist(), db.tolist(), 4),             # Python lists
              kernels.knn(jnp.asarray(q), jnp.asarray(db), 4),     # jax arrays stay on device
              kernels.knn(q.astype(np.float64), db, np.int64(4)),  # numpy k, float64 queries
              kernels.knn(q, db, 4, validate=False)):
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(expected[1]))
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(expected[0]), rtol=1e-6)
  sq, idx = kernels.knn(np.zeros((0, 3), np.float32), db, 4)  # no queries: empty answers
  assert sq.shape == idx.shape == (0, 4)


def test_bad_k_and_array_likes():
  q, db = _data(9, 4, 10, 3)
  for k in (2.0, 2.5, True, np.float32(3)):
    with pytest.raises(kernels.KnnError, match=r'k must be a positive integer, got k='):
      kernels.knn(q, db, k)
  for k in (0, -1):
    with pytest.raises(kernels.KnnError, match=f'k must be a positive integer, got k={k}'):
      kernels.knn(q, db, k)
  # Shapes and k are checked even when the finiteness scan is turned off.
  with pytest.raises(kernels.KnnError, match='k must be a positive integer'):
    kernels.knn(q, db, 1.0, validate=False)
  with pytest.raises(kernels.KnnError, match='dimension 2 but the database has 3'):
    kernels.knn(np.zeros((2, 2)), db, 2, validate=False)
  with pytest.raises(kernels.KnnError, match='queries must be a rectangular array'):
    kernels.knn([[0.0, 1.0, 2.0], [1.0]], db, 2)
  with pytest.raises(kernels.KnnError, match='database must hold real numbers, got dtype complex'):
    kernels.knn(q, db.astype(np.complex64), 2)
  with pytest.raises(kernels.KnnError, match='queries must hold real numbers'):
    kernels.knn([['a', 'b', 'c']], db, 2)
  with pytest.raises(kernels.KnnError, match=r'Queries must be a \(Q, D\) array, got shape \(3,\)'):
    kernels.knn(q[0], db, 2)
  with pytest.raises(kernels.KnnError, match=r'recall_target=1.5 must lie in \(0, 1\]'):
    kernels.knn(q, db, 2, mode='approx', recall_target=1.5)
  with pytest.raises(kernels.KnnError, match="no axis 'model'"):
    kernels.knn(q, db, 1, mesh=mesh_lib.make_mesh((('data', 8),)), axis='model')


def test_integer_coordinates_float32_cannot_hold_are_refused_not_rounded():
  # In float32 the query 16,777,219 and the second row 16,777,221 both round to 16,777,220, so
  # the search used to return row 1 at distance 0; the true nearest row is 0 (distance 1).
  db = np.array([[16_777_218], [16_777_221]], np.int64)
  q = np.array([[16_777_219]], np.int64)
  with pytest.raises(kernels.KnnError, match=r'queries are integers of magnitude up to '
                                             r'16,777,219.*2\^24 = 16,777,216'):
    kernels.knn(q, db, 1)
  with pytest.raises(kernels.KnnError, match='database are integers'):
    kernels.knn(q - 16_777_000, db, 1)
  with pytest.raises(kernels.KnnError, match='queries are integers'):  # jax integers too
    kernels.knn(jnp.asarray(-q.astype(np.int32)), db - 16_777_000, 1)
  mesh = mesh_lib.make_mesh((('data', 8),))
  sharded = jax.device_put(jnp.asarray(np.repeat(db.astype(np.int32), 4, 0)),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  with pytest.raises(kernels.KnnError, match='database are integers'):
    kernels.knn_sharded(np.zeros((1, 1), np.float32), sharded, 1, mesh=mesh)
  # Within float32's exact range integers are searched exactly: the true neighbour.
  sq, idx = kernels.knn(q - 16_777_000, db - 16_777_000, 1)
  assert int(idx[0, 0]) == 0 and float(sq[0, 0]) == 1.0
