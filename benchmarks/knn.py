r"""The exact k-NN kernel (resmem.kernels.knn) against faiss, scikit-learn, numpy and a plain jax.

    taskset -c 0 python -m benchmarks.knn [--q=10000 --n=50000 --d=128 --k=50 --repeats=3]

One pinned core, one XLA / BLAS / OpenMP thread, float32, CPU-seconds (process time; each arm's
minimum over the repeats, noise only adds time). Arms:

  kernel       resmem.kernels.knn: blocked GEMM + two-level top-k, merged running top-k
  jax_plain    jnp.dot + lax.top_k over whole rows, 256 queries at a time (the obvious jax)
  faiss        faiss.IndexFlatL2 (needs faiss-cpu: pip install -e '.[bench]')
  sklearn      NearestNeighbors(algorithm='brute')
  numpy        blocked sgemm + argpartition + sort of the k
  gemm_floor   numpy sgemm of the same distances alone (no selection): the floor

Recall is measured against a float64 brute force on the first --recall_queries queries. Memory is
XLA's own account (`compiled.memory_analysis().temp_size_in_bytes`, the scratch beyond inputs and
outputs) of the kernel and of jax_plain at N = --n and N = --memory_n, compiled without allocating.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')
for _var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from resmem import kernels


def _cpu_seconds(fn, repeats):
  fn()  # warm-up (compilation)
  times = []
  for _ in range(repeats):
    start = time.process_time()
    out = fn()
    jax.block_until_ready(out)
    times.append(time.process_time() - start)
  return min(times), out


@functools.partial(jax.jit, static_argnames=('k', 'block'))
def _jax_plain(queries, database, *, k, block=256):
  norms = jnp.sum(database * database, axis=1)
  def one(q):
    return jax.lax.top_k(2.0 * q @ database.T - norms[None, :], k)
  nq = queries.shape[0]
  pad = -nq % block
  q = jnp.pad(queries, ((0, pad), (0, 0))).reshape(-1, block, queries.shape[1])
  scores, idx = jax.lax.map(one, q)
  return scores.reshape(-1, k)[:nq], idx.reshape(-1, k)[:nq]


def _numpy_knn(queries, database, k, block=1024):
  norms = (database * database).sum(1)
  out = []
  for i in range(0, len(queries), block):
    sq = norms[None, :] - 2.0 * queries[i:i + block] @ database.T
    part = np.argpartition(sq, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(sq, part, 1), axis=1)
    out.append(np.take_along_axis(part, order, 1))
  return np.concatenate(out)


def _gemm_floor(queries, database, block=1024):
  total = 0.0
  for i in range(0, len(queries), block):
    total += float((queries[i:i + block] @ database.T)[0, 0])
  return total


def _temp_bytes(fn, *shapes, **kwargs):
  compiled = jax.jit(functools.partial(fn, **kwargs)).lower(
      *[jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]).compile()
  analysis = compiled.memory_analysis()
  return None if analysis is None else int(analysis.temp_size_in_bytes)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--q', type=int, default=10_000)
  parser.add_argument('--n', type=int, default=50_000)
  parser.add_argument('--d', type=int, default=128)
  parser.add_argument('--k', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--recall_queries', type=int, default=500)
  parser.add_argument('--memory_n', type=int, default=1_000_000)
  parser.add_argument('--arms', default='kernel,jax_plain,faiss,sklearn,numpy,gemm_floor')
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  queries = rng.standard_normal((args.q, args.d)).astype(np.float32)
  database = rng.standard_normal((args.n, args.d)).astype(np.float32)
  nr = min(args.recall_queries, args.q)
  _, reference = kernels.brute_force(queries[:nr], database, args.k)
  q_dev, db_dev = jnp.asarray(queries), jnp.asarray(database)

  arms = {
      'kernel': lambda: kernels.knn(q_dev, db_dev, args.k, validate=False)[1],
      'jax_plain': lambda: _jax_plain(q_dev, db_dev, k=args.k)[1],
      'numpy': lambda: _numpy_knn(queries, database, args.k),
      'gemm_floor': lambda: _gemm_floor(queries, database),
  }
  try:
    import faiss  # pylint: disable=g-import-not-at-top
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatL2(args.d)
    index.add(database)
    arms['faiss'] = lambda: index.search(queries, args.k)[1]
  except ImportError:
    print('faiss not installed (pip install -e ".[bench]"): its arm is skipped.')
  from sklearn.neighbors import NearestNeighbors  # pylint: disable=g-import-not-at-top
  nn = NearestNeighbors(n_neighbors=args.k, algorithm='brute', n_jobs=1).fit(database)
  arms['sklearn'] = lambda: nn.kneighbors(queries, return_distance=False)

  results = {}
  for name in args.arms.split(','):
    if name not in arms:
      continue
    seconds, out = _cpu_seconds(arms[name], args.repeats)
    row = {'cpu_s': round(seconds, 3)}
    if name != 'gemm_floor':
      row['recall'] = round(kernels.recall(np.asarray(out)[:nr], reference), 5)
    results[name] = row
    print(name, row, flush=True)
  floor = results.get('gemm_floor', {}).get('cpu_s')
  for name, row in results.items():
    if floor and name != 'gemm_floor':
      row['fraction_of_gemm_floor'] = round(floor / row['cpu_s'], 3)
    if 'faiss' in results and name != 'faiss':
      row['vs_faiss'] = round(row['cpu_s'] / results['faiss']['cpu_s'], 3)

  memory = {}
  for n in (args.n, args.memory_n):
    qb, dbb = kernels._block_sizes(args.q, n, args.k, kernels.QUERY_BLOCK, kernels.DB_BLOCK,
                                   kernels.GROUP)
    memory[f'kernel_temp_mb_n{n}'] = round(_temp_bytes(
        kernels._knn_single, (args.q, args.d), (n, args.d), k=args.k, query_block=qb,
        db_block=dbb, group=kernels.GROUP, mode='exact', recall_target=0.95) / 2**20, 1)
    memory[f'jax_plain_temp_mb_n{n}'] = round(_temp_bytes(
        _jax_plain, (args.q, args.d), (n, args.d), k=args.k) / 2**20, 1)
  memory['database_mb_n%d' % args.memory_n] = round(args.memory_n * args.d * 4 / 2**20, 1)
  print(json.dumps({'shape': vars(args), 'cpu_seconds': results, 'memory': memory}, indent=1))


if __name__ == '__main__':
  main()
