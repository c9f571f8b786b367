"""One process of a multi-process ensemble run (tests/common/test_multiprocess.py runs it in 1
process of 4 fake devices and in 2 processes of 2): 4 MLPs on digits, the model axis spanning
every device, 8 steps with a checkpoint at 4, then predict; process 0 writes what it got.

    python -m tests.common.ensemble_worker --workdir=... --out=... [--coordinator_address=...
        --num_processes=2 --process_id=i]
"""

import argparse
import os

import jax
import numpy as np
import optax


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--out', required=True)
  parser.add_argument('--steps', type=int, default=8)
  parser.add_argument('--coordinator_address', default='')
  parser.add_argument('--num_processes', type=int, default=1)
  parser.add_argument('--process_id', type=int, default=0)
  args = parser.parse_args()
  jax.config.update('jax_num_cpu_devices', int(os.environ.get('JAX_NUM_CPU_DEVICES', '1')))
  if args.coordinator_address:
    jax.distributed.initialize(args.coordinator_address, num_processes=args.num_processes,
                               process_id=args.process_id)
  from common import ensemble  # pylint: disable=g-import-not-at-top
  from common import models  # pylint: disable=g-import-not-at-top
  from common.data import loader  # pylint: disable=g-import-not-at-top
  from configs.common import loop as loop_config  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top

  train = loader.load('digits', 'train[:256]')
  arrays = {'inputs': np.asarray(train['inputs'], np.float32),
            'label': np.asarray(train['label'], np.int32)}
  config = loop_config.get_config(batch_size=16, total_steps=args.steps, log_every_steps=2,
                                  checkpoint_every_steps=4, mesh=(('data', 1), ('model', -1)),
                                  optimizer=loop_config.optimizer(learning_rate=3e-3))
  config.ensemble = loop_config.ensemble(4)
  model = models.build(ml_collections.ConfigDict({'name': 'mlp', 'widths': (32,)}), 10)
  masks = np.random.default_rng(0).random((4, 256)) < 0.5

  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = model.apply({'params': params, **model_state}, batch['inputs'])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch['label']), ({}, {})

  result = ensemble.train_ensemble(
      config, args.workdir, init_fn=lambda rng: model.init(rng, arrays['inputs'][:1]),
      loss_fn=loss_fn, arrays=arrays, weights=masks, num_classes=10)
  logits = ensemble.predict(result.state, lambda v, x: model.apply(v, x), arrays['inputs'][:64])
  if jax.process_index() == 0:
    np.savez(args.out, logits=logits, loss=[r['loss'] for r in result.history],
             devices=jax.device_count(), processes=jax.process_count())


if __name__ == '__main__':
  main()
