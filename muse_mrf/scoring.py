"""How the samplers are scored: a classifier trained on real (tokenised and decoded) images, its
accuracy on the class each sample was asked for, a Frechet distance on its penultimate features,
the MRF layer's cost against one backbone call, and the claim's checks and the diagnosis table
on those numbers (intervals over sampler seeds).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import classifier as classifier_lib
from common import models
from common import report
from common import train as train_lib
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


def scorer_config(config) -> ml_collections.ConfigDict:
  """The scorer's loop config (config.scorer) with its model (config.scorer_model)."""
  scfg = config.scorer.copy_and_resolve_references()
  with scfg.unlocked():
    scfg.model = ml_collections.ConfigDict(config.scorer_model.to_dict())
  return scfg


def train_scorer(config, train_images, train_labels, test_images, test_labels, workdir: str,
                 num_classes: int):
  return classifier_lib.train_classifier(
      scorer_config(config), workdir,
      train_arrays={'inputs': train_images, 'label': train_labels},
      eval_arrays={'test': {'inputs': test_images, 'label': test_labels}},
      num_classes=num_classes)


def train_scorer_streamed(config, train_iter, input_shape, workdir: str,
                          num_classes: int) -> classifier_lib.Classifier:
  """The scorer trained as common.classifier trains one (its model, loss and loop) on a stream of
  {'inputs', 'label'} batches; its test split is read afterwards (StreamedData.score_real)."""
  scfg = scorer_config(config)
  model = models.build(scfg.model, num_classes)
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  result = train_lib.train(
      scfg, workdir, init_fn=lambda rng: model.init(rng, sample, train=False),
      loss_fn=classifier_lib.make_loss_fn(model, num_classes), train_iter=train_iter)
  return classifier_lib.Classifier(model=model, result=result, num_classes=num_classes)


def outputs(scorer, batches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(logits, penultimate features, labels) of the scorer over batches {'inputs', 'label'}."""
  parts = [(*scorer.logits_and_features(b['inputs']), b['label']) for b in batches]
  return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def score_outputs(logits: np.ndarray, features: np.ndarray, asked: np.ndarray,
                  reference_features: np.ndarray) -> dict[str, float]:
  return {'accuracy': float(np.mean(logits.argmax(-1) == asked)),
          'fd': frechet_distance(features, reference_features)}


def score(scorer, images: np.ndarray, asked: np.ndarray, reference_features: np.ndarray):
  return score_outputs(*scorer.logits_and_features(images), asked, reference_features)


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


def _interval(values) -> dict[str, Any]:
  return report.mean_interval([float(v) for v in values])


def _reads(stats, above: str, below: str) -> str:
  if stats['low'] > 0:
    return above
  if stats['high'] < 0:
    return below
  return 'no difference resolved (the interval holds 0)'


def _per_seed(rows, name: str, field: str) -> np.ndarray:
  return np.asarray(rows[name][f'{field}_per_seed'], np.float64)


def _fmt_interval(stats) -> str:
  return f'[{stats["low"]:.4f}, {stats["high"]:.4f}]'


def effects(config, rows, floor_fd: float) -> dict[str, dict[str, Any]]:
  """The paired per-seed differences the checks and the diagnosis read (each sampler seed draws
  every sampler from the same key), as report.mean_interval dicts over sampler seeds:

    fd_gap, acc_gap        plain T=fast minus plain T=reference FD; reference minus fast accuracy
                           (> 0: few-step decoding loses quality, the gap the MRF is to close)
    excess_ref, excess_plain, excess_mrf    FD above the floor of held-out real images
    mrf_vs_ref_excess, mrf_vs_plain_excess  ratios of those excesses (per seed)
    mrf_minus_ref_acc, mrf_minus_plain_acc  class accuracy differences
    mrf_minus_plain_fd     the whole layer's effect on FD
    pairwise_fd, pairwise_acc   the MRF minus the same layer with its pairwise term zeroed
    unary_fd               the zeroed layer (the learned temperature only) minus plain
  """
  c = config.checks
  ref, plain, mrf = (f'maskgit_T{c.reference_steps}', f'maskgit_T{c.fast_steps}',
                     f'mrf_T{c.fast_steps}')
  unary = f'unary_scale_only_T{c.fast_steps}'
  fd = {n: _per_seed(rows, n, 'fd') for n in (ref, plain, mrf, unary) if n in rows}
  acc = {n: _per_seed(rows, n, 'accuracy') for n in (ref, plain, mrf, unary) if n in rows}
  out = {
      'fd_gap': fd[plain] - fd[ref], 'acc_gap': acc[ref] - acc[plain],
      'excess_ref': fd[ref] - floor_fd, 'excess_plain': fd[plain] - floor_fd,
      'excess_mrf': fd[mrf] - floor_fd,
      'mrf_minus_ref_acc': acc[mrf] - acc[ref], 'mrf_minus_plain_acc': acc[mrf] - acc[plain],
      'mrf_minus_plain_fd': fd[mrf] - fd[plain],
  }
  # Ratios of the excess over the floor, per seed (only where the denominator is positive).
  for key, num, den in (('mrf_vs_ref_excess', mrf, ref), ('mrf_vs_plain_excess', mrf, plain)):
    d = fd[den] - floor_fd
    if np.all(d > 0):
      out[key] = (fd[num] - floor_fd) / d
  # The other T with both a plain and an MRF sampler: the gap there and what the MRF does to it.
  for t in sorted(set(config.sampling.mrf_steps) - {c.fast_steps}):
    p, m = f'maskgit_T{t}', f'mrf_T{t}'
    if p in rows and m in rows:
      fp, fm = _per_seed(rows, p, 'fd'), _per_seed(rows, m, 'fd')
      ap, am = _per_seed(rows, p, 'accuracy'), _per_seed(rows, m, 'accuracy')
      out.update({f'fd_gap_T{t}': fp - fd[ref], f'acc_gap_T{t}': acc[ref] - ap,
                  f'mrf_minus_plain_fd_T{t}': fm - fp, f'mrf_minus_plain_acc_T{t}': am - ap})
  if unary in fd:
    out['pairwise_fd'] = fd[mrf] - fd[unary]
    out['pairwise_acc'] = acc[mrf] - acc[unary]
    out['unary_fd'] = fd[unary] - fd[plain]
  return {k: _interval(v) for k, v in out.items()}


def make_checks(config, rows, floor_fd: float) -> list[dict[str, Any]]:
  """The claim's checks, stated before the run (config.checks), each decided by its interval over
  the sampler seeds. FDs are read as their excess over the floor (held-out real images scored
  like a sampler): the part of the distance a sampler can change. A check comparing the MRF with
  plain T=fast is inconclusive when plain T=fast has no gap to T=reference to close."""
  c = config.checks
  r, f = c.reference_steps, c.fast_steps
  e = effects(config, rows, floor_fd)
  ratio_parts = {'mrf_vs_ref_excess': 'excess_ref', 'mrf_vs_plain_excess': 'excess_plain'}

  def row(name, key, compare, threshold, inconclusive='', note='', informational=False):
    if key not in e:   # a ratio whose denominator is at or below the floor in some seed
      den = ratio_parts[key]
      return report.check(
          name, float('nan'), compare=compare, threshold=threshold, evidence='interval',
          note=note, informational=informational, inconclusive=inconclusive or (
              f'the denominator ({den}: {e[den]["mean"]:.4f} {_fmt_interval(e[den])}) is at or '
              'below the FD floor in some seed: no excess to divide by'))
    st = e[key]
    return report.check(name, st['mean'], compare=compare, threshold=threshold,
                        interval=(st['low'], st['high']), inconclusive=inconclusive, note=note,
                        informational=informational)

  ref_at_floor = ('' if e['excess_ref']['low'] > 0 else
                  f'plain T={r} is at the FD floor: no excess to compare with')
  no_fd_gap = ('' if e['fd_gap']['low'] > 0 else
               f'no few-step gap: plain T={f} FD is not above T={r}\'s '
               f'(difference {e["fd_gap"]["mean"]:.4f} {_fmt_interval(e["fd_gap"])}), so there '
               'is nothing for the MRF to close')
  no_acc_gap = ('' if e['acc_gap']['low'] > 0 else
                f'no few-step gap: plain T={f} class accuracy is not below T={r}\'s '
                f'(difference {e["acc_gap"]["mean"]:.4f} {_fmt_interval(e["acc_gap"])})')
  n = e['fd_gap']['n']
  checks = [
      row(f'MRF T={f} class accuracy minus plain T={r}', 'mrf_minus_ref_acc', '>=',
          -c.acc_margin, note=f'about as good as T={r}: within {c.acc_margin}'),
      row(f'MRF T={f} FD above the floor / plain T={r}\'s', 'mrf_vs_ref_excess', '<=',
          c.fd_ratio_vs_reference, inconclusive=ref_at_floor,
          note=f'per-seed ratio of FD minus the held-out floor, {n} sampler seeds'),
      row(f'MRF T={f} FD above the floor / plain T={f}\'s', 'mrf_vs_plain_excess', '<=',
          c.fd_ratio_vs_plain, inconclusive=no_fd_gap, note='"clearly better than plain"'),
      row(f'MRF T={f} class accuracy minus plain T={f}', 'mrf_minus_plain_acc', '>=',
          c.acc_gain_vs_plain, inconclusive=no_acc_gap),
  ]
  calls = rows[f'mrf_T{f}']['backbone_calls'] / rows[f'maskgit_T{r}']['backbone_calls']
  checks.append(report.check(f'backbone calls MRF T={f} / plain T={r}', calls, compare='<=',
                             threshold=c.calls_ratio, evidence='exact',
                             note='counted by the sampler'))
  if 'pairwise_fd' in e:
    checks.append(row(f'pairwise term: MRF T={f} FD minus the layer with it zeroed', 'pairwise_fd',
                      '<=', 0.0, informational=True,
                      note='< 0: the pairwise messages lower FD (the Diagnosis table)'))
  wall = np.asarray(rows[f'mrf_T{f}']['seconds_per_seed']) / np.asarray(
      rows[f'maskgit_T{r}']['seconds_per_seed'])
  st = _interval(wall)
  checks.append(report.check(f'wall time MRF T={f} / plain T={r}', st['mean'], compare='<=',
                             threshold=c.wall_ratio, interval=(st['low'], st['high']),
                             informational=True, note='CPU wall clock; shown, not deciding'))
  return checks


DIAGNOSIS_COLUMNS = ['quantity (per sampler seed, paired)', 'mean', '95% interval', 'reads']


def diagnosis_table(config, rows, floor_fd: float, grid, codebook_size: int) -> dict[str, Any]:
  """'Diagnosis: ...': whether plain T=fast loses quality against T=reference on this token grid
  (the gap the MRF is meant to close), and the MRF's effect split into its learned temperature
  (the layer with its pairwise term zeroed) and its pairwise term."""
  c = config.checks
  r, f = c.reference_steps, c.fast_steps
  e = effects(config, rows, floor_fd)
  lines = [
      ('fd_gap', f'FD: plain T={f} minus plain T={r} (the few-step gap)',
       f'T={f} loses quality', f'T={f} better'),
      ('acc_gap', f'class accuracy: plain T={r} minus plain T={f}', f'T={f} loses accuracy',
       f'T={f} more accurate'),
      ('excess_plain', f'FD above the floor: plain T={f}', 'above the floor', 'below the floor'),
      ('excess_ref', f'FD above the floor: plain T={r}', 'above the floor', 'below the floor'),
      ('mrf_minus_plain_fd', f'FD: MRF T={f} minus plain T={f} (the whole layer)',
       'the MRF raises FD', 'the MRF lowers FD'),
      ('unary_fd', f'FD: pairwise term zeroed minus plain T={f} (the learned temperature)',
       'the temperature raises FD', 'the temperature lowers FD'),
      ('pairwise_fd', f'FD: MRF T={f} minus the layer with its pairwise term zeroed',
       'the pairwise term raises FD', 'the pairwise term lowers FD'),
      ('pairwise_acc', f'class accuracy: MRF T={f} minus its pairwise term zeroed',
       'the pairwise term raises accuracy', 'the pairwise term lowers accuracy'),
  ]
  for t in sorted(set(config.sampling.mrf_steps) - {f}):
    lines += [
        (f'fd_gap_T{t}', f'FD: plain T={t} minus plain T={r}', f'T={t} loses quality',
         f'T={t} better'),
        (f'acc_gap_T{t}', f'class accuracy: plain T={r} minus plain T={t}',
         f'T={t} loses accuracy', f'T={t} more accurate'),
        (f'mrf_minus_plain_fd_T{t}', f'FD: MRF T={t} minus plain T={t}', 'the MRF raises FD',
         'the MRF lowers FD'),
        (f'mrf_minus_plain_acc_T{t}', f'class accuracy: MRF T={t} minus plain T={t}',
         'the MRF raises accuracy', 'the MRF lowers accuracy')]
  table_rows = [[label, round(e[k]['mean'], 4), _fmt_interval(e[k]), _reads(e[k], up, down)]
                for k, label, up, down in lines if k in e]
  n = e['fd_gap']['n']
  return report.table(
      f'Diagnosis: the few-step gap on the {grid[0]} x {grid[1]} token grid ({codebook_size} '
      f'codes) and the MRF\'s pairwise term (means over {n} sampler seeds [95% Student-t '
      'intervals])', DIAGNOSIS_COLUMNS, table_rows,
      note=f'FD floor (held-out real images scored like a sampler): {floor_fd:.4f}. Each seed '
           'draws every sampler from the same key; the backbone, MRF and scorer are trained once '
           '(the intervals cover the sampling, not the training).')
