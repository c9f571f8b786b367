"""ResMem's memory: the k=1 identity, weights, tuning, save/load, the model wrapper, bad input."""

import numpy as np
import pytest

import resmem


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
