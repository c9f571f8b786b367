"""Exaggeration of the teacher's confidence, measured against what regression to the mean gives
(numpy; one teacher / student pair, i.e. one seed, at a time).

Binning examples by the teacher's own p_T(y|x) selects on the teacher's noise: where p_T is low the
teacher was often unlucky, so any model that does not share its noise sits above it there (and
below it where p_T is high). The one-hot control (a model of another seed, trained on the labels)
does, so the raw deviation p_S - p_T of a distilled student cannot show exaggeration alone. Two
measures remove the selection:

  against a baseline: the distilled student's deviation minus the one-hot control's, both binned
    by the teacher's p_T: excess = mean(p_S - p_O | p_T bin), and the log-odds slope of the
    student on the teacher minus the control's;
  against an independent reference R (a teacher of another seed), whose noise neither the teacher
    nor its student share: mean(p_S - p_T | p_R bin), and the slope
    cov(z_S, z_R) / cov(z_T, z_R) of log-odds z (an instrumental-variable slope).

In the linear picture z_T = f + e_T, z_R = f + e_R, z_S = a b z_T + (1 - a) f + e_S (f: the
examples' difficulty; a: how much the student copies its teacher; b: how much it amplifies what it
copies; rho = var f / var z_T < 1), the baseline's excess slope is a (b - rho): a faithful copy
(b = 1) already shows it. The reference slope is 1 + a (b - 1): above 1 only when the student
exaggerates (b > 1), and the reference-binned deviation has the sign of (b - 1) too.

    stats = seed_stats(p_teacher, p_student, p_control, p_reference, labels,
                       unsure_below=0.4, sure_from=0.95)
    stats['excess_where_unsure'], stats['reference_slope']
"""

from __future__ import annotations

import numpy as np

from distill import deviations as dev_lib
from distill.loss import DistillError

# The per-seed statistics (keys of seed_stats); counts first.
COUNTS = ('points_unsure', 'points_sure', 'points_reference_unsure', 'points_reference_sure')
STATS = ('deviation_where_unsure', 'control_where_unsure', 'excess_where_unsure',
         'deviation_where_sure', 'control_where_sure', 'excess_where_sure',
         'slope', 'control_slope', 'excess_slope',
         'deviation_where_reference_unsure', 'deviation_where_reference_sure', 'reference_slope')


def _mean(values: np.ndarray, where: np.ndarray) -> float:
  return float(np.mean(values[where])) if where.any() else float('nan')


def _true_class(probs, labels, name: str) -> np.ndarray:
  p = dev_lib.check_probabilities(probs, name)
  if p.shape[0] != len(labels):
    raise DistillError(f'{name} has {p.shape[0]} rows for {len(labels)} labels.')
  return p[np.arange(len(labels)), labels]


def instrumental_slope(z_student: np.ndarray, z_teacher: np.ndarray,
                       z_reference: np.ndarray) -> float:
  """cov(z_S, z_R) / cov(z_T, z_R): the slope of z_S on z_T with z_R as the instrument (NaN when
  the teacher and the reference do not co-vary)."""
  zr = z_reference - z_reference.mean()
  denominator = float(np.mean((z_teacher - z_teacher.mean()) * zr))
  if len(zr) < 2 or denominator <= 0:
    return float('nan')
  return float(np.mean((z_student - z_student.mean()) * zr)) / denominator


def seed_stats(p_teacher, p_student, p_control, p_reference, labels, *, unsure_below: float,
               sure_from: float, eps: float = dev_lib.EPS) -> dict[str, float]:
  """One seed's deviations, of the true class, against the control and the reference.

  Args:
    p_teacher, p_student: (N, C) probabilities of the teacher and its distilled student.
    p_control: (N, C) of the one-hot control (the baseline: same training, labels only).
    p_reference: (N, C) of an independent reference (a teacher of another seed).
    labels: (N,) class ids.
    unsure_below, sure_from: the teacher is unsure where p_T < unsure_below, sure where
      p_T >= sure_from (the same bounds bin the reference).

  Returns the COUNTS (ints) and STATS (floats; NaN where a bin is empty).
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise DistillError(f'labels must be (N,) class ids; got {labels.dtype} {labels.shape}.')
  if not 0 < unsure_below <= sure_from < 1:
    raise DistillError(f'Need 0 < unsure_below <= sure_from < 1; got {unsure_below}, '
                       f'{sure_from}.')
  pt, ps, po, pr = (_true_class(p, labels, name) for p, name in (
      (p_teacher, 'p_teacher'), (p_student, 'p_student'), (p_control, 'p_control'),
      (p_reference, 'p_reference')))
  unsure, sure = pt < unsure_below, pt >= sure_from
  r_unsure, r_sure = pr < unsure_below, pr >= sure_from
  zt, zs, zo, zr = (dev_lib.log_odds(p, eps) for p in (pt, ps, po, pr))
  slope = dev_lib.regression_slope(zt, zs)[0]
  control_slope = dev_lib.regression_slope(zt, zo)[0]
  out = {'points_unsure': int(unsure.sum()), 'points_sure': int(sure.sum()),
         'points_reference_unsure': int(r_unsure.sum()),
         'points_reference_sure': int(r_sure.sum())}
  for where, mask in (('unsure', unsure), ('sure', sure)):
    out[f'deviation_where_{where}'] = _mean(ps - pt, mask)
    out[f'control_where_{where}'] = _mean(po - pt, mask)
    out[f'excess_where_{where}'] = _mean(ps - po, mask)  # = the difference of the two above
  out.update(slope=slope, control_slope=control_slope, excess_slope=slope - control_slope,
             deviation_where_reference_unsure=_mean(ps - pt, r_unsure),
             deviation_where_reference_sure=_mean(ps - pt, r_sure),
             reference_slope=instrumental_slope(zs, zt, zr))
  return out


def per_seed(rows, split: str, *, unsure_below: float, sure_from: float,
             student: str = 'distilled') -> dict[str, list]:
  """seed_stats of each seed s of a regime's rows (experiment.run_regime), the reference being
  the teacher of seed s + 1 (cyclically): {stat: [one value per seed]}."""
  n = len(rows)
  if n < 2:
    raise DistillError(f'The reference is a teacher of another seed: need >= 2 seeds, got {n}.')
  stats = [seed_stats(r['probs']['teacher'][split], r['probs'][student][split],
                      r['probs']['onehot'][split], rows[(s + 1) % n]['probs']['teacher'][split],
                      r['labels'][split], unsure_below=unsure_below, sure_from=sure_from)
           for s, r in enumerate(rows)]
  return {key: [s[key] for s in stats] for key in COUNTS + STATS}
