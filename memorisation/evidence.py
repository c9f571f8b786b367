"""The evidence each check and the diagnosis are read off: nulls and bootstraps over the run's own
models and examples (no new training).

    ev = evidence.classes(masks, correct_by_size, flipped, z=2.0, floor=0.05, draws=200,
                          null_draws=200, rng=0)          # class fractions, null, intervals
    px = evidence.proxies(mem, proxy_values, trend_ratio=0.5, num_resamples=200, rng=0)
    ds = evidence.distillation(masks, arms, teacher, flipped, classes, draws, test_draws)

Intervals:
  class fractions     models and examples resampled (trajectories.model_draws), recentred on the
                      point estimate (trajectories.recentred_interval); the threshold is the
                      null's 95th percentile (trajectories.null_fractions, same K)
  proxies             examples resampled (each example's score already carries the estimator's
                      noise at K; duplicated models would add to it and bias every correlation
                      towards 0)
  distillation        models (one draw of k for every arm, paired: one-hot student k, distilled
                      student k and teacher k share subset k) and examples resampled; means of
                      memorisation are near-linear in the models, so plain percentile intervals
"""

from __future__ import annotations

from typing import Any

import numpy as np

from common import report
from memorisation import proxies as proxies_lib
from memorisation import scores as scores_lib
from memorisation import trajectories

NON_FLAT = ('decreasing', 'cap', 'increasing')


def _interval(draws) -> list[float]:
  return list(report.percentile_interval(np.asarray(draws, np.float64)))


def classes(masks, correct_by_size, flipped, *, z: float, floor: float, draws: int,
            null_draws: int, rng=0, quantile: float = 0.95) -> dict[str, Any]:
  """Class fractions with the models-and-examples interval and the permutation null; the same for
  the mislabelled examples and for decreasing minus increasing."""
  masks = scores_lib.check_masks(masks)
  correct = np.asarray(correct_by_size)
  flipped = np.asarray(flipped, bool)
  mem_se = trajectories._scores(masks, correct.astype(np.float64), z, floor)  # pylint: disable=protected-access
  point_cls = trajectories.classify(*mem_se)
  point = trajectories.fractions(point_cls)
  boot_draws = trajectories.model_draws(masks, draws, rng)
  cls = trajectories.classes_in_draws(masks, correct, boot_draws, z, floor)
  boot = np.stack([trajectories.fractions(c[idx]) for c, (_, idx) in zip(cls, boot_draws)])
  names = trajectories.CLASSES
  inc, dec = names.index('increasing'), names.index('decreasing')
  out = {
      'class_fraction': dict(zip(names, point.tolist())),
      'class_interval_models': {c: list(trajectories.recentred_interval(point[i], boot[:, i]))
                                for i, c in enumerate(names)},
      'decreasing_minus_increasing': float(point[dec] - point[inc]),
      'decreasing_minus_increasing_interval': list(trajectories.recentred_interval(
          point[dec] - point[inc], boot[:, dec] - boot[:, inc])),
  }
  groups = {'mislabelled': flipped} if flipped.any() else None
  null = trajectories.null_fractions(masks, correct, null_draws, z, floor, rng=rng + 1,
                                     groups=groups)
  null_all = null['all'] if groups else null
  out['null'] = {c: {'mean': float(null_all[:, i].mean()),
                     'p95': float(np.quantile(null_all[:, i], quantile))}
                 for i, c in enumerate(names)}
  out['null_draws'] = int(null_draws)
  if groups:
    mis_point = trajectories.fractions(point_cls[flipped])
    mis_boot = []
    for c, (_, idx) in zip(cls, boot_draws):
      sel = idx[flipped[idx]]
      mis_boot.append(trajectories.fractions(c[sel])[inc] if len(sel) else 0.0)
    out['mislabelled_class_fraction'] = dict(zip(names, mis_point.tolist()))
    out['mislabelled_increasing_interval'] = list(trajectories.recentred_interval(
        mis_point[inc], mis_boot))
    out['mislabelled_null_increasing'] = {
        'mean': float(null['mislabelled'][:, inc].mean()),
        'p95': float(np.quantile(null['mislabelled'][:, inc], quantile))}
  return out


def _proxy_stats(mem, proxy_values, trend_ratio):
  corr = proxies_lib.correlations(mem, proxy_values)
  trend = proxies_lib.trend_agreement(mem, proxy_values)
  fixed = float(np.median([np.median(np.abs(v)) for v in corr.values()]))
  change = float(np.median([t['change_corr'] for t in trend.values()]))
  return fixed, change - trend_ratio * fixed, corr, trend


def proxies(mem, proxy_values: dict[str, np.ndarray], *, trend_ratio: float, num_resamples: int,
            rng=0) -> dict[str, Any]:
  """The two proxy statistics and their intervals over examples resampled with replacement:
  fixed = median over proxies of the median over sizes of |Spearman(mem, proxy)|; trend_excess =
  median over proxies of the oriented Spearman of the change across sizes minus trend_ratio x
  fixed (the proxies miss the trend when it is below 0)."""
  mem = np.asarray(mem, np.float64)
  fixed, excess, corr, trend = _proxy_stats(mem, proxy_values, trend_ratio)
  rng = np.random.default_rng(rng)
  n = mem.shape[1]
  boot = []
  for _ in range(num_resamples):
    idx = rng.integers(0, n, n)
    f, e, _, _ = _proxy_stats(mem[:, idx], {p: np.asarray(v)[:, idx]
                                            for p, v in proxy_values.items()}, trend_ratio)
    boot.append((f, e))
  boot = np.asarray(boot)
  return {'proxy_corr_by_size': corr, 'proxy_trend': trend,
          'fixed_size_corr': fixed, 'fixed_size_corr_interval': _interval(boot[:, 0]),
          'trend_excess': excess, 'trend_excess_interval': _interval(boot[:, 1])}


def tempered(probs, tau: float) -> np.ndarray:
  """p^(1/tau) normalised: the teacher's soft label at temperature tau (distill.loss's rule)."""
  logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-30, None)) / tau
  logp -= logp.max(-1, keepdims=True)
  p = np.exp(logp)
  return p / p.sum(-1, keepdims=True)


def distillation(masks, labels, flipped, classes, onehot, students, teacher, *, tau: float,
                 draws, test_draws, memorised: float = 0.5) -> dict[str, Any]:
  """The distillation checks' values and the diagnosis, each with a paired interval.

  onehot, students: {size label: {'correct_train' (K, N), 'correct_test' (K, T)}}, students by
  arm: {arm: {size label: ...}} with arm 'subset' (teacher k of the same subset, the card's
  protocol) and optionally 'full' (a teacher trained on all the data) and 'control' (one-hot
  models of another seed: the per-class change is measured against them); teacher: {'correct_train'
  (K, N) of the subset teachers, 'probs' (K, N, C), optionally 'full_probs' (K, N, C): the
  full-data teacher each student k read}.
  """
  masks = scores_lib.check_masks(masks)
  labels = np.asarray(labels)
  flipped = np.asarray(flipped, bool)
  k, n = masks.shape
  sizes = list(onehot)
  num_test = next(iter(onehot.values()))['correct_test'].shape[1]
  names = trajectories.CLASSES
  # p(label the student is trained on) from each teacher: for a mislabelled example, the
  # flipped label.
  p_label = {'subset': np.take_along_axis(teacher['probs'], labels[None, :, None], -1)[..., 0]}
  p_label_tau = {'subset': np.take_along_axis(tempered(teacher['probs'], tau),
                                              labels[None, :, None], -1)[..., 0]}
  argmax_label = {'subset': teacher['probs'].argmax(-1) == labels[None]}
  if 'full_probs' in teacher:
    p_label['full'] = np.take_along_axis(teacher['full_probs'], labels[None, :, None], -1)[..., 0]
    p_label_tau['full'] = np.take_along_axis(tempered(teacher['full_probs'], tau),
                                             labels[None, :, None], -1)[..., 0]
    argmax_label['full'] = teacher['full_probs'].argmax(-1) == labels[None]

  def mem(correct, ks):
    m = masks[ks]
    c = np.asarray(correct, np.float64)[ks]
    a, b, _, _ = scores_lib._in_out(m, c)  # pylint: disable=protected-access
    return a - b

  def masked_mean(values, weight):
    w = weight.astype(np.float64)
    return float((values * w).sum() / w.sum()) if w.sum() else np.nan  # nan: no such example

  def in_out(correct, ks, idx, group):
    """Mean over the group's examples of the accuracy of the models that saw each one, and of
    those that did not (mem = the first minus the second)."""
    m = masks[ks]
    c = np.asarray(correct, np.float64)[ks]
    a, b, _, _ = scores_lib._in_out(m, c)  # pylint: disable=protected-access
    a, b = a[idx][group], b[idx][group]
    return (a.mean(), b.mean()) if group.any() else (np.nan, np.nan)

  def stat(ks, idx, test_idx):
    out = {}
    mis = flipped[idx]
    t_mem = mem(teacher['correct_train'], ks)[idx]
    out['teacher mem, mislabelled'] = t_mem[mis].mean() if mis.any() else np.nan
    out['teacher mem, clean'] = t_mem[~mis].mean()
    seen = masks[ks][:, idx]
    for arm in p_label:
      sub_mis = np.broadcast_to(mis[None], seen.shape)
      w_seen = (seen if arm == 'subset' else np.ones_like(seen)) & sub_mis
      out[f'{arm} teacher p(flipped label), seen'] = masked_mean(p_label[arm][ks][:, idx], w_seen)
      out[f'{arm} teacher p(flipped label) at tau, seen'] = masked_mean(
          p_label_tau[arm][ks][:, idx], w_seen)
      out[f'{arm} teacher argmax = flipped label, seen'] = masked_mean(
          argmax_label[arm][ks][:, idx], w_seen)
    d_all, d_acc = [], []
    d_cls = {base: {c: [] for c in names} for base in ('one-hot', 'control')}
    reg_cls = {c: [] for c in names}
    cls = classes[idx]
    for size in sizes:
      m1 = mem(onehot[size]['correct_train'], ks)[idx]
      acc1 = np.asarray(onehot[size]['correct_test'], np.float64)[ks][:, test_idx].mean()
      out[f'{size}: one-hot mem'] = m1.mean()
      out[f'{size}: one-hot mem, mislabelled'] = m1[mis].mean() if mis.any() else np.nan
      out[f'{size}: one-hot test acc'] = acc1
      for group, sel in (('mislabelled', mis), ('clean', ~mis)):
        (out[f'{size}: one-hot seen acc, {group}'],
         out[f'{size}: one-hot unseen acc, {group}']) = in_out(onehot[size]['correct_train'], ks,
                                                               idx, sel)
      arm_mem = {}
      for arm, by_size in students.items():
        md = arm_mem[arm] = mem(by_size[size]['correct_train'], ks)[idx]
        accd = np.asarray(by_size[size]['correct_test'], np.float64)[ks][:, test_idx].mean()
        out[f'{size}: {arm} mem'] = md.mean()
        out[f'{size}: {arm} mem, mislabelled'] = md[mis].mean() if mis.any() else np.nan
        out[f'{size}: {arm} test acc'] = accd
        for group, sel in (('mislabelled', mis), ('clean', ~mis)):
          (out[f'{size}: {arm} seen acc, {group}'],
           out[f'{size}: {arm} unseen acc, {group}']) = in_out(by_size[size]['correct_train'], ks,
                                                               idx, sel)
        if arm == 'control':
          continue
        top = md >= memorised
        out[f'{size}: {arm} memorised count'] = float(top.sum())
        out[f'{size}: {arm} memorised, teacher mem'] = t_mem[top].mean() if top.any() else np.nan
        out[f'{size}: {arm} memorised, one-hot mem'] = m1[top].mean() if top.any() else np.nan
        out[f'{size}: {arm} memorised, mislabelled'] = mis[top].mean() if top.any() else np.nan
      md = arm_mem['subset']
      d_all.append(md.mean() - m1.mean())
      d_acc.append(np.asarray(students['subset'][size]['correct_test'],
                              np.float64)[ks][:, test_idx].mean() - acc1)
      for i, c in enumerate(names):
        sel = cls == i
        if not sel.any():
          for base in d_cls:
            d_cls[base][c].append(np.nan)
          reg_cls[c].append(np.nan)
          continue
        d_cls['one-hot'][c].append((md[sel] - m1[sel]).mean())
        if 'control' in arm_mem:
          d_cls['control'][c].append((md[sel] - arm_mem['control'][sel]).mean())
          reg_cls[c].append((arm_mem['control'][sel] - m1[sel]).mean())
    out['distilled minus one-hot mem'] = float(np.mean(d_all))
    out['distilled minus one-hot test acc'] = float(np.mean(d_acc))
    # The per-class change against the control when there is one (independent of the sweep
    # that picked the classes), else against the sweep's one-hot models.
    base = 'control' if 'control' in students else 'one-hot'
    by_class = {}
    for c in names:
      if c == 'other' or np.all(np.isnan(d_cls[base][c])):
        continue
      by_class[c] = float(np.nanmean(d_cls[base][c]))
      out[f'change on {c}'] = by_class[c]
      if base == 'control':
        out[f'change on {c} against the sweep'] = float(np.nanmean(d_cls['one-hot'][c]))
        out[f'control minus sweep on {c}'] = float(np.nanmean(reg_cls[c]))
    others = [v for c, v in by_class.items() if c != 'increasing']
    out['change on increasing minus the lowest other'] = (
        by_class.get('increasing', np.nan) - min(others) if others else np.nan)
    return out

  # Draws where a quantity is undefined (an empty class or no mislabelled example drawn) are
  # dropped from that quantity's interval.
  point = stat(np.arange(k), np.arange(n), np.arange(num_test))
  boot = [stat(ks, idx, t) for (ks, idx), t in zip(draws, test_draws)]
  result = {}
  for key, value in point.items():
    vals = np.array([b.get(key, np.nan) for b in boot], np.float64)   # absent: class empty
    vals = vals[np.isfinite(vals)]
    if len(vals) < 2 or not np.isfinite(value):
      interval = None
    elif 'memorised' in key:
      # A set picked by a threshold on noisy scores: duplicated models inflate it (as they do
      # the trajectory classes), so the interval is recentred on the point.
      interval = list(trajectories.recentred_interval(value, vals))
    else:
      interval = _interval(vals)
    result[key] = {'value': float(value), 'interval': interval}
  return result
