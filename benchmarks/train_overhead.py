r"""The training loop's overhead against a bare jitted step in a Python loop.

    taskset -c 0 python -m benchmarks.train_overhead [--model=reference|mnist1d_resnet]
        [--input=memory|stream]

Pinned to one core with one XLA thread. `common.train.train` (input pipeline, metrics every 50
steps to JSON lines + TensorBoard, NaN checks) is run for N1 and N2 steps; the difference of its
CPU-seconds cancels start-up, compilation and the final checkpoint, leaving the per-step cost. The
baseline is the same jitted, donated step function called on batches already on the device:

  overhead            = loop per-step / bare per-step - 1   (no periodic checkpoints)
  checkpoint_cpu_s    = CPU-seconds of one periodic checkpoint (same runs, a save every 500 steps)
  overhead_ckpt_every = overhead with a checkpoint every --ckpt_every steps
The summary line takes each arm's minimum over the repeats (noise only adds time) and the median.

The difference of two loop runs has a noise floor of several percent on a shared machine, so the
input path is also timed on its own: `input_ms` is the host CPU time per batch of the loop's input
(`pipeline.make_batches` over the same iterator: building, transferring and handing out items,
without steps), and `input_share = input_ms / bare_ms` bounds what the input adds to a step.
"""

import os

os.environ.setdefault('XLA_FLAGS',
                      '--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1')
os.environ.setdefault('JAX_NUM_CPU_DEVICES', '1')

import argparse  # pylint: disable=g-import-not-at-top,g-bad-import-order
import json
import tempfile
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from common import classifier
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from configs.common import classifier as classifier_config

MODELS = {
    'reference': {},  # the cpu variant: MLP(256, 256) on digits, batch 128
    'mnist1d_resnet': {'variant': 'mnist1d'},
}


INPUT = {'kind': 'memory'}


def _config(name, steps, checkpoint_every=10**9):
  config = classifier_config.get_config(MODELS[name].get('variant', 'cpu'))
  config.input = INPUT['kind']
  config.total_steps = steps
  config.log_every_steps = 50
  config.checkpoint_every_steps = checkpoint_every
  config.eval_every_steps = 0
  config.eval_splits = ()
  config.optimizer.schedule = 'constant'
  return config


def loop_cpu_seconds(name, steps, workdir, checkpoint_every=10**9):
  config = _config(name, steps, checkpoint_every)
  start = time.process_time()
  classifier.train_classifier(config, workdir)
  return time.process_time() - start


def bare_cpu_seconds(name, steps):
  """The same step function, on device-resident batches, in a plain Python loop."""
  config = _config(name, steps)
  train_arrays, _, num_classes = classifier.load_data(config)
  model = models.build(config.model, num_classes)
  mesh = mesh_lib.mesh_from_config(config)
  sample = jnp.zeros((1,) + train_arrays['inputs'].shape[1:])
  init_fn = lambda rng: model.init(rng, sample, train=False)
  tx = train_lib.make_optimizer(config.optimizer, steps)
  rules = mesh_lib.rules_from_config(config)
  _, shardings = train_lib.state_shardings(init_fn, tx, jax.random.key(0), mesh, rules)
  state = jax.jit(lambda r: train_lib._init_state(init_fn, tx, r),  # pylint: disable=protected-access
                  out_shardings=shardings)(jax.random.key(0))
  step = jax.jit(train_lib.make_train_step(classifier.make_loss_fn(model, num_classes), tx, 1),
                 donate_argnums=(0,))
  it = pipeline.BatchIterator(train_arrays, config.batch_size)
  batches = [jax.device_put(it.batch(k)) for k in range(16)]
  state, m = step(state, batches[0])  # compile
  jax.block_until_ready(m)
  start = time.process_time()
  for k in range(steps):
    state, m = step(state, batches[k % 16])
  jax.block_until_ready(m)
  return time.process_time() - start


def input_cpu_seconds(name, steps):
  """The loop's input on its own: items from pipeline.make_batches, no step."""
  config = _config(name, steps)
  mesh = mesh_lib.mesh_from_config(config)
  rules = mesh_lib.rules_from_config(config)
  if INPUT['kind'] == 'stream':
    train_iter = classifier.stream_inputs(config)[0]
  else:
    train_iter = pipeline.BatchIterator(classifier.load_data(config)[0], config.batch_size)
  batches = pipeline.make_batches(train_iter, mesh, mesh_lib.batch_sharding(mesh, rules),
                                  limit=steps + 1)
  jax.block_until_ready(next(batches))  # first chunk, transfers set up
  start = time.process_time()
  for _ in range(steps):
    item = next(batches)
  jax.block_until_ready(item)
  seconds = time.process_time() - start
  batches.close()
  return seconds


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--model', default='reference', choices=sorted(MODELS))
  parser.add_argument('--n1', type=int, default=1000)
  parser.add_argument('--n2', type=int, default=4000)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--ckpt_every', type=int, default=5000)
  parser.add_argument('--input', default='memory', choices=('memory', 'stream'),
                      help="the loop's input: arrays on the devices, or common.data.stream")
  args = parser.parse_args()
  INPUT['kind'] = args.input
  logging.set_verbosity(logging.WARNING)
  n = args.n2 - args.n1
  rows = []
  for r in range(args.repeats):
    bare = bare_cpu_seconds(args.model, n) / n
    times = {}
    for every in (10**9, 500):
      for steps in (args.n1, args.n2):
        with tempfile.TemporaryDirectory() as d:
          times[every, steps] = loop_cpu_seconds(args.model, steps, d, every)
    loop = (times[10**9, args.n2] - times[10**9, args.n1]) / n
    with_ckpt = (times[500, args.n2] - times[500, args.n1]) / n
    ckpt = (with_ckpt - loop) * 500  # CPU-seconds per checkpoint
    input_s = input_cpu_seconds(args.model, n) / n
    rows.append({'bare_ms': bare * 1e3, 'loop_ms': loop * 1e3, 'overhead': loop / bare - 1,
                 'input_ms': input_s * 1e3, 'input_share': input_s / bare,
                 'checkpoint_cpu_s': ckpt,
                 'overhead_ckpt_every': (loop + ckpt / args.ckpt_every) / bare - 1})
    print(json.dumps({'repeat': r, **rows[-1]}), flush=True)
  med = {k: float(np.median([row[k] for row in rows])) for k in rows[0]}
  # The machine is shared: noise only ever adds time, so each arm's minimum over the repeats is
  # its best estimate (as timeit advises); the median is printed beside it.
  best = {k: float(min(row[k] for row in rows)) for k in ('bare_ms', 'loop_ms', 'input_ms')}
  best['input_share'] = best['input_ms'] / best['bare_ms']
  best['overhead'] = best['loop_ms'] / best['bare_ms'] - 1
  best['overhead_ckpt_every'] = (best['loop_ms'] + med['checkpoint_cpu_s'] * 1e3 /
                                 args.ckpt_every) / best['bare_ms'] - 1
  print(json.dumps({'model': args.model, 'input': args.input, 'steps': [args.n1, args.n2],
                    'ckpt_every': args.ckpt_every, 'min_per_arm': best, 'median': med}))


if __name__ == '__main__':
  main()
