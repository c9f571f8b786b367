r"""M models trained at once (common.ensemble) against a Python loop over M single-model steps.

    cd /work/main && taskset -c 0 env \
        XLA_FLAGS='--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1' \
        OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 JAX_NUM_CPU_DEVICES=1 \
        .venv/bin/python -m benchmarks.ensemble [--quick] [--repeats=3] [--chunks=8,32]

One pinned core, one XLA / BLAS thread, float32, CPU-seconds (process time), one device. Models:
MLPs 64-W-W-10 (W in 16, 64, 256) on random (64,) inputs, and a small 1-D ResNet (width 16,
stages (1, 1), group norm) on random (40, 1) inputs like mnist1d; 10 classes, N = 4096 examples,
batch 128 per model, Adam (constant learning rate). Per configuration (M models of one kind):

  loop       the obvious alternative: a Python loop of M calls of one jitted, donated single-model
             Adam step (same per-example loss; each model its own batch, gathered on the device
             from the same device-resident data); one ensemble step = M calls
  vmap       the jitted, donated `ensemble.make_step` of all M models in one call
  chunk_k    M / k calls of the same step for k models, each chunk its own stacked state, as
             train_ensemble runs ensemble.chunk_size=k; k < M (k = 1: an un-batched step each)
  auto       which of these train_ensemble picks with chunk_size=0 (ensemble.choose_chunk)
  bare_vmap  `jax.vmap` of the loop's own single-model step over all M models (mean loss, no
             weights, RNG or NaN record): what vmap alone gives, against which the ensemble's
             bookkeeping is judged

Every arm is compiled and run once, then timed for one step, which sets its number of steps n
(about --target_s CPU-seconds, within [--min_steps, --max_steps]); then --repeats rounds time n
steps of every arm in turn (interleaved, so the arms share the machine's moods), each run ending
in block_until_ready. An arm's estimate is its minimum per-step CPU-s over the rounds (noise on a
shared machine only adds time); the median is printed beside it. Reported per arm:

  example_models_per_s   M * 128 / per-step CPU-s
  speedup                loop per-step / arm per-step
  sgemm_fraction         (6 * forward multiply-adds per example) * M * 128 / per-step CPU-s, over
                         numpy's float32 1024^3 sgemm FLOP/s on this core (best of start and end)
  temp_mb_per_model      XLA's compiled scratch (memory_analysis().temp_size_in_bytes) per model:
                         the arm's program's / the models it holds (loop: one model's program)

`--loop_check` (default on) also times `ensemble.train_ensemble` (M=64, W=64, chunk_size=0) for
--n1 and --n2 steps; the difference of the minimum
CPU-seconds cancels start-up, compilation and the final checkpoint, leaving the real loop's
per-step cost (index upload every 64 steps, per-model orders, metrics every 50 steps, NaN checks),
set against the bare step timed in the same rounds. One JSON line per configuration, then a
markdown table. The full grid takes about 11 minutes on one core; --quick about 4.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')
for _var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
  os.environ.setdefault(_var, '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json
import math
import tempfile
import time

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from common import ensemble
from common import models
from common import train as train_lib
from configs.common import loop as loop_config

BATCH = 128
NUM_EXAMPLES = 4096
NUM_CLASSES = 10
INDEX_STEPS = 16  # steps of indices on the device, cycled (train_ensemble sends 64 at a time)


# ---------------------------------------------------------------------------------------------
# The models, their data and their FLOPs.
# ---------------------------------------------------------------------------------------------
def architecture(name: str):
  """(model config, example shape) of 'mlp16' / 'mlp64' / 'mlp256' / 'resnet1d'."""
  if name.startswith('mlp'):
    width = int(name[3:])
    return {'name': 'mlp', 'widths': (width, width)}, (64,)
  if name == 'resnet1d':
    return {'name': 'resnet', 'ndim': 1, 'width': 16, 'stage_sizes': (1, 1)}, (40, 1)
  raise ValueError(f'Unknown architecture {name!r}; use mlp<W> or resnet1d.')


def forward_macs(params, example_shape) -> int:
  """Multiply-adds of one example's forward pass: dense kernels, and convs at their length."""
  total = 0
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    keys = [getattr(k, 'key', str(k)) for k in path]
    if keys[-1] != 'kernel':
      continue
    if leaf.ndim == 2:  # dense: in x out
      total += int(np.prod(leaf.shape))
      continue
    # 1-D conv (taps, in, out) at every output position ('SAME'; stages after the first stride 2).
    stage = next((int(k[5:k.index('_')]) for k in keys if k.startswith('stage')), 0)
    total += math.ceil(example_shape[0] / 2**stage) * int(np.prod(leaf.shape))
  return total


def synthetic_data(example_shape, seed=0):
  rng = np.random.default_rng(seed)
  return {'inputs': rng.standard_normal((NUM_EXAMPLES,) + example_shape).astype(np.float32),
          'label': rng.integers(0, NUM_CLASSES, NUM_EXAMPLES).astype(np.int32)}


def per_example_loss(model):
  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']), ({}, {})
  return loss_fn


def optimizer():
  return train_lib.make_optimizer(loop_config.optimizer(name='adam', schedule='constant'), 1)


# ---------------------------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------------------------
def _run(step, n):
  start = time.process_time()
  out = None
  for k in range(n):
    out = step(k)
  jax.block_until_ready(out)
  return time.process_time() - start


def time_arms(arms, args):
  """{name: (min, median, n)} per-step CPU-s; arms {name: step(k)}, already compiled.

  An arm slower than --target_s per step runs one step per round, its probe counting as one.
  """
  plan = {}
  for name, step in arms.items():
    _run(step, 1)  # first buffers, caches
    one = _run(step, 1)
    n = int(np.clip(round(args.target_s / max(one, 1e-6)), args.min_steps, args.max_steps))
    plan[name] = (1, [one]) if one >= args.target_s else (n, [])
  for r in range(args.repeats):
    for name, step in arms.items():
      n, times = plan[name]
      if len(times) <= r:
        times.append(_run(step, n) / n)
  return {name: (float(min(t)), float(np.median(t)), n) for name, (n, t) in plan.items()}


def sgemm_flops_per_s(m=1024, k=1024, n=1024, repeats=5) -> float:
  """numpy float32 (m, k) @ (k, n) FLOP/s, best of `repeats`, one BLAS thread."""
  a = np.random.default_rng(0).standard_normal((m, k)).astype(np.float32)
  b = np.random.default_rng(1).standard_normal((k, n)).astype(np.float32)
  inner = max(1, int(2e8 // (2 * m * k * n)))
  a @ b
  best = math.inf
  for _ in range(repeats):
    start = time.process_time()
    for _ in range(inner):
      a @ b
    best = min(best, (time.process_time() - start) / inner)
  return 2 * m * k * n / best


def compile_with_temp_bytes(jitted, *args):
  """Compiles (jit keeps it for the calls that follow); XLA's scratch bytes, or None."""
  analysis = jitted.lower(*args).compile().memory_analysis()
  return None if analysis is None else int(analysis.temp_size_in_bytes)


# ---------------------------------------------------------------------------------------------
# The arms: each returns (step(k), temp bytes per model).
# ---------------------------------------------------------------------------------------------
def init_ensemble(init_fn, tx, num_models, seed=0):
  """The stacked state as train_ensemble makes it: model m from fold_in(key(seed), m)."""
  rng = jax.random.key(seed)
  rngs = jax.vmap(lambda m: jax.random.fold_in(rng, m))(jnp.arange(num_models))

  def init(rngs):
    params, opt_state, model_state = jax.vmap(
        lambda r: ensemble._init_one(init_fn, tx, r))(rngs)  # pylint: disable=protected-access
    return ensemble.EnsembleState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=opt_state, model_state=model_state,
                                  nonfinite_step=jnp.full((num_models,), -1, jnp.int32))
  return jax.jit(init)(rngs)


def _models(state, first, count):
  """Models [first, first + count) of a stacked state, as a state of their own."""
  take = lambda x: x[first:first + count] if x.ndim else x
  return jax.tree.map(lambda x: jnp.copy(take(x)), state)


def chunks_arm(setup, chunk):
  """M / chunk calls of the jitted, donated `ensemble.make_step` of `chunk` models, each chunk
  its own stacked state, as train_ensemble runs them (chunk = M: one call of all M models)."""
  model, data, indices, weights, state0, tx = setup
  num_models = indices.shape[1]
  jitted = jax.jit(ensemble.make_step(per_example_loss(model), tx, seed=1), donate_argnums=(0,))
  starts = range(0, num_models, chunk)
  states = [_models(state0, s, chunk) for s in starts]
  parts = [(weights[s:s + chunk], indices[:, s:s + chunk], s) for s in starts]
  w, idx, s0 = parts[0]
  temp = compile_with_temp_bytes(jitted, states[0], data, w, idx, 0, s0)

  def step(k):
    metrics = None
    for c, (w, idx, s) in enumerate(parts):
      states[c], metrics = jitted(states[c], data, w, idx, k % INDEX_STEPS, s)
    return metrics  # the device runs calls in order: the last one done means all are
  return step, None if temp is None else temp / chunk


def auto_chunk(arch, num_models):
  """The chunk train_ensemble chooses (chunk_size=0) for this model on this backend."""
  model_config, example_shape = architecture(arch)
  model = models.build(model_config, NUM_CLASSES)
  flops, conv = ensemble.step_cost(
      per_example_loss(model), optimizer(),
      lambda rng: model.init(rng, jnp.zeros((1,) + example_shape)),
      {'inputs': jax.ShapeDtypeStruct((BATCH,) + example_shape, jnp.float32),
       'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)})
  return ensemble.choose_chunk(num_models, flops, conv)


def loop_arm(setup):
  """M calls of one jitted single-model Adam step per ensemble step, each its own batch."""
  model, data, indices, _, state0, tx = setup
  num_models = indices.shape[1]
  loss_fn = per_example_loss(model)

  def single(params, opt_state, data, idx):
    batch = jax.tree.map(lambda a: a[idx], data)

    def mean_loss(p):
      return jnp.mean(loss_fn(p, {}, batch, None)[0])
    loss, grads = jax.value_and_grad(mean_loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  jitted = jax.jit(single, donate_argnums=(0, 1))
  take = jax.jit(lambda tree, m: jax.tree.map(lambda x: x[m], tree))
  states = [take((state0.params, state0.opt_state), m) for m in range(num_models)]
  rows = [[indices[s, m] for m in range(num_models)] for s in range(INDEX_STEPS)]  # on device
  temp = compile_with_temp_bytes(jitted, *states[0], data, rows[0][0])

  def step(k):
    row = rows[k % INDEX_STEPS]
    loss = None
    for m in range(num_models):
      params, opt_state, loss = jitted(*states[m], data, row[m])
      states[m] = (params, opt_state)
    return loss  # the device runs calls in order: the last one done means all are
  return step, temp


def bare_vmap_arm(setup):
  """jax.vmap of the loop's single-model step (mean loss, no weights, RNG or NaN record)."""
  model, data, indices, _, state0, tx = setup
  num_models = indices.shape[1]
  loss_fn = per_example_loss(model)

  def single(params, opt_state, idx):
    batch = jax.tree.map(lambda a: a[idx], data)
    mean_loss = lambda p: jnp.mean(loss_fn(p, {}, batch, None)[0])
    loss, grads = jax.value_and_grad(mean_loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  jitted = jax.jit(jax.vmap(single), donate_argnums=(0, 1))
  box = [jax.tree.map(jnp.copy, (state0.params, state0.opt_state))]
  temp = compile_with_temp_bytes(jitted, *box[0], indices[0])

  def step(k):
    params, opt_state, loss = jitted(*box[0], indices[k % INDEX_STEPS])
    box[0] = (params, opt_state)
    return loss
  return step, None if temp is None else temp / num_models


def make_setup(arch, num_models):
  model_config, example_shape = architecture(arch)
  model = models.build(model_config, NUM_CLASSES)
  init_fn = lambda rng: model.init(rng, jnp.zeros((1,) + example_shape))
  tx = optimizer()
  order = ensemble.EnsembleOrder(np.ones((num_models, NUM_EXAMPLES), np.float32), BATCH, seed=0)
  indices = jnp.asarray(np.stack([order.indices(k) for k in range(INDEX_STEPS)]))  # (S, M, B)
  data = jax.tree.map(jnp.asarray, synthetic_data(example_shape))
  weights = jnp.ones((num_models, NUM_EXAMPLES), jnp.float32)
  state0 = init_ensemble(init_fn, tx, num_models)
  params = nn.meta.unbox(jax.eval_shape(init_fn, jax.random.key(0))['params'])
  return (model, data, indices, weights, state0, tx), forward_macs(params, example_shape)


def configuration(arch, num_models, chunks, args):
  """Times every arm of one configuration; a row without the FLOP fractions (see finish_row)."""
  started = time.process_time()
  setup, macs = make_setup(arch, num_models)
  arms, temps = {}, {}
  arms['loop'], temps['loop'] = loop_arm(setup)
  arms['vmap'], temps['vmap'] = chunks_arm(setup, num_models)
  arms['bare_vmap'], temps['bare_vmap'] = bare_vmap_arm(setup)
  auto = auto_chunk(arch, num_models)
  for chunk in sorted({c for c in chunks if c < num_models and num_models % c == 0} | {auto}):
    if chunk < num_models:
      arms[f'chunk_{chunk}'], temps[f'chunk_{chunk}'] = chunks_arm(setup, chunk)
  times = time_arms(arms, args)
  del arms, setup
  loop_s = times['loop'][0]
  row = {'model': arch, 'M': num_models, 'batch': BATCH, 'forward_macs': macs,
         'auto': 'vmap' if auto >= num_models else f'chunk_{auto}',
         'flops_per_step': 6 * macs * num_models * BATCH, 'arms': {}}
  for name, (best, med, n) in times.items():
    row['arms'][name] = {
        'step_ms': round(best * 1e3, 4), 'step_ms_median': round(med * 1e3, 4), 'steps': n,
        'example_models_per_s': round(num_models * BATCH / best),
        'speedup': round(loop_s / best, 3),
        'gflops': round(row['flops_per_step'] / best / 1e9, 2),
        'temp_mb_per_model': None if temps[name] is None else round(temps[name] / 2**20, 4)}
  ensemble_arms = {k: v for k, v in row['arms'].items() if k not in ('loop', 'bare_vmap')}
  row['best'] = min(ensemble_arms, key=lambda k: ensemble_arms[k]['step_ms'])
  if arch.startswith('mlp'):  # numpy's sgemm at one model's hidden GEMM: the loop's ceiling
    width = architecture(arch)[0]['widths'][0]
    row['sgemm_gflops_at_shape'] = round(sgemm_flops_per_s(BATCH, width, width) / 1e9, 1)
  row['cpu_s'] = round(time.process_time() - started, 1)
  return row


def finish_row(row, sgemm):
  for arm in row['arms'].values():
    arm['sgemm_fraction'] = round(arm['gflops'] * 1e9 / sgemm, 4)
  return row


# ---------------------------------------------------------------------------------------------
# The real loop: common.ensemble.train_ensemble for N1 and N2 steps.
# ---------------------------------------------------------------------------------------------
def train_ensemble_cpu_seconds(arch, num_models, chunk, steps):
  model_config, example_shape = architecture(arch)
  model = models.build(model_config, NUM_CLASSES)
  arrays = synthetic_data(example_shape)
  config = loop_config.get_config(
      batch_size=BATCH, total_steps=steps, log_every_steps=50, checkpoint_every_steps=10**9,
      mesh=(('data', 1), ('model', 1)), num_devices=1,
      optimizer=loop_config.optimizer(name='adam', schedule='constant'))
  config.ensemble = loop_config.ensemble(num_models, chunk_size=chunk)
  with tempfile.TemporaryDirectory() as workdir:
    start = time.process_time()
    result = ensemble.train_ensemble(
        config, workdir, init_fn=lambda rng: model.init(rng, jnp.zeros((1,) + example_shape)),
        loss_fn=per_example_loss(model), arrays=arrays)
    jax.block_until_ready(result.state)
    return time.process_time() - start


def loop_check(arch, num_models, chunk, args):
  """train_ensemble's per-step CPU-s, (min of N2 runs - min of N1 runs) / (N2 - N1), against
  the bare jitted step of the same chunks timed in the same rounds (chunk 0: the chosen one)."""
  setup, _ = make_setup(arch, num_models)
  bare, _ = chunks_arm(setup, chunk or auto_chunk(arch, num_models))
  _run(bare, 2)
  train_ensemble_cpu_seconds(arch, num_models, chunk, 10)  # imports and one-time set-up
  t1, t2, tb = [], [], []
  for _ in range(args.check_repeats):
    tb.append(_run(bare, args.n1) / args.n1)
    t1.append(train_ensemble_cpu_seconds(arch, num_models, chunk, args.n1))
    t2.append(train_ensemble_cpu_seconds(arch, num_models, chunk, args.n2))
  per_step = (min(t2) - min(t1)) / (args.n2 - args.n1)
  median = (float(np.median(t2)) - float(np.median(t1))) / (args.n2 - args.n1)
  return {'check': 'train_ensemble', 'model': arch, 'M': num_models, 'chunk': chunk,
          'steps': [args.n1, args.n2],
          'runs_cpu_s': [[round(t, 2) for t in t1], [round(t, 2) for t in t2]],
          'startup_cpu_s': round(min(t1) - args.n1 * per_step, 2),
          'loop_step_ms': round(per_step * 1e3, 4), 'loop_step_ms_median': round(median * 1e3, 4),
          'bare_step_ms': round(min(tb) * 1e3, 4), 'overhead': round(per_step / min(tb) - 1, 4),
          'example_models_per_s': round(num_models * BATCH / per_step)}


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------
def table(rows, checks, sgemm):
  lines = [f'sgemm (numpy, 1024^3 float32, one thread): {sgemm / 1e9:.1f} GFLOP/s. FLOPs per '
           'example-model = 6 x forward multiply-adds; speedup = loop step / arm step; '
           'memory = XLA temp MB per model; auto = what train_ensemble runs (chunk_size=0).', '',
           '| model | M | loop ex-models/s | bare vmap speedup | vmap speedup | auto arm | '
           'auto ex-models/s | '
           'auto speedup | auto % sgemm | loop % sgemm | best arm (speedup) | '
           'temp MB/model vmap / auto / loop |',
           '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|']
  for row in rows:
    a, auto = row['arms'], row['arms'][row['auto']]
    mem = ' / '.join('-' if a[k]['temp_mb_per_model'] is None else
                     f"{a[k]['temp_mb_per_model']:.3g}" for k in ('vmap', row['auto'], 'loop'))
    lines.append(
        f"| {row['model']} | {row['M']} | {a['loop']['example_models_per_s']:,} | "
        f"{a['bare_vmap']['speedup']:.2f}x | {a['vmap']['speedup']:.2f}x | {row['auto']} | "
        f"{auto['example_models_per_s']:,} | "
        f"{auto['speedup']:.2f}x | {100 * auto['sgemm_fraction']:.1f}% | "
        f"{100 * a['loop']['sgemm_fraction']:.1f}% | {row['best']} "
        f"({a[row['best']]['speedup']:.2f}x) | {mem} |")
  lines += ['', 'Every arm, speedup over the loop (per-step ms):', '']
  for row in rows:
    arms = ', '.join(f"{k} {v['speedup']:.2f}x ({v['step_ms']:.3g})"
                     for k, v in row['arms'].items())
    lines.append(f"- {row['model']} M={row['M']}: {arms}")
  for c in checks:
    lines += ['', f"train_ensemble {c['model']} M={c['M']} chunk_size={c['chunk']}: "
              f"{c['loop_step_ms']:.3f} ms/step vs the bare step's {c['bare_step_ms']:.3f} ms "
              f"(overhead {100 * c['overhead']:+.1f}%), {c['example_models_per_s']:,} "
              f"example-models/s; start-up {c['startup_cpu_s']:.1f} CPU-s"]
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='M in (8, 64), MLPs of W in (16, 64), no ResNet, 2 rounds, shorter')
  parser.add_argument('--archs', default='mlp16,mlp64,mlp256,resnet1d')
  parser.add_argument('--models', default='8,64,256', help='values of M for the MLPs')
  parser.add_argument('--chunks', default='8,32', help='chunk sizes for the MLPs (those < M)')
  parser.add_argument('--resnet_models', default='8,64',
                      help='values of M for the ResNet (its vmapped step takes seconds at 64)')
  parser.add_argument('--resnet_chunks', default='8', help='(and the chosen one, 1)')
  parser.add_argument('--repeats', type=int, default=3, help='timed rounds per arm')
  parser.add_argument('--target_s', type=float, default=0.3,
                      help='CPU-seconds per timed run (sets its number of steps)')
  parser.add_argument('--min_steps', type=int, default=3)
  parser.add_argument('--max_steps', type=int, default=50)
  parser.add_argument('--loop_check', type=int, default=1,
                      help='1: also time train_ensemble (M=64, W=64) for n1 and n2 steps')
  parser.add_argument('--check_repeats', type=int, default=2)
  parser.add_argument('--n1', type=int, default=100)
  parser.add_argument('--n2', type=int, default=700)
  args = parser.parse_args()
  if args.quick:
    args.models, args.archs = '8,64', 'mlp16,mlp64'
    args.repeats, args.target_s, args.n1, args.n2 = 2, 0.2, 50, 350
  ints = lambda text: [int(v) for v in text.split(',') if v]
  logging.set_verbosity(logging.WARNING)

  start = time.process_time()
  sgemm = sgemm_flops_per_s()
  print(json.dumps({'sgemm_gflops_start': round(sgemm / 1e9, 2), 'devices': jax.device_count(),
                    'xla_flags': os.environ.get('XLA_FLAGS')}), flush=True)
  rows, checks = [], []
  for arch in args.archs.split(','):
    resnet = arch == 'resnet1d'
    for num_models in ints(args.resnet_models if resnet else args.models):
      rows.append(configuration(arch, num_models, ints(args.resnet_chunks if resnet else
                                                       args.chunks), args))
      print(json.dumps(finish_row(dict(rows[-1]), sgemm)), flush=True)
  if args.loop_check:
    checks.append(loop_check('mlp64', 64, 0, args))
    print(json.dumps(checks[-1]), flush=True)
  sgemm_end = sgemm_flops_per_s()
  sgemm = max(sgemm, sgemm_end)  # noise only slows it
  rows = [finish_row(row, sgemm) for row in rows]
  print(json.dumps({'sgemm_gflops_end': round(sgemm_end / 1e9, 2),
                    'sgemm_gflops_used': round(sgemm / 1e9, 2),
                    'total_cpu_s': round(time.process_time() - start, 1)}))
  print()
  print(table(rows, checks, sgemm))


if __name__ == '__main__':
  main()
