"""ResMem's memory: the k=1 identity, weights, tuning, save/load, the model wrapper, bad input."""

import json

import jax
import numpy as np
import pytest

import resmem
from common import mesh as mesh_lib


def _classification(seed=0, n=300, d=8, c=4):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(n, d)).astype(np.float32)
  labels = rng.integers(0, c, n)
  logits = rng.normal(size=(n, c))
  return emb, logits, labels


def test_k1_reproduces_training_labels_and_targets():
  emb, logits, labels = _classification()
  mem = resmem.fit(emb, logits, labels, task='classification', k=1, sigma=0.1, temperature=2.0)
  np.testing.assert_allclose(mem.predict(emb, logits), np.eye(4)[labels], atol=1e-5)
  y = np.random.default_rng(1).normal(size=len(emb))
  preds = emb[:, 0] * 0.3
  reg = resmem.fit(emb, preds, y, task='regression', k=1, sigma=None)
  np.testing.assert_allclose(reg.predict(emb, preds), y, atol=1e-5)
  assert not reg.normalize_keys and mem.normalize_keys


def test_prediction_is_base_plus_weighted_residuals():
  emb, logits, labels = _classification(2)
  mem = resmem.fit(emb, logits, labels, task='classification', k=7, sigma=0.5, temperature=1.5)
  q = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
  q_logits = np.random.default_rng(4).normal(size=(5, 4))
  keys = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  qn = q / np.linalg.norm(q, axis=1, keepdims=True)
  dist = np.linalg.norm(qn[:, None] - keys[None], axis=-1)
  nn = np.argsort(dist, axis=1)[:, :7]
  d = np.take_along_axis(dist, nn, 1)
  w = np.exp(-d / 0.5) / np.exp(-d / 0.5).sum(1, keepdims=True)
  p = lambda z: np.exp(z / 1.5) / np.exp(z / 1.5).sum(1, keepdims=True)
  residuals = np.eye(4)[labels] - p(logits)
  expected = p(q_logits) + np.einsum('qk,qkc->qc', w, residuals[nn])
  np.testing.assert_allclose(mem.predict(q, q_logits), expected, atol=1e-5)


def test_weights_are_normalised_and_stable():
  w = resmem.neighbour_weights(np.array([[0.0, 1.0, 2.0], [500.0, 501.0, 502.0]]), 0.01)
  np.testing.assert_allclose(w.sum(1), 1.0)
  assert np.isfinite(w).all() and w[1, 0] > 0.99
  np.testing.assert_allclose(resmem.neighbour_weights(np.ones((2, 4)), None), 0.25)


def test_tune_finds_the_label_function():
  # Labels are a function of the embedding; the base is useless: the memory must help.
  rng = np.random.default_rng(5)
  emb = rng.normal(size=(600, 2)).astype(np.float32)
  labels = (np.arctan2(emb[:, 1], emb[:, 0]) > 0).astype(int)
  logits = np.zeros((600, 2))
  train, val = (emb[:400], logits[:400], labels[:400]), (emb[400:], logits[400:], labels[400:])
  mem, grid = resmem.tune(train, val, task='classification', ks=(1, 5, 25), sigmas=(0.1, None),
                          temperatures=(1.0, 4.0))
  assert len(grid) == 3 * 2 * 2
  best = max(g['score'] for g in grid)
  assert best > 0.9 and mem.k in (1, 5, 25)
  assert np.mean(mem.predict(*val[:2]).argmax(1) == val[2]) == pytest.approx(best)
  knn, _ = resmem.tune(train, val, task='classification', ks=(1, 5), sigmas=(None,),
                       zero_base=True)
  assert np.mean(knn.correction(val[0]).argmax(1) == val[2]) > 0.9


def test_save_and_load_round_trip(tmp_path):
  emb, logits, labels = _classification(6)
  mem = resmem.fit(emb, logits, labels, task='classification', k=3, sigma=None)
  path = mem.save(str(tmp_path / 'm' / 'memory.npz'))
  again = resmem.Memory.load(path)
  assert (again.k, again.sigma, again.task) == (3, None, 'classification')
  np.testing.assert_array_equal(again.predict(emb[:9], logits[:9]),
                                mem.predict(emb[:9], logits[:9]))
  with pytest.raises(FileNotFoundError, match='No ResMem memory'):
    resmem.Memory.load(str(tmp_path / 'missing.npz'))


def test_model_wrapper():
  emb, logits, labels = _classification(7)
  table = {'emb': emb, 'logits': logits}
  model = resmem.ResMem.fit(lambda idx: table['emb'][idx], lambda idx: table['logits'][idx],
                            np.arange(300), labels, task='classification', k=1, sigma=None)
  np.testing.assert_allclose(model(np.arange(10)), np.eye(4)[labels[:10]], atol=1e-5)


def test_bad_inputs():
  emb, logits, labels = _classification(8, n=20)
  with pytest.raises(resmem.ResMemError, match='k=21 must be between 1 and the memory size 20'):
    resmem.fit(emb, logits, labels, task='classification', k=21, sigma=None)
  with pytest.raises(resmem.ResMemError, match='empty'):
    resmem.fit(np.zeros((0, 8)), np.zeros((0, 4)), np.zeros(0, int), task='classification', k=1,
               sigma=None)
  bad = emb.copy()
  bad[2] = np.nan
  with pytest.raises(resmem.ResMemError, match=r'1 training embeddings contain NaN .*\[2\]'):
    resmem.fit(bad, logits, labels, task='classification', k=1, sigma=None)
  mem = resmem.fit(emb, logits, labels, task='classification', k=2, sigma=None)
  with pytest.raises(resmem.KnnError, match='dimension 5 but the database has 8'):
    mem.predict(np.zeros((3, 5)), np.zeros((3, 4)))
  with pytest.raises(resmem.KnnError, match='queries rows contain NaN'):
    mem.predict(bad[:3], logits[:3])
  with pytest.raises(resmem.ResMemError, match=r'Labels must lie in \[0, 4\)'):
    resmem.fit(emb, logits, labels + 4, task='classification', k=1, sigma=None)
  with pytest.raises(resmem.ResMemError, match='Unknown task'):
    resmem.fit(emb, logits, labels, task='ranking', k=1, sigma=None)
  with pytest.raises(resmem.ResMemError, match=r'ks=\[50\] must lie in \[1, 20\]'):
    resmem.tune((emb, logits, labels), (emb, logits, labels), task='classification', ks=(50,),
                sigmas=(None,))


def test_a_nan_base_logit_is_refused_not_predicted_as_class_0():
  # predict used to return a NaN row, which argmax reads as class 0.
  emb, logits, labels = _classification(10, n=40)
  mem = resmem.fit(emb, logits, labels, task='classification', k=3, sigma=0.1)
  bad = logits[:5].copy()
  bad[3, 1] = np.nan
  with pytest.raises(resmem.ResMemError, match=r'1 rows of the base model\'s outputs contain NaN '
                                               r'or inf \(first rows: \[3\]\).*class 0'):
    mem.predict(emb[:5], bad)
  bad[3, 1] = np.inf
  with pytest.raises(resmem.ResMemError, match=r'first rows: \[3\]'):
    mem.predict(emb[:5], bad)
  train_bad = logits.copy()
  train_bad[7] = np.nan
  with pytest.raises(resmem.ResMemError, match=r'first rows: \[7\]'):  # NaN residuals otherwise
    resmem.fit(emb, train_bad, labels, task='classification', k=3, sigma=0.1)
  with pytest.raises(resmem.ResMemError, match=r'first rows: \[7\]'):
    resmem.tune((emb, logits, labels), (emb, train_bad, labels), task='classification', ks=(3,),
                sigmas=(None,))
  reg = resmem.fit(emb, logits[:, 0], logits[:, 1], task='regression', k=3, sigma=None)
  with pytest.raises(resmem.ResMemError, match=r'first rows: \[3\]'):
    reg.predict(emb[:5], bad[:, 1])
  assert np.isfinite(mem.predict(emb[:5], logits[:5])).all()


def test_integer_embeddings_float32_cannot_hold_are_refused():
  emb = np.array([[16_777_218], [16_777_221], [0]], np.int64)
  logits, labels = np.zeros((3, 2)), np.array([0, 1, 0])
  with pytest.raises(resmem.ResMemError, match='training embeddings are integers.*2\\^24'):
    resmem.fit(emb, logits, labels, task='regression', k=1, sigma=None)
  mem = resmem.fit(emb - 16_777_000, logits[:, 0], labels, task='regression', k=1, sigma=None)
  with pytest.raises(resmem.ResMemError, match='queries are integers'):
    mem.predict(np.array([[16_777_219]]), np.zeros(1))
  np.testing.assert_allclose(mem.predict(np.array([[219]]), np.zeros(1)), [0.0])  # row 0's


def _angle_task(seed=5, n=600):
  """Labels a function of the embedding, 20% flipped (so the k-NN vote is rarely unanimous and
  an added base can overturn it); base logits confidently wrong half of the time."""
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(n, 2)).astype(np.float32)
  labels = (np.arctan2(emb[:, 1], emb[:, 0]) > 0).astype(int)
  labels = np.where(rng.random(n) < 0.2, 1 - labels, labels)
  logits = 5.0 * rng.normal(size=(n, 2))
  cut = 2 * n // 3
  return (emb[:cut], logits[:cut], labels[:cut]), (emb[cut:], logits[cut:], labels[cut:])


def test_zero_base_memory_predicts_what_tune_reported(tmp_path):
  # Predicting a zero_base memory used to add softmax(g) to the k-NN vote (rows summing to 2),
  # so the accuracy fell from the value tune reported (here 0.62 against 0.78).
  train, val = _angle_task()
  knn, grid = resmem.tune(train, val, task='classification', ks=(1, 5, 15, 45),
                          sigmas=(0.1, None), zero_base=True)
  best = max(g['score'] for g in grid)
  probs = knn.predict(*val[:2])
  assert best > 0.75 and np.mean(probs.argmax(1) == val[2]) == best
  np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)  # a k-NN vote, nothing added
  assert knn.zero_base
  np.testing.assert_array_equal(knn.predict(val[0]), probs)  # the base outputs are not needed
  np.testing.assert_array_equal(knn.correction(val[0]), probs)
  # The model wrapper follows the memory's mode and never calls the base model.
  table = {'emb': val[0]}
  def no_base(_):
    raise AssertionError('a zero_base memory must not call the base model')
  model = resmem.ResMem(lambda i: table['emb'][i], no_base, knn)
  np.testing.assert_array_equal(model(np.arange(len(val[0]))), probs)
  # The mode is saved: the loaded memory predicts the same.
  again = resmem.Memory.load(knn.save(str(tmp_path / 'knn.npz')))
  assert again.zero_base
  np.testing.assert_array_equal(again.predict(*val[:2]), probs)
  # fit and ResMem.fit take the mode too.
  fitted = resmem.fit(*train, task='classification', k=knn.k, sigma=knn.sigma, zero_base=True)
  np.testing.assert_array_equal(fitted.predict(*val[:2]), probs)


def test_residual_memory_is_not_zero_base_and_needs_base_outputs(tmp_path):
  train, val = _angle_task()
  mem, grid = resmem.tune(train, val, task='classification', ks=(5,), sigmas=(None,))
  assert not mem.zero_base
  assert np.mean(mem.predict(*val[:2]).argmax(1) == val[2]) == grid[0]['score']
  with pytest.raises(resmem.ResMemError, match="predict needs the base model's outputs"):
    mem.predict(val[0])
  again = resmem.Memory.load(mem.save(str(tmp_path / 'm.npz')))
  assert not again.zero_base


def _write_old_format(path, mem):
  """A file as Memory.save wrote it before zero_base was saved."""
  meta = {'task': mem.task, 'k': mem.k, 'sigma': mem.sigma, 'temperature': mem.temperature,
          'normalize_keys': mem.normalize_keys, 'knn_kwargs': mem.knn_kwargs}
  np.savez(path, keys=mem.keys, residuals=mem.residuals, meta=json.dumps(meta))
  return path


def test_files_without_zero_base(tmp_path):
  train, val = _angle_task()
  mem = resmem.fit(*train, task='classification', k=3, sigma=None)
  old = resmem.Memory.load(_write_old_format(str(tmp_path / 'old.npz'), mem))
  assert not old.zero_base
  np.testing.assert_array_equal(old.predict(*val[:2]), mem.predict(*val[:2]))
  # An old zero_base file holds one-hot targets: refused, not predicted as residuals.
  knn = resmem.fit(*train, task='classification', k=3, sigma=None, zero_base=True)
  with pytest.raises(resmem.ResMemError, match='predates the saved zero_base mode'):
    resmem.Memory.load(_write_old_format(str(tmp_path / 'old_knn.npz'), knn))


def test_memory_fitted_with_a_mesh_saves_without_it(tmp_path):
  assert jax.device_count() == 8
  mesh = mesh_lib.make_mesh((('data', 8),))
  emb, logits, labels = _classification(9)
  mem = resmem.fit(emb, logits, labels, task='classification', k=3, sigma=0.2, mesh=mesh,
                   db_block=16)
  assert mem.mesh is mesh and 'mesh' not in mem.knn_kwargs
  single = resmem.fit(emb, logits, labels, task='classification', k=3, sigma=0.2, db_block=16)
  expected = single.predict(emb[:20], logits[:20])
  sharded_predictions = mem.predict(emb[:20], logits[:20])
  # Another summation order in the GEMM: the distance of a key to itself is rounding noise.
  np.testing.assert_allclose(sharded_predictions, expected, atol=1e-3)
  path = mem.save(str(tmp_path / 'sharded.npz'))  # a Mesh is not JSON: this used to raise
  with np.load(path) as f:
    assert 'mesh' not in json.loads(str(f['meta']))['knn_kwargs']
  plain = resmem.Memory.load(path)
  assert plain.mesh is None and plain.knn_kwargs == {'db_block': 16}
  np.testing.assert_array_equal(plain.predict(emb[:20], logits[:20]), expected)
  sharded = resmem.Memory.load(path, mesh=mesh)
  assert sharded.mesh is mesh
  np.testing.assert_array_equal(sharded.predict(emb[:20], logits[:20]), sharded_predictions)
  # tune passes the mesh through in the same way.
  tuned, _ = resmem.tune((emb, logits, labels), (emb[:30], logits[:30], labels[:30]),
                         task='classification', ks=(1, 3), sigmas=(None,), mesh=mesh)
  assert tuned.mesh is mesh
  tuned.save(str(tmp_path / 'tuned.npz'))


def test_wrong_number_of_classes_and_other_bad_outputs():
  emb, logits, labels = _classification(10, n=40)
  mem = resmem.fit(emb, logits, labels, task='classification', k=2, sigma=None)
  with pytest.raises(resmem.ResMemError,
                     match='base outputs have 5 classes but the memory was fitted with 4 classes'):
    mem.predict(emb[:3], np.zeros((3, 5)))
  model = resmem.ResMem(lambda i: emb[i], lambda i: np.zeros((len(i), 3)), mem)
  with pytest.raises(resmem.ResMemError, match='have 3 classes but .* with 4 classes'):
    model(np.arange(3))
  knn = resmem.fit(emb, logits, labels, task='classification', k=2, sigma=None, zero_base=True)
  with pytest.raises(resmem.ResMemError, match='have 5 classes but .* with 4 classes'):
    knn.predict(emb[:3], np.zeros((3, 5)))  # ignored by a zero_base memory, but still checked
  with pytest.raises(resmem.ResMemError, match=r'logits must be a \(N, classes\) array'):
    mem.predict(emb[:1], logits[0])  # 1-D logits: a softmax across examples
  with pytest.raises(resmem.ResMemError, match='3 embeddings but 2 base outputs'):
    mem.predict(emb[:3], logits[:2])
  y = np.zeros(40)
  reg = resmem.fit(emb, y, y, task='regression', k=2, sigma=None)
  with pytest.raises(resmem.ResMemError, match='have 2 outputs but .* with 1 outputs'):
    reg.predict(emb[:3], np.zeros((3, 2)))
  with pytest.raises(resmem.ResMemError, match=r'Targets have shape \(40, 1\) but the base '
                                               r'outputs \(40, 3\)'):
    resmem.fit(emb, np.zeros((40, 3)), y, task='regression', k=2, sigma=None)
  # Lists are array-likes like any other.
  np.testing.assert_allclose(mem.predict(emb[:3].tolist(), logits[:3].tolist()),
                             mem.predict(emb[:3], logits[:3]))


def test_bad_hyper_parameters():
  emb, logits, labels = _classification(11, n=30)
  data = (emb, logits, labels)
  for k in (2.5, 2.0, True):
    with pytest.raises(resmem.ResMemError, match=r'k must be a positive integer, got'):
      resmem.fit(*data, task='classification', k=k, sigma=None)
    with pytest.raises(resmem.ResMemError, match=r'Every k in ks must be a positive integer'):
      resmem.tune(data, data, task='classification', ks=(1, k), sigmas=(None,))
  for temperature in (-1.0, 0.0, float('nan')):
    with pytest.raises(resmem.ResMemError, match='temperature must be a positive number'):
      resmem.fit(*data, task='classification', k=1, sigma=None, temperature=temperature)
  with pytest.raises(resmem.ResMemError, match='temperature must be a positive number'):
    resmem.tune(data, data, task='classification', ks=(1,), sigmas=(None,), temperatures=(-2.0,))
  for sigma in (0.0, -1.0, float('nan')):
    with pytest.raises(resmem.ResMemError, match='sigma must be positive'):
      resmem.fit(*data, task='classification', k=1, sigma=sigma)
  with pytest.raises(resmem.ResMemError, match=r"Unknown k-NN options \['db_blok'\]"):
    resmem.fit(*data, task='classification', k=1, sigma=None, db_blok=8)
  with pytest.raises(resmem.ResMemError, match='zero_base must be True or False'):
    resmem.fit(*data, task='classification', k=1, sigma=None, zero_base='yes')
  with pytest.raises(resmem.ResMemError, match='Validation lengths differ: 30 embeddings, 30 '
                                               'outputs, 29 targets'):
    resmem.tune(data, (emb, logits, labels[:29]), task='classification', ks=(1,),
                sigmas=(None,))
  with pytest.raises(resmem.ResMemError, match='validation outputs have 3 classes but the '
                                               'training outputs 4 classes'):
    resmem.tune(data, (emb, logits[:, :3], labels), task='classification', ks=(1,),
                sigmas=(None,))
