"""Proxies for memorisation, their correlation with it at each size, and whether they follow it
across sizes.

    proxies.symmetric_kl(p, q)                          # (..., ) KL(p||q) + KL(q||p)
    proxies.forgetting_stats(trace)                     # learning speed, forgetting events
    corr = proxies.correlations(mem_by_size, {name: (S, N)})        # Spearman per size
    trend = proxies.trend_agreement(mem_by_size, proxy_by_size)     # on changes across sizes

Proxies (each oriented so that higher means "more memorised-looking" is not assumed: the
correlations are reported signed and compared by magnitude):
  cscore          held-out consistency (the estimator's second term)
  loss, confidence  cross-entropy and p(y|x) of models trained on the full data
  grad_norm       ||d loss / d x|| of those models
  holdout_kl      hold-out retraining (Carlini et al.): symmetric KL between a subset model's
                  predictions before and after fine-tuning on its held-out examples, on the
                  examples it saw
  learning_speed  fraction of an example's presentations classified correctly during training
  forgetting      forgetting events (correct -> wrong between presentations; Toneva et al.)
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from memorisation import scores as scores_lib


def symmetric_kl(p, q, eps: float = 1e-12) -> np.ndarray:
  """KL(p || q) + KL(q || p) over the last axis of two arrays of probability rows."""
  p = np.clip(np.asarray(p, np.float64), eps, None)
  q = np.clip(np.asarray(q, np.float64), eps, None)
  if p.shape != q.shape:
    raise scores_lib.MemorisationInputError(f'p and q differ in shape: {p.shape}, {q.shape}.')
  return np.sum((p - q) * (np.log(p) - np.log(q)), axis=-1)


def forgetting_stats(trace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """learning_speed (correct / presented) and forgetting events from a training trace, with an
  example never learnt counted as forgotten at every presentation after the first (Toneva et
  al. count never-learnt examples as the most forgettable)."""
  presented = np.asarray(trace['presented'], np.float64)
  correct = np.asarray(trace['correct'], np.float64)
  forgets = np.asarray(trace['forgets'], np.float64)
  never = correct == 0
  return {'learning_speed': correct / np.maximum(presented, 1.0),
          'forgetting': np.where(never, np.maximum(presented - 1, 0), forgets)}


def spearman(x, y) -> float:
  """Spearman's rank correlation (0 when either is constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise scores_lib.MemorisationInputError(f'spearman needs two (N,) arrays, got {x.shape}, '
                                            f'{y.shape}.')
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  return float(stats.spearmanr(x, y).statistic)


def correlations(mem_by_size, proxy_by_size: dict[str, np.ndarray]) -> dict[str, list[float]]:
  """{proxy: [Spearman(mem(s), proxy(s)) for each size s]}."""
  mem_by_size = np.asarray(mem_by_size)
  out = {}
  for name, values in proxy_by_size.items():
    values = np.asarray(values)
    if values.shape != mem_by_size.shape:
      raise scores_lib.MemorisationInputError(f'proxy {name!r} has shape {values.shape}, '
                                              f'memorisation {mem_by_size.shape}.')
    out[name] = [spearman(m, v) for m, v in zip(mem_by_size, values)]
  return out


def trend_agreement(mem_by_size, proxy_by_size: dict[str, np.ndarray]) -> dict[str, dict]:
  """Does a proxy's change across sizes follow memorisation's change, example by example?

  For each proxy: the Spearman correlation of the per-example change from the smallest to the
  largest size (`change_corr`), and of the changes between consecutive sizes pooled
  (`step_corr`); and the sign of the fixed-size correlation, so a proxy that is anti-correlated
  with memorisation is judged on -change.
  """
  mem_by_size = np.asarray(mem_by_size, np.float64)
  d_mem = mem_by_size[-1] - mem_by_size[0]
  steps_mem = np.diff(mem_by_size, axis=0).ravel()
  out = {}
  for name, values in proxy_by_size.items():
    values = np.asarray(values, np.float64)
    sign = np.sign(np.mean([spearman(m, v) for m, v in zip(mem_by_size, values)])) or 1.0
    out[name] = {
        'sign': float(sign),
        'change_corr': sign * spearman(d_mem, values[-1] - values[0]),
        'step_corr': sign * spearman(steps_mem, np.diff(values, axis=0).ravel()),
    }
  return out


def class_means(values, classes, num_classes: int) -> list[float]:
  """Mean of values (N,) per trajectory class (NaN for an empty class)."""
  values, classes = np.asarray(values, np.float64), np.asarray(classes)
  return [float(values[classes == c].mean()) if np.any(classes == c) else float('nan')
          for c in range(num_classes)]
