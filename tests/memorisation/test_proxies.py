"""Proxies: symmetric KL, forgetting events, correlations at a size and across sizes."""

import jax.numpy as jnp
import numpy as np
import pytest

from memorisation import proxies
from memorisation import scores
from memorisation import training


def test_symmetric_kl():
  p = np.array([[0.5, 0.5], [0.9, 0.1]])
  q = np.array([[0.5, 0.5], [0.2, 0.8]])
  kl = proxies.symmetric_kl(p, q)
  expected = 0.9 * np.log(0.9 / 0.2) + 0.1 * np.log(0.1 / 0.8) + 0.2 * np.log(0.2 / 0.9) \
      + 0.8 * np.log(0.8 / 0.1)
  np.testing.assert_allclose(kl, [0.0, expected])
  np.testing.assert_allclose(proxies.symmetric_kl(q, p), kl)
  with pytest.raises(scores.MemorisationInputError, match='shape'):
    proxies.symmetric_kl(p, q[:1])


def test_the_trace_counts_presentations_and_forgetting_events():
  """Example 0 presented right, wrong, right, wrong: 2 forgetting events; example 1 always
  wrong: never learnt, counted as forgotten at every later presentation."""
  zeros = jnp.zeros((3,))
  trace = {'presented': zeros, 'correct': zeros, 'last': zeros, 'forgets': zeros}
  for outcome in ([1, 0], [0, 0], [1, 0], [0, 0]):
    trace = training._update_trace(trace, jnp.array([0, 1]), jnp.array(outcome, bool))
  trace = {k: np.asarray(v) for k, v in trace.items()}
  np.testing.assert_allclose(trace['presented'], [4, 4, 0])
  np.testing.assert_allclose(trace['forgets'], [2, 0, 0])
  stats = proxies.forgetting_stats(trace)
  np.testing.assert_allclose(stats['learning_speed'], [0.5, 0.0, 0.0])
  np.testing.assert_allclose(stats['forgetting'], [2, 3, 0])


def test_a_proxy_that_matches_at_each_size_but_not_across_sizes():
  rng = np.random.default_rng(0)
  base = rng.random(300)
  change = rng.normal(size=300)
  mem = np.stack([base, base + 0.05 * change, base + 0.1 * change])
  frozen = np.stack([base, base, base])              # right at each size, blind to the change
  tracking = mem.copy()
  flipped = -mem                                     # anti-correlated: judged on -change
  corr = proxies.correlations(mem, {'frozen': frozen, 'tracking': tracking})
  assert min(corr['frozen']) > 0.9 and min(corr['tracking']) == pytest.approx(1.0)
  trend = proxies.trend_agreement(mem, {'frozen': frozen, 'tracking': tracking,
                                        'flipped': flipped})
  assert trend['frozen']['change_corr'] == 0.0
  assert trend['tracking']['change_corr'] == pytest.approx(1.0)
  assert trend['flipped']['sign'] == -1 and trend['flipped']['change_corr'] == pytest.approx(1.0)
  with pytest.raises(scores.MemorisationInputError, match='shape'):
    proxies.correlations(mem, {'bad': frozen[:2]})


def test_class_means():
  out = proxies.class_means([1.0, 2.0, 3.0], [0, 0, 2], 4)
  assert out[0] == 1.5 and np.isnan(out[1]) and out[2] == 3.0
