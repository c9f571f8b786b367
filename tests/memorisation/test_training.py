"""Per-model inputs through common.ensemble: teachers, start parameters, the training trace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
def test_model_index_recovers_each_model_from_its_key(impl):
  with jax.default_prng_impl(impl):  # inside the autouse rbg block
    table = training.key_table(3, 16)
    base = jax.random.key(3)
    got = jax.jit(jax.vmap(lambda m: training.model_index(jax.random.fold_in(base, m), table)))(
        jnp.arange(16))
  np.testing.assert_array_equal(got, np.arange(16))


def test_each_student_carries_its_own_teacher_and_the_trace_counts(data, tmp_path):
  n = len(data['label'])
  masks = scores.subset_masks(8, n, 0.7, seed=0)
  teacher = np.random.default_rng(0).dirichlet(np.ones(10), size=(8, n)).astype(np.float32)
  model = models.build({'name': 'mlp', 'widths': (8,)}, 10)
  result = training.train_models(_loop(), str(tmp_path / 'students'), model, data,
                                 masks.astype(np.float32), total_steps=10, alpha=0.0, tau=2.0,
                                 teacher_probs=teacher)
  carried = np.asarray(jax.device_get(result.state.model_state['teacher']['probs']))
  np.testing.assert_allclose(carried, teacher, rtol=1e-6)
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
  # A learning rate of 0: the fine-tuned models are the starting ones, model by model.
  tuned = training.train_models(_loop(0.0), str(tmp_path / 'b'), model, data,
                                (~masks).astype(np.float32), total_steps=2, trace=False,
                                start_params=start)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(b), a, rtol=1e-6), start,
               jax.device_get(tuned.state.params))
  out = training.evaluate(tuned.state, model, data['inputs'][:50], data['label'][:50],
                          batch_size=32)
  assert out.logits.shape == (8, 50, 10) and out.grad_norm.shape == (8, 50)
  assert np.all(out.grad_norm >= 0) and np.mean(out.grad_norm > 0) > 0.5  # dead ReLUs: 0


def test_even_chunk_and_steps():
  assert training.even_chunk(72, 64) == 36
  assert training.even_chunk(72, 100) == 72
  assert training.steps_for(10, 1047, 128) == 82
