"""Tuning on held-out text: the ResMem and k-NN-LM settings of lowest mean bits per token."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from resmem.lm.outputs import LMMemoryError, LMOutputs
from resmem.lm.predict import Neighbours, knnlm_grid, resmem_grid


def tune_resmem(outputs: LMOutputs, nb: Neighbours, kernel: np.ndarray, *, ks: Sequence[int],
                sigmas: Sequence[float | None], temperatures: Sequence[float],
                floor: float, scales: Sequence[float] = (1.0,)
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The (k, sigma, temperature, scale) of lowest mean bits per token on `outputs` (held-out
  text), and the whole grid [{k, sigma, temperature, scale, bits, accuracy}]."""
  grid = []
  for t in temperatures:
    bits, correct = resmem_grid(outputs, nb, kernel, ks=ks, sigmas=sigmas, temperature=t,
                                floor=floor, scales=scales)
    for i, k in enumerate(ks):
      for j, s in enumerate(sigmas):
        for m, a in enumerate(scales):
          grid.append({'k': int(k), 'sigma': s, 'temperature': float(t), 'scale': float(a),
                       'bits': float(bits[:, i, j, m].mean()),
                       'accuracy': float(correct[:, i, j, m].mean())})
  return best_of(grid), grid


def best_of(grid: list[dict[str, Any]], metric: str = 'bits', **fixed) -> dict[str, Any]:
  """The settings of the best grid row among those matching `fixed` (e.g. scale=1).

  metric 'bits': the lowest mean bits; 'accuracy': the highest accuracy, ties broken by the
  lower bits (accuracy on held-out text is coarse: many settings tie).
  """
  if metric not in ('bits', 'accuracy'):
    raise LMMemoryError(f"metric={metric!r}: use 'bits' or 'accuracy'.")
  rows = [r for r in grid if all(r[key] == value for key, value in fixed.items())]
  if not rows:
    raise LMMemoryError(f'No grid row has {fixed}.')
  if metric == 'bits':
    best = min(rows, key=lambda r: r['bits'])
  else:
    best = min(rows, key=lambda r: (-r['accuracy'], r['bits']))
  return {key: v for key, v in best.items() if key not in ('bits', 'accuracy')}


def tune_knnlm(outputs: LMOutputs, nb: Neighbours, *, ks: Sequence[int],
               sigmas: Sequence[float | None], lambdas: Sequence[float]
               ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The (k, sigma, lambda) of lowest mean bits per token on `outputs`, and the grid."""
  bits, correct = knnlm_grid(outputs, nb, ks=ks, sigmas=sigmas, lambdas=lambdas)
  grid = [{'k': int(k), 'sigma': s, 'lam': float(lam), 'bits': float(bits[:, i, j, m].mean()),
           'accuracy': float(correct[:, i, j, m].mean())}
          for i, k in enumerate(ks) for j, s in enumerate(sigmas)
          for m, lam in enumerate(lambdas)]
  return best_of(grid), grid
