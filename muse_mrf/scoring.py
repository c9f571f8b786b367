"""How the samplers are scored: a classifier trained on real (tokenised and decoded) images, its
accuracy on the class each sample was asked for, a Frechet distance on its penultimate features,
the MRF layer's cost against one backbone call, and the claim's checks on those numbers.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import classifier as classifier_lib
from muse_mrf import maskgit


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two feature sets (N, D)."""
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
    raise ValueError(f'Feature sets of shapes {a.shape} and {b.shape}: need (N >= 2, D) each.')
  mu_a, mu_b = a.mean(0), b.mean(0)
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  # tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2): symmetric PSD square roots by
  # eigendecomposition, stable when a feature has no variance (a dead ReLU unit), where
  # scipy.linalg.sqrtm of the product warns of a singular matrix.
  w, v = np.linalg.eigh(cov_a)
  half = (v * np.sqrt(np.clip(w, 0.0, None))[None, :]) @ v.T
  inner = np.linalg.eigvalsh(half @ cov_b @ half)
  trace_root = float(np.sum(np.sqrt(np.clip(inner, 0.0, None))))
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root)


def train_scorer(config, train_images, train_labels, test_images, test_labels, workdir: str,
                 num_classes: int):
  scfg = config.scorer.copy_and_resolve_references()
  with scfg.unlocked():
    scfg.model = ml_collections.ConfigDict(config.scorer_model.to_dict())
  return classifier_lib.train_classifier(
      scfg, workdir, train_arrays={'inputs': train_images, 'label': train_labels},
      eval_arrays={'test': {'inputs': test_images, 'label': test_labels}},
      num_classes=num_classes)


def score(scorer, images: np.ndarray, asked: np.ndarray, reference_features: np.ndarray):
  logits, features = scorer.logits_and_features(images)
  return {'accuracy': float(np.mean(logits.argmax(-1) == asked)),
          'fd': frechet_distance(features, reference_features)}


def layer_cost(backbone, params, layer, mrf_vars, labels, repeats: int = 5) -> dict[str, float]:
  """Seconds of one backbone call and of the MRF layer alone on the same batch (medians)."""
  tokens = jnp.full((len(labels), backbone.num_tokens), backbone.mask_id, jnp.int32)
  labels = jnp.asarray(labels)
  call = jax.jit(lambda p, t, l: maskgit.backbone_logits(backbone, p, t, l))
  logits = jax.block_until_ready(call(params, tokens, labels))
  known = jnp.zeros(tokens.shape, bool)
  refine = jax.jit(lambda v, x: layer.apply(v, x, jnp.zeros(tokens.shape, jnp.int32), known))
  jax.block_until_ready(refine(mrf_vars, logits))

  def timed(fn):
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - t)
    return float(np.median(times))

  backbone_s = timed(lambda: call(params, tokens, labels))
  mrf_s = timed(lambda: refine(mrf_vars, logits))
  return {'backbone_call_s': round(backbone_s, 5), 'mrf_layer_s': round(mrf_s, 5),
          'ratio': round(mrf_s / backbone_s, 4)}


def check_claims(config, rows) -> list[dict[str, Any]]:
  c = config.claim
  ref, plain, fast = (rows[f'maskgit_T{c.reference_steps}'], rows[f'maskgit_T{c.fast_steps}'],
                      rows[f'mrf_T{c.fast_steps}'])
  r, f = c.reference_steps, c.fast_steps
  checks = []
  d_acc = fast['accuracy'] - ref['accuracy']
  checks.append({'name': f'MRF T={f} class accuracy about T={r} (difference)',
                 'value': round(d_acc, 4), 'threshold': f'>= -{c.acc_margin}',
                 'holds': d_acc >= -c.acc_margin})
  fd_ratio = fast['fd'] / max(ref['fd'], 1e-9)
  checks.append({'name': f'MRF T={f} FD about T={r} (ratio)', 'value': round(fd_ratio, 4),
                 'threshold': f'<= {c.fd_ratio_vs_reference}',
                 'holds': fd_ratio <= c.fd_ratio_vs_reference})
  better = fast['fd'] / max(plain['fd'], 1e-9)
  checks.append({'name': f'MRF T={f} clearly better than plain T={f} (FD ratio)',
                 'value': round(better, 4), 'threshold': f'<= {c.fd_ratio_vs_plain}',
                 'holds': better <= c.fd_ratio_vs_plain})
  gain = fast['accuracy'] - plain['accuracy']
  checks.append({'name': f'MRF T={f} class accuracy minus plain T={f}', 'value': round(gain, 4),
                 'threshold': f'>= {c.acc_gain_vs_plain}', 'holds': gain >= c.acc_gain_vs_plain})
  calls = fast['backbone_calls'] / ref['backbone_calls']
  checks.append({'name': f'backbone calls MRF T={f} / T={r}', 'value': round(calls, 4),
                 'threshold': f'<= {c.calls_ratio}', 'holds': calls <= c.calls_ratio})
  ablation = rows.get(f'unary_scale_only_T{f}')
  if ablation is not None:
    share = ablation['fd'] / max(plain['fd'], 1e-9)
    checks.append({'name': f'pairwise term zeroed (learned temperature only), T={f}: FD ratio to '
                           f'plain T={f}', 'value': round(share, 4),
                   'threshold': 'informational (compare with the MRF\'s ratio)', 'holds': True,
                   'informational': True})
  wall = fast['seconds'] / max(ref['seconds'], 1e-9)
  checks.append({'name': f'wall time MRF T={f} / T={r}', 'value': round(wall, 4),
                 'threshold': 'informational', 'holds': True, 'informational': True})
  return checks
