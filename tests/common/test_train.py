"""End to end: the reference config, shrunk, trains under the common loop."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import checkpoint as ckpt_lib
from common import classifier
from common import metrics as metrics_lib
from common import train as train_lib
from common.data import loader
from common.data import pipeline
from tests.common.conftest import tiny_config


def test_reference_config_trains_end_to_end(tmp_path):
  config = tiny_config(total_steps=150, **{'model.widths': (64,)})
  summary = classifier.run(config, str(tmp_path))
  numbers = summary['numbers']
  assert numbers['train_loss_last'] < 0.5 * numbers['train_loss_first']
  assert numbers['test/accuracy'] > 0.85  # chance is 0.1
  # The check is decided by the accuracy's interval over the test examples (holds / fails /
  # inconclusive), never by the single value.
  (check,) = summary['checks']
  assert check['evidence'] == 'interval' and summary['verdict'] is not None
  assert check['interval'][0] < numbers['test/accuracy'] < check['interval'][1]
  assert os.path.exists(tmp_path / 'summary.json')
  assert os.path.exists(tmp_path / 'training.png')
  records = metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert [r['step'] for r in records if 'loss' in r] == list(range(10, 151, 10))
  assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tensorboard'))
  assert ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), save_every_steps=30).all_steps()[-1] \
      == 150


def test_total_epochs_become_steps(tmp_path):
  config = tiny_config(total_steps=None, total_epochs=2.0, eval_splits=())
  result = classifier.train_classifier(config, str(tmp_path)).result
  n = len(loader.load('digits', 'train')['label'])
  assert result.total_steps == round(2.0 * n / config.batch_size)


def test_resume_in_process_continues_from_checkpoint(tmp_path):
  config = tiny_config(eval_splits=())
  first = classifier.train_classifier(config, str(tmp_path)).result
  assert first.resumed_from is None
  config.total_steps = 90
  second = classifier.train_classifier(config, str(tmp_path)).result
  assert second.resumed_from == 60
  assert int(second.state.step) == 90
  steps = [r['step'] for r in metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))]
  assert steps == sorted(set(steps)), 'no step is logged twice'


def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(total_steps=100, checkpoint_every_steps=20, log_every_steps=10,
                       eval_splits=())
  bad_step = 37  # the 1-based step whose loss is NaN

  def init_fn(rng):  # a step counter in the mutable model state says when to fail
    return {'params': {'w': jax.random.normal(rng, (64, 10)) * 0.01},
            'counter': {'n': jnp.zeros((), jnp.int32)}}

  def loss_fn(params, model_state, batch, rng):
    del rng
    logits = batch['inputs'].reshape(batch['inputs'].shape[0], -1) @ params['w']
    loss = jnp.mean(jax.nn.logsumexp(logits, -1)
                    - jnp.take_along_axis(logits, batch['label'][:, None], -1)[:, 0])
    n = model_state['counter']['n']
    loss = jnp.where(n == bad_step - 1, jnp.nan, loss)
    return loss, ({}, {'counter': {'n': n + 1}})

  iterator = pipeline.BatchIterator(loader.load('digits', 'train'), config.batch_size)
  with pytest.raises(train_lib.NonFiniteLossError, match=f'at step {bad_step};') as err:
    train_lib.train(config, str(tmp_path), init_fn=init_fn, loss_fn=loss_fn, train_iter=iterator)
  assert 'last good checkpoint is step 20' in str(err.value)
  saved = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), save_every_steps=20)
  assert saved.all_steps() == [20]
  assert np.all(np.isfinite(saved.restore_arrays()['params']['w']))
