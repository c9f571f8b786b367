"""How a student deviates from its teacher (numpy, any pair of probability matrices).

    dev = deviations.analyse(p_teacher, p_student, labels)          # the true class
    dev = deviations.analyse(p_teacher, p_student)                  # the teacher's top class
    dev.binned_deviation     # mean p_S - p_T in each p_T bin (NaN where a bin is empty)
    dev.log_odds_slope       # slope of phi(p_S) on phi(p_T), phi(p) = log(p / (1 - p))

Exaggeration of the teacher's confidence [paper, NeurIPS version]: the student is below y = x where
the teacher is unconfident and at or above it where confident: a log-odds slope > 1 and a binned
deviation < 0 at low p_T. "Underfits points the teacher finds hard" (the 2023 submission) is the
low-p_T half of the same picture. Fidelity beside it: top-1 agreement and KL(teacher || student).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from distill.loss import DistillError

DEFAULT_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.95, 1.0)  # the card's p_T bins
EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] on the log-odds scale


def check_probabilities(probs, name: str, atol: float = 1e-3) -> np.ndarray:
  """(N, C) float64 rows of probabilities, or a DistillError saying what the input looks like."""
  array = np.asarray(probs)
  if array.ndim == 1:
    kind = 'class ids' if np.issubdtype(array.dtype, np.integer) else 'one number per example'
    raise DistillError(f'{name} must be (N, C) probabilities; got shape {array.shape} ({kind}). '
                       'Pass softmax outputs, one row per example.')
  if array.ndim != 2 or array.shape[1] < 2:
    raise DistillError(f'{name} must be (N, C) probabilities with C >= 2; got shape {array.shape}.')
  if array.shape[0] == 0:
    raise DistillError(f'{name} is empty.')
  if not np.issubdtype(array.dtype, np.number) or array.dtype == bool:
    raise DistillError(f'{name} must be numbers, not {array.dtype}.')
  array = array.astype(np.float64)
  if not np.all(np.isfinite(array)) or array.min() < 0:
    raise DistillError(f'{name} must be finite and non-negative (probabilities, not logits).')
  sums = array.sum(1)
  bad = np.abs(sums - 1.0) > atol
  if np.any(bad):
    row = int(np.flatnonzero(bad)[0])
    raise DistillError(f'{name} rows must sum to 1 (probabilities, not logits); row {row} sums to '
                       f'{sums[row]:.4g} ({int(bad.sum())} such rows).')
  return array


def check_bins(bins: Sequence[float]) -> np.ndarray:
  edges = np.asarray(bins, np.float64)
  if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0) or edges[0] < 0 \
      or edges[-1] > 1:
    raise DistillError(f'bins must be increasing edges within [0, 1], e.g. {DEFAULT_BINS}; got '
                       f'{tuple(bins)}.')
  return edges


def log_odds(p, eps: float = EPS) -> np.ndarray:
  p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
  return np.log(p) - np.log1p(-p)


def binned_mean(x: np.ndarray, values: np.ndarray, edges: np.ndarray):
  """(mean of `values` in each bin of x, count); the last bin includes its upper edge."""
  idx = np.clip(np.searchsorted(edges, x, side='right') - 1, 0, len(edges) - 2)
  inside = (x >= edges[0]) & (x <= edges[-1])
  counts = np.bincount(idx[inside], minlength=len(edges) - 1)
  sums = np.bincount(idx[inside], weights=values[inside], minlength=len(edges) - 1)
  with np.errstate(invalid='ignore', divide='ignore'):
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
  return means, counts


def regression_slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(slope, intercept) of the least-squares line y ~ a x + b; NaN when x does not vary."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  var = np.var(x)
  if len(x) < 2 or var <= 0:
    return float('nan'), float('nan')
  slope = np.mean((x - x.mean()) * (y - y.mean())) / var
  return float(slope), float(y.mean() - slope * x.mean())


@dataclasses.dataclass
class Deviations:
  """A teacher/student pair's deviations on one set of examples."""
  reference: str                  # 'label' (the true class) or 'teacher_top'
  p_teacher: np.ndarray           # (N,) the teacher's probability of the reference class
  p_student: np.ndarray           # (N,) the student's
  bin_edges: np.ndarray           # (K + 1,)
  binned_deviation: np.ndarray    # (K,) mean p_S - p_T per p_T bin, NaN where empty
  bin_counts: np.ndarray          # (K,)
  log_odds_slope: float
  log_odds_intercept: float
  agreement: float                # top-1 agreement of student and teacher
  kl_teacher_student: float       # mean KL(p_T || p_S)
  teacher_accuracy: float | None
  student_accuracy: float | None

  def mean_deviation(self, lo: float, hi: float) -> float:
    """Mean p_S - p_T over examples with lo <= p_T < hi (hi = 1 includes 1); NaN if none."""
    inside = (self.p_teacher >= lo) & ((self.p_teacher < hi) | (hi >= 1.0))
    return float(np.mean(self.p_student[inside] - self.p_teacher[inside])) if inside.any() \
        else float('nan')

  def to_dict(self, digits: int = 4) -> dict[str, Any]:
    r = lambda v: None if v is None or not np.isfinite(v) else round(float(v), digits)
    return {
        'reference': self.reference,
        'bins': [round(float(e), 3) for e in self.bin_edges],
        'binned_deviation': [r(v) for v in self.binned_deviation],
        'bin_counts': [int(c) for c in self.bin_counts],
        'log_odds_slope': r(self.log_odds_slope),
        'log_odds_intercept': r(self.log_odds_intercept),
        'agreement': r(self.agreement),
        'kl_teacher_student': r(self.kl_teacher_student),
        'teacher_accuracy': r(self.teacher_accuracy),
        'student_accuracy': r(self.student_accuracy),
        'mean_p_teacher': r(np.mean(self.p_teacher)),
        'mean_p_student': r(np.mean(self.p_student)),
    }


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """(N,) KL(p || q) of probability rows (0 log 0 = 0; q clipped at eps)."""
  with np.errstate(divide='ignore', invalid='ignore'):
    terms = np.where(p > 0, p * (np.log(np.maximum(p, eps)) - np.log(np.maximum(q, eps))), 0.0)
  return terms.sum(1)


def analyse(p_teacher, p_student, labels=None, *, bins: Sequence[float] = DEFAULT_BINS,
            eps: float = EPS) -> Deviations:
  """The deviations of a student from its teacher on N examples.

  Args:
    p_teacher, p_student: (N, C) probabilities (softmax outputs at temperature 1).
    labels: (N,) class ids: the analysis is of p(y_true | x); None: of the teacher's top class.
    bins: edges of the p_T bins for the binned mean of p_S - p_T.
    eps: clipping of probabilities on the log-odds scale.
  """
  p_t = check_probabilities(p_teacher, 'p_teacher')
  p_s = check_probabilities(p_student, 'p_student')
  if p_s.shape != p_t.shape:
    what = ('classes' if p_s.shape[0] == p_t.shape[0] else 'examples')
    raise DistillError(f'p_teacher {p_t.shape} and p_student {p_s.shape} differ in their '
                       f'{what}.')
  edges = check_bins(bins)
  n, c = p_t.shape
  if labels is None:
    reference, ref = 'teacher_top', p_t.argmax(1)
  else:
    labels = np.asarray(labels)
    if labels.shape != (n,):
      raise DistillError(f'labels must be ({n},) class ids; got shape {labels.shape}.')
    if not np.issubdtype(labels.dtype, np.integer):
      raise DistillError(f'labels must be integer class ids, not {labels.dtype}.')
    if labels.min() < 0 or labels.max() >= c:
      raise DistillError(f'labels must be in [0, {c}); got {labels.min()}..{labels.max()}.')
    reference, ref = 'label', labels
  rows = np.arange(n)
  pt, ps = p_t[rows, ref], p_s[rows, ref]
  means, counts = binned_mean(pt, ps - pt, edges)
  slope, intercept = regression_slope(log_odds(pt, eps), log_odds(ps, eps))
  accuracy = (lambda p: float(np.mean(p.argmax(1) == labels))) if labels is not None else None
  return Deviations(
      reference=reference, p_teacher=pt, p_student=ps, bin_edges=edges,
      binned_deviation=means, bin_counts=counts, log_odds_slope=slope,
      log_odds_intercept=intercept,
      agreement=float(np.mean(p_t.argmax(1) == p_s.argmax(1))),
      kl_teacher_student=float(np.mean(kl_divergence(p_t, p_s))),
      teacher_accuracy=accuracy(p_t) if accuracy else None,
      student_accuracy=accuracy(p_s) if accuracy else None)


def pooled(parts: Sequence[Deviations], bins: Sequence[float] | None = None,
           eps: float = EPS) -> Deviations:
  """One analysis over several pairs (e.g. seeds) with the same reference: their points pooled;
  agreement, KL and accuracies are example-weighted means."""
  if not parts:
    raise DistillError('Nothing to pool.')
  if len({p.reference for p in parts}) != 1:
    raise DistillError('Cannot pool analyses of different reference classes.')
  edges = check_bins(parts[0].bin_edges if bins is None else bins)
  pt = np.concatenate([p.p_teacher for p in parts])
  ps = np.concatenate([p.p_student for p in parts])
  weights = np.array([len(p.p_teacher) for p in parts], np.float64)
  mean = lambda key: (None if getattr(parts[0], key) is None else
                      float(np.average([getattr(p, key) for p in parts], weights=weights)))
  means, counts = binned_mean(pt, ps - pt, edges)
  slope, intercept = regression_slope(log_odds(pt, eps), log_odds(ps, eps))
  return Deviations(reference=parts[0].reference, p_teacher=pt, p_student=ps, bin_edges=edges,
                    binned_deviation=means, bin_counts=counts, log_odds_slope=slope,
                    log_odds_intercept=intercept, agreement=mean('agreement'),
                    kl_teacher_student=mean('kl_teacher_student'),
                    teacher_accuracy=mean('teacher_accuracy'),
                    student_accuracy=mean('student_accuracy'))
