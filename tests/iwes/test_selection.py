"""The selection loop on a small digits pool: a run stopped after round k resumes and makes the
same selections as an uninterrupted one; weights and logs; a changed run refused; bad input."""

import json
import os

import numpy as np
import pytest

from common import app
from common.data import loader
from configs.common import loop as loop_config
from iwes import checks
from iwes import methods
from iwes import selection

MODEL = {'name': 'mlp', 'widths': (16,)}
SIZES = {'seed_size': 32, 'batch_size': 24, 'budget': 80}   # two rounds


@pytest.fixture(scope='module')
def data():
  train, test = loader.load('digits', 'train'), loader.load('digits', 'test')
  return ({k: v[:300] for k, v in train.items()}, {k: v[:100] for k, v in test.items()})


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  with app.compilation_cache(str(tmp_path_factory.mktemp('xla_cache'))):
    yield


def _loop(**overrides):
  config = loop_config.get_config(batch_size=16, total_epochs=4.0, log_every_steps=1000,
                                  checkpoint_every_steps=1000, num_devices=1,
                                  mesh=(('data', 1), ('model', -1)),
                                  optimizer=loop_config.optimizer(learning_rate=5e-3,
                                                                  schedule='constant'))
  config.update(overrides)
  return config


RUNS = [selection.Run(methods.Method('uniform', 'uniform'), 0),
        selection.Run(methods.Method('iwes_dis_w5', 'iwes', w_max=5.0, p_min=0.1), 0),
        selection.Run(methods.Method('cluster_margin', 'cluster_margin', num_clusters=5,
                                     cluster_points=100), 0),
        selection.Run(methods.Method('iwes_ent', 'iwes', sampling='ent', w_max=3.0), 1)]


def _run(workdir, data, **kwargs):
  pool, test = data
  return selection.run_selection(_loop(), str(workdir), model_config=MODEL, pool=pool,
                                 test=test, runs=RUNS, num_classes=10, chunk_size=4,
                                 **SIZES, **kwargs)


def test_stopped_run_resumes_with_the_same_selections(tmp_path, data, cache):
  whole = _run(tmp_path / 'whole', data)
  assert whole.finished and whole.rounds == 2
  stopped = _run(tmp_path / 'stopped', data, stop_after_round=1)
  assert not stopped.finished
  saved = json.load(open(tmp_path / 'stopped' / selection.STATE_FILE))
  assert saved['round'] == 1 and not saved['finished']
  assert all(len(s['indices']) == 32 + 24 for s in saved['states'])
  assert not (tmp_path / 'stopped' / 'rounds' / 'round_1').exists()  # round 2 never started
  resumed = _run(tmp_path / 'stopped', data)
  assert resumed.finished
  for a, b in zip(whole.states, resumed.states):
    assert a.indices == b.indices
    np.testing.assert_allclose(a.weights, b.weights)
    assert [r['accuracy'] for r in a.logs] == [r['accuracy'] for r in b.logs]
  # a crash after round 1's models are trained and saved but before its selection is: the rerun
  # restores those models (common.ensemble's checkpoint) and selects what the whole run did
  real_select = methods.select
  calls = []

  def crash_in_round_1(method, view, k, rng):
    calls.append(1)
    if len(calls) > len(RUNS):       # the second round's first selection
      raise KeyboardInterrupt('killed')
    return real_select(method, view, k, rng)

  methods.select = crash_in_round_1
  try:
    with pytest.raises(KeyboardInterrupt):
      _run(tmp_path / 'crashed', data, keep_round_checkpoints=True)
  finally:
    methods.select = real_select
  assert json.load(open(tmp_path / 'crashed' / selection.STATE_FILE))['round'] == 1
  assert (tmp_path / 'crashed' / 'rounds' / 'round_1' / 'checkpoints').exists()
  crashed = _run(tmp_path / 'crashed', data)
  assert [s.indices for s in crashed.states] == [s.indices for s in whole.states]
  assert [s.weights for s in crashed.states] == [s.weights for s in whole.states]

  # a finished run reruns without training anything
  again = _run(tmp_path / 'whole', data)
  assert [s.indices for s in again.states] == [s.indices for s in whole.states]

  # what every run selected and logged
  pool_size = len(data[0]['label'])
  for run, state in zip(whole.runs, whole.states):
    assert len(state.indices) == len(set(state.indices)) == SIZES['budget']
    assert max(state.indices) < pool_size
    assert state.indices[:32] == selection.seed_set(pool_size, 32, run.seed).tolist()
    assert [r['labels'] for r in state.logs] == [32, 56, 80]
    assert all(0 <= r['accuracy'] <= 1 for r in state.logs)
    new = np.array(state.weights[32:])
    if run.method.kind == 'iwes':
      assert 1.0 <= new.min() and new.max() <= run.method.w_max
      for r in state.logs[:-1]:
        assert 0 < r['acceptance_rate'] <= 1 and r['examined'] >= 24
        assert r['weight_max'] <= run.method.w_max
    else:
      np.testing.assert_array_equal(new, 1.0)
  assert 'clusters' in whole.states[2].extra and len(whole.states[2].extra['clusters']) == pool_size
  # uniform runs of the same seed share the seed set
  assert whole.states[0].indices[:32] == whole.states[1].indices[:32]


def test_a_changed_run_is_refused(tmp_path, data):
  _run(tmp_path, data, stop_after_round=0)   # the seed sets saved, nothing trained
  saved = json.load(open(tmp_path / selection.STATE_FILE))
  assert saved['round'] == 0 and len(saved['states']) == len(RUNS)
  pool, test = data
  with pytest.raises(selection.SelectionStateError, match='sizes'):
    selection.run_selection(_loop(), str(tmp_path), model_config=MODEL, pool=pool, test=test,
                            runs=RUNS, seed_size=32, batch_size=24, budget=104)
  with pytest.raises(selection.SelectionStateError, match='loop'):
    selection.run_selection(_loop(seed=3), str(tmp_path), model_config=MODEL, pool=pool,
                            test=test, runs=RUNS, **SIZES)


@pytest.mark.parametrize('sizes, match', [
    ({'seed_size': 32, 'batch_size': 24, 'budget': 301}, 'larger than the pool'),
    ({'seed_size': 90, 'batch_size': 24, 'budget': 80}, 'seed set .* larger than the label budget'),
    ({'seed_size': 32, 'batch_size': 25, 'budget': 80}, 'whole number of batches'),
    ({'seed_size': 8, 'batch_size': 24, 'budget': 80}, 'smaller than the training batch'),
    ({'seed_size': 0, 'batch_size': 24, 'budget': 80}, 'seed_size'),
])
def test_bad_sizes_stop_before_compute(tmp_path, data, sizes, match):
  pool, test = data
  with pytest.raises(checks.IwesInputError, match=match):
    selection.run_selection(_loop(), str(tmp_path), model_config=MODEL, pool=pool, test=test,
                            runs=RUNS, **sizes)
  assert not os.path.exists(tmp_path / selection.STATE_FILE)


def test_bad_runs_and_arrays_stop_before_compute(tmp_path, data):
  pool, test = data
  call = lambda **kw: selection.run_selection(
      _loop(), str(tmp_path), model_config=MODEL, **dict(dict(pool=pool, test=test, runs=RUNS,
                                                              **SIZES), **kw))
  with pytest.raises(checks.IwesInputError, match='repeat'):
    call(runs=RUNS + RUNS[:1])
  with pytest.raises(checks.IwesInputError, match='empty'):
    call(runs=[])
  with pytest.raises(checks.IwesInputError, match='labels'):
    call(pool={'inputs': pool['inputs'], 'label': pool['label'][:10]})
  with pytest.raises(checks.IwesInputError, match='integer'):
    call(pool={'inputs': pool['inputs'], 'label': pool['label'].astype(float)})


def test_pool_outputs_are_jax_softmax_and_the_labels_log_probabilities():
  logits = np.random.default_rng(0).normal(size=(2, 5, 3)) * 4
  labels = np.array([0, 2, 1, 1, 0])
  probs, label_lp = selection._outputs(logits, labels)
  expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, expected, rtol=1e-5)
  np.testing.assert_allclose(label_lp, np.log(expected[:, np.arange(5), labels]), rtol=1e-5)
  assert probs.dtype == np.float64 and label_lp.shape == (2, 5)


def test_the_loss_diagnosis_of_an_unweighted_set_is_neutral():
  out = selection.loss_diagnosis(np.ones(4), np.array([0.1, 0.5, 1.0, 2.0]))
  assert out['set_ess_fraction'] == 1.0 and out['loss_variance_factor'] == pytest.approx(1.0)
  assert out['loss_weighted'] == pytest.approx(out['loss_unweighted'])
  assert out['loss_weighted_ratio'] == pytest.approx(1.0)
  # large weights on the small losses: the weighted loss falls below the plain mean
  out = selection.loss_diagnosis(np.array([20.0, 20.0, 1.0, 1.0]), np.array([0.1, 0.1, 2.0, 2.0]))
  assert out['loss_weighted_ratio'] < 0.5 and out['set_ess_fraction'] < 0.6
