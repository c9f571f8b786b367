"""Per-model inputs through common.ensemble: teachers, start parameters, the training trace; the
distillation settings checked before compute."""

import jax
import numpy as np
import pytest

from common import config_lib
from common import models
from common.data import loader
from configs.common import loop
from memorisation import scores
from memorisation import training


@pytest.fixture(autouse=True)
def _rbg():
  """As the experiment runs: threefry's vmapped initialisation takes ~20 s to compile here."""
  with jax.default_prng_impl('rbg'):
    yield


@pytest.fixture(scope='module')
def data():
  train = loader.load('digits', 'train[:400]')
  return {'inputs': np.asarray(train['inputs']), 'label': np.asarray(train['label'])}


def _loop(lr=1e-2):
  return loop.get_config(batch_size=32, total_steps=10, log_every_steps=100,
                         checkpoint_every_steps=1000, mesh=(('data', 1), ('model', -1)),
                         optimizer=loop.optimizer(learning_rate=lr, schedule='constant'))


def test_each_student_learns_from_its_own_teacher_and_the_trace_counts(data, tmp_path):
  n = len(data['label'])
  masks = scores.subset_masks(8, n, 0.7, seed=0)
  model = models.build({'name': 'mlp', 'widths': (8,)}, 10)
  # Teacher m is sure of class m on every example; pure distillation (alpha 0) at a high rate:
  # student m comes to predict class m.
  teacher = np.full((8, n, 10), 1e-3, np.float32)
  for m in range(8):
    teacher[m, :, m] = 1 - 9e-3
  result = training.train_models(_loop(0.1), str(tmp_path / 'students'), model, data,
                                 masks.astype(np.float32), total_steps=10, alpha=0.0, tau=1.0,
                                 teacher_probs=teacher)
  predicted = training.evaluate(result.state, model, data['inputs'][:64], data['label'][:64],
                                grad_norm=False).logits.argmax(-1)       # (8, 64)
  assert np.all(np.mean(predicted == np.arange(8)[:, None], 1) > 0.9)
  trace = training.traces(result.state)
  # 10 steps of 32 examples per model, only on the model's own examples.
  np.testing.assert_allclose(trace['presented'].sum(1), 320)
  assert np.all(trace['presented'][~masks] == 0)
  assert np.all(trace['correct'] <= trace['presented'])
  assert np.all(trace['forgets'] <= trace['presented'])


def test_fine_tuning_starts_from_the_given_parameters(data, tmp_path):
  n = len(data['label'])
  masks = scores.subset_masks(8, n, 0.7, seed=0)
  model = models.build({'name': 'mlp', 'widths': (8,)}, 10)
  first = training.train_models(_loop(), str(tmp_path / 'a'), model, data,
                                masks.astype(np.float32), total_steps=5)
  start = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), first.state.params)
  # A learning rate of 1e-30: the fine-tuned models are the starting ones, model by model.
  tuned = training.train_models(_loop(1e-30), str(tmp_path / 'b'), model, data,
                                (~masks).astype(np.float32), total_steps=2, trace=False,
                                start_params=start)
  close = lambda a, b: np.testing.assert_allclose(np.asarray(b), a, rtol=1e-6, atol=1e-20)
  jax.tree.map(close, start, jax.device_get(tuned.state.params))
  out = training.evaluate(tuned.state, model, data['inputs'][:50], data['label'][:50],
                          batch_size=32)
  assert out.logits.shape == (8, 50, 10) and out.grad_norm.shape == (8, 50)
  assert np.all(out.grad_norm >= 0) and np.mean(out.grad_norm > 0) > 0.5  # dead ReLUs: 0


@pytest.mark.parametrize('alpha,tau,field', [(1.5, 1.0, 'alpha=1.5'), (-0.1, 1.0, 'alpha=-0.1'),
                                             (0.5, 0.0, 'tau=0.0'), (0.5, -2.0, 'tau=-2.0'),
                                             (float('nan'), 1.0, 'alpha=nan')])
def test_distillation_settings_out_of_range_are_refused_before_compute(data, tmp_path, alpha,
                                                                        tau, field):
  model = models.build({'name': 'mlp', 'widths': (8,)}, 10)
  with pytest.raises(config_lib.ConfigError, match=field):
    training.make_loss_fn(model, alpha=alpha, tau=tau)
  n = len(data['label'])
  with pytest.raises(config_lib.ConfigError, match=field):
    training.train_models(_loop(), str(tmp_path), model, data, np.ones((8, n), np.float32),
                          total_steps=2, alpha=alpha, tau=tau,
                          teacher_probs=np.full((8, n, 10), 0.1, np.float32))
  assert not (tmp_path / 'checkpoints').exists()


def test_labels_beyond_the_models_outputs_are_refused_before_compute(data, tmp_path):
  model = models.build({'name': 'mlp', 'widths': (8,)}, 5)  # 10 classes in the data
  with pytest.raises(ValueError, match=r'outside \[0, num_classes=5\)'):
    training.train_models(_loop(), str(tmp_path), model, data,
                          np.ones((8, len(data['label'])), np.float32), total_steps=2)
  assert not (tmp_path / 'checkpoints').exists()


def test_steps():
  assert training.steps_for(10, 1047, 128) == 82
