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

The language-model shape (ResMem-LM's memory: one L2-normalised key per training token):

    taskset -c 0 python -m benchmarks.knn --shape=lm   # Q=16,384, N=2,000,000, D=64, k=32

runs each arm in a child process of its own (kernel, faiss, and the kernel with the database
sharded over 8 fake CPU devices, `kernels.knn_sharded`) and reports its CPU-seconds (one timed
search; the kernel compiled ahead of time), its peak resident memory beyond the host arrays
(ru_maxrss after the search minus the resident set before the arm's set-up: the arm's own copy
of the database and its working set), XLA's scratch account for the kernel, recall against a
float64 brute force (--recall_queries queries) and whether the sharded search returns the
single-device neighbours: the same set in every row, and the rows whose order differs, with the
exact distance gap of the neighbours they swap (below float32's resolution of the distance).
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
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from resmem import kernels


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


LM_SHAPE = {'q': 16_384, 'n': 2_000_000, 'd': 64, 'k': 32}
LM_ARMS = ('kernel', 'faiss', 'sharded')


def _unit_rows(rng, n, d, block=262_144):
  """(n, d) float32 standard normal rows scaled to unit length (the LM memory's keys)."""
  out = np.empty((n, d), np.float32)
  for start in range(0, n, block):
    x = rng.standard_normal((min(block, n - start), d), dtype=np.float32)
    out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
  return out


def _lm_data(args):
  rng = np.random.default_rng(0)
  return _unit_rows(rng, args.q, args.d), _unit_rows(rng, args.n, args.d)


def _max_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb() -> float:
  """The resident set now (the high-water mark would keep the data generation's temporaries)."""
  with open('/proc/self/statm', encoding='ascii') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _lm_child(args):
  """One arm of the LM shape in this process; prints a JSON line and saves its indices."""
  queries, database = _lm_data(args)
  before = _rss_mb()
  start = time.process_time()
  if args.child == 'kernel':
    q_dev, db_dev = jnp.asarray(queries), jnp.asarray(database)
    qb, dbb = kernels._block_sizes(args.q, args.n, args.k, kernels.QUERY_BLOCK, kernels.DB_BLOCK,
                                   kernels.GROUP)
    compiled = kernels._knn_single.lower(
        q_dev, db_dev, k=args.k, query_block=qb, db_block=dbb, group=kernels.GROUP,
        mode='exact', recall_target=0.95).compile()
    analysis = compiled.memory_analysis()
    extra = {'xla_temp_mb': None if analysis is None else round(
        analysis.temp_size_in_bytes / 2**20, 1), 'compile_cpu_s': round(
            time.process_time() - start, 2)}
    start = time.process_time()
    idx = np.asarray(jax.block_until_ready(compiled(q_dev, db_dev))[1])
  elif args.child == 'faiss':
    import faiss  # pylint: disable=g-import-not-at-top
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatL2(args.d)
    index.add(database)
    extra = {}
    idx = index.search(queries, args.k)[1]
  else:  # sharded: the database laid out over 8 fake devices, searched as ResMem-LM does
    from common import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    mesh = mesh_lib.make_mesh((('data', jax.device_count()),))
    db = jax.device_put(database, jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec('data', None)))
    extra = {'devices': jax.device_count(), 'includes_compile': True}
    idx = np.asarray(kernels.knn_sharded(queries, db, args.k, mesh=mesh, validate=False)[1])
  row = {'arm': args.child, 'cpu_s': round(time.process_time() - start, 2),
         'peak_rss_mb_beyond_host_arrays': round(_max_rss_mb() - before, 1), **extra}
  np.save(args.out, idx)
  print(json.dumps(row), flush=True)


def _agreement(single, sharded, queries, database):
  """How the sharded search's indices compare with the single device's.

  Equal sets of k neighbours in every row is the requirement; within a set the order can differ
  where two neighbours' distances differ by less than float32 resolves (the two paths round the
  database-mean shift and the block products differently): each such swap is reported with the
  exact (float64) distance gap of the swapped neighbours.
  """
  same_sets = np.array([set(a) == set(b) for a, b in zip(single, sharded)])
  swapped_rows = np.flatnonzero(same_sets & (single != sharded).any(axis=1))
  gaps = []
  for r in swapped_rows:
    cols = np.flatnonzero(single[r] != sharded[r])
    ids = single[r, cols]
    exact = ((database[ids].astype(np.float64) - queries[r].astype(np.float64)) ** 2).sum(1)
    gaps.append(float(exact.max() - exact.min()))
  return {'indices_equal_single_device': bool(np.array_equal(single, sharded)),
          'same_neighbour_sets_fraction': round(float(same_sets.mean()), 6),
          'rows_reordered': int(len(swapped_rows)),
          'reordered_max_exact_distance_gap': max(gaps) if gaps else 0.0}


def _lm_main(args):
  """The LM shape: every arm in its own process, then recall and agreement."""
  rows, idx = {}, {}
  with tempfile.TemporaryDirectory() as tmp:
    arms = args.arms.split(',')
    procs = {}
    for arm in arms:  # one process per arm; at once with --parallel (CPU-s are per process)
      env = dict(os.environ, JAX_NUM_CPU_DEVICES='8' if arm == 'sharded' else '1')
      cmd = [sys.executable, '-m', 'benchmarks.knn', f'--child={arm}', f'--out={tmp}/{arm}.npy',
             f'--q={args.q}', f'--n={args.n}', f'--d={args.d}', f'--k={args.k}']
      procs[arm] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
      if not args.parallel:
        procs[arm].wait()
    for arm, proc in procs.items():
      stdout, stderr = proc.communicate()
      lines = [l for l in stdout.splitlines() if l.startswith('{')]
      if proc.returncode or not lines:
        print(f'{arm} failed:\n{stderr[-2000:]}', flush=True)
        continue
      rows[arm] = json.loads(lines[-1])
      idx[arm] = np.load(f'{tmp}/{arm}.npy')
      print(rows[arm], flush=True)
  queries, database = _lm_data(args)
  nr = min(args.recall_queries, args.q)
  reference = np.concatenate([kernels.brute_force(queries[i:i + 16], database, args.k)[1]
                              for i in range(0, nr, 16)])
  for arm, ids in idx.items():
    rows[arm]['recall'] = round(kernels.recall(ids[:nr], reference), 5)
  if 'kernel' in idx and 'sharded' in idx:
    rows['sharded'].update(_agreement(idx['kernel'], idx['sharded'], queries, database))
  if 'kernel' in idx and 'faiss' in idx:
    rows['kernel']['vs_faiss_cpu'] = round(rows['kernel']['cpu_s'] / rows['faiss']['cpu_s'], 3)
    rows['kernel']['same_neighbours_as_faiss'] = round(kernels.recall(idx['kernel'],
                                                                      idx['faiss']), 5)
  print(json.dumps({'shape': {k: getattr(args, k) for k in ('q', 'n', 'd', 'k')},
                    'database_mb': round(args.n * args.d * 4 / 2**20, 1), 'arms': rows},
                   indent=1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--q', type=int, default=10_000)
  parser.add_argument('--n', type=int, default=50_000)
  parser.add_argument('--d', type=int, default=128)
  parser.add_argument('--k', type=int, default=50)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--recall_queries', type=int, default=500)
  parser.add_argument('--memory_n', type=int, default=1_000_000)
  parser.add_argument('--arms', default=None, help='comma-separated; default: every arm')
  parser.add_argument('--shape', default='default', choices=('default', 'lm'),
                      help="'lm': Q=16,384, N=2,000,000, D=64, k=32, unit-length rows, each arm "
                           'in its own process (module docstring)')
  parser.add_argument('--parallel', action='store_true',
                      help='--shape=lm: run the arms\' processes at once (CPU-seconds and peak '
                           'memory stay per process; wall time is then shared)')
  parser.add_argument('--child', default=None, choices=LM_ARMS, help=argparse.SUPPRESS)
  parser.add_argument('--out', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return _lm_child(args)
  if args.shape == 'lm':
    given = {a.split('=')[0].lstrip('-') for a in sys.argv[1:]}
    for key, value in LM_SHAPE.items():
      if key not in given:
        setattr(args, key, value)
    args.recall_queries = min(args.recall_queries, 256)
    args.arms = args.arms or ','.join(LM_ARMS)
    return _lm_main(args)
  args.arms = args.arms or 'kernel,jax_plain,faiss,sklearn,numpy,gemm_floor'

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
    seconds, out = timing.timed(arms[name], args.repeats)
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
