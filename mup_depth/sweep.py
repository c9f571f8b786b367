"""Sweeps of eta*(n, L) over widths, depths and seeds (vmapped over seeds), and the power-law fit.

    result = sweep.run_sweep(widths=(256, 512), depths=(4, 8, 16, 32), num_seeds=32)
    fit = sweep.fit_exponents(result, min_depth=8)      # exponents in L and n, bootstrap intervals
    sweep.fit_exponents(result, min_depth=4, max_depth=8)   # the local exponent between 4 and 8
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import warnings

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from mup_depth import one_step
from mup_depth import parameterisation as mlp

# n below this multiple of L gets a finite-width warning (the card's pilot drifted at n = 2L).
MIN_WIDTH_OVER_DEPTH = 4


@dataclasses.dataclass
class SweepResult:
  widths: tuple[int, ...]
  depths: tuple[int, ...]
  threshold: float
  coefficient: np.ndarray      # (n, L, seeds): A with M(eta) = eta^2 A (linearised)
  eta_exact: np.ndarray | None  # (n, L, seeds): per-seed exact eta*, NaN where not bracketed
  warnings: list[str]

  def eta_linear(self, seeds=None, statistic: str = 'mean') -> np.ndarray:
    """(n, L): sqrt(C / stat over seeds of A); `seeds` resamples the seed axis."""
    a = self.coefficient if seeds is None else self.coefficient[:, :, seeds]
    stat = np.mean(a, -1) if statistic == 'mean' else np.median(a, -1)
    return np.sqrt(self.threshold / stat)

  def eta_exact_median(self, seeds=None) -> np.ndarray:
    e = self.eta_exact if seeds is None else self.eta_exact[:, :, seeds]
    with np.errstate(all='ignore'):
      counts = np.isfinite(e).sum(-1)
      out = np.nanmedian(np.where(np.isfinite(e), e, np.inf), -1) if e.size else e
    return np.where(counts > 0, out, np.nan)


def _seed_batch(key, input_dim, width, depth, batch_size, readout_scale):
  k_params, k_x, k_y = jax.random.split(key, 3)
  params = mlp.init(k_params, input_dim, width, depth, 1, readout_scale=readout_scale)
  x = jax.random.normal(k_x, (batch_size, input_dim))
  y = jax.random.normal(k_y, (batch_size, 1))
  return params, x, y


@functools.partial(jax.jit, static_argnames=('input_dim', 'width', 'depth', 'batch_size', 'exact',
                                             'layer'))
def _measure(keys, lr_multipliers, threshold, readout_scale, *, input_dim, width, depth,
             batch_size, exact, layer):
  """(A, eta*, bracketed) per key. The parameterisation enters only as the readout's scale, an
  input: both parameterisations (the sweep and its contrast) share one compiled program for each
  (n, L, seeds per chunk, estimator)."""
  def one(key):
    params, x, y = _seed_batch(key, input_dim, width, depth, batch_size, readout_scale)
    if not exact:
      a = one_step.linear_coefficient(params, x, y, layer=layer, lr_multipliers=lr_multipliers)
      return a, jnp.nan, True
    return one_step.coefficient_and_eta_star(params, x, y, threshold=threshold, layer=layer,
                                             lr_multipliers=lr_multipliers, iterations=30)
  return jax.vmap(one)(keys)


def seed_chunk(width: int, depth: int, num_seeds: int | None = None,
               budget_bytes: float = 2e9) -> int:
  """Seeds per vmapped chunk: parameters, gradients and tangents of each seed must fit. With
  `num_seeds`, the largest chunk that divides it: every chunk of a (n, L) then has one shape, and
  one compiled program (a remainder chunk compiled a second one)."""
  per_seed = 4 * 4 * (depth * width * width)
  largest = max(1, int(budget_bytes // per_seed))
  if num_seeds is None:
    return largest
  return max(c for c in range(1, min(largest, num_seeds) + 1) if num_seeds % c == 0)


def _cell_path(cell_dir: str, parameterisation: str, width: int, depth: int) -> str:
  return os.path.join(cell_dir, f'{parameterisation}_n{width}_L{depth}.npz')


def _load_cell(path: str, settings: str):
  """(A, eta*) of a cell measured under the same settings, else None."""
  if not os.path.exists(path):
    return None
  try:
    with np.load(path) as f:
      if str(f['settings']) != settings:
        return None
      return f['coefficient'], f['eta_exact']
  except (OSError, ValueError, KeyError) as e:
    logging.warning('Remeasuring %s: unreadable (%s).', path, e)
    return None


def _save_cell(path: str, settings: str, coefficient, eta_exact) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + '.tmp.npz'
  np.savez(tmp, settings=np.array(settings), coefficient=coefficient, eta_exact=eta_exact)
  os.replace(tmp, path)


def run_sweep(widths=(256, 512, 1024), depths=(2, 4, 8, 16, 32, 64), num_seeds: int = 32, *,
              batch_size: int = 8, input_dim: int = 64, threshold: float = 1.0,
              parameterisation: str = 'mean_field', exact: bool = True,
              lr_multipliers=one_step.HIDDEN_ONLY, layer: int = -1, seed: int = 0,
              cell_dir: str | None = None, on_cell=None) -> SweepResult:
  """eta* for every (n, L) and seed. Seed s uses the same key at every (n, L).

  cell_dir: each (n, L) cell's measurements are saved there as it finishes (process 0) and a
    cell measured under the same settings is read back instead of measured again: a sweep that
    was stopped (a preempted accelerator job) resumes, and a grid that grows reuses its cells.
  on_cell: called after each cell as on_cell(width, depth, coefficient (seeds,), eta_exact
    (seeds,) or None, reused: bool) (progress records).
  """
  widths, depths = tuple(widths), tuple(depths)
  # An empty grid would return an empty result that every later fit fails on far from here.
  if not widths or not depths:
    raise ValueError(f'run_sweep needs at least one width and one depth, got widths={widths}, '
                     f'depths={depths}.')
  for name, value in (('num_seeds', num_seeds), ('batch_size', batch_size)):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise ValueError(f'{name} must be a positive integer, got {value!r}.')
  if not threshold > 0:
    raise ValueError(f'threshold (the change C that defines eta*) must be positive, got '
                     f'{threshold!r}.')
  for n in widths:
    for depth in depths:
      mlp.check_shape(n, depth, input_dim)
  num_seeds, batch_size = int(num_seeds), int(batch_size)
  warnings = [f'n={n} is not much larger than L={d} (n < {MIN_WIDTH_OVER_DEPTH} L): '
              'finite-width corrections may bias eta*.'
              for n in widths for d in depths if n < MIN_WIDTH_OVER_DEPTH * d]
  for w in warnings:
    logging.warning(w)
  keys = jax.random.split(jax.random.key(seed), num_seeds)
  coefficient = np.zeros((len(widths), len(depths), num_seeds), np.float64)
  eta_exact = np.full_like(coefficient, np.nan) if exact else None
  lrs = {k: jnp.float32(v) for k, v in lr_multipliers.items()}
  # What a saved cell must have been measured with to be reused (its width and depth: the name).
  settings = json.dumps({
      'parameterisation': parameterisation, 'num_seeds': num_seeds, 'batch_size': batch_size,
      'input_dim': input_dim, 'threshold': float(threshold), 'exact': bool(exact),
      'layer': layer, 'seed': seed, 'iterations': 30,
      'lr_multipliers': {k: float(v) for k, v in sorted(lr_multipliers.items())},
  }, sort_keys=True)
  for i, n in enumerate(widths):
    readout_scale = jnp.float32(mlp.readout_std(n, parameterisation))
    for j, depth in enumerate(depths):
      path = cell_dir and _cell_path(cell_dir, parameterisation, n, depth)
      saved = _load_cell(path, settings) if path else None
      if saved is not None:
        coefficient[i, j] = saved[0]
        if exact:
          eta_exact[i, j] = saved[1]
      else:
        chunk = seed_chunk(n, depth, num_seeds)
        for start in range(0, num_seeds, chunk):
          a, eta, ok = _measure(keys[start:start + chunk], lrs, threshold, readout_scale,
                                input_dim=input_dim, width=n, depth=depth, batch_size=batch_size,
                                exact=exact, layer=layer)
          coefficient[i, j, start:start + chunk] = np.asarray(a)
          if exact:
            eta_exact[i, j, start:start + chunk] = np.where(np.asarray(ok), np.asarray(eta),
                                                            np.nan)
        if path and jax.process_index() == 0:
          _save_cell(path, settings, coefficient[i, j],
                     eta_exact[i, j] if exact else np.array([]))
      if exact:
        missing = int(np.isnan(eta_exact[i, j]).sum())
        if missing:
          warnings.append(f'n={n}, L={depth}: {missing} of {num_seeds} seeds never crossed '
                          f'C={threshold} within 2^+-8 of the linearised eta*; reported as NaN.')
          logging.warning(warnings[-1])
      logging.info('n=%d L=%d: eta*_lin(mean A)=%.4g%s', n, depth,
                   np.sqrt(threshold / coefficient[i, j].mean()),
                   ' (saved cell reused)' if saved is not None else '')
      if on_cell is not None:
        on_cell(n, depth, coefficient[i, j], eta_exact[i, j] if exact else None,
                saved is not None)
  return SweepResult(tuple(widths), tuple(depths), threshold, coefficient, eta_exact, warnings)


def _design(widths, depths, eta, min_depth: int, max_depth: int | None, correction: bool):
  """Rows [1, log L, log n (, 1/L)] and targets log eta* of the cells with min_depth <= L <=
  max_depth and a finite positive eta*."""
  rows, targets = [], []
  for i, n in enumerate(widths):
    for j, depth in enumerate(depths):
      if (depth >= min_depth and (max_depth is None or depth <= max_depth)
          and np.isfinite(eta[i, j]) and eta[i, j] > 0):
        rows.append([1.0, np.log(depth), np.log(n)] + ([1.0 / depth] if correction else []))
        targets.append(np.log(eta[i, j]))
  return np.array(rows), np.array(targets)


def least_squares_exponents(eta: np.ndarray, widths, depths, min_depth: int,
                            max_depth: int | None = None, correction: bool = False):
  """Fits log eta = a + b log L + c log n (+ e / L) over min_depth <= L <= max_depth: (b, c, a).

  correction=True adds a 1/L term, the leading finite-depth correction of a power law
  (eta* ~ L^b (1 + e' / L)): b is then the exponent the law settles to at large depth.
  """
  rows, targets = _design(widths, depths, eta, min_depth, max_depth, correction)
  span = f'{min_depth} <= L' + (f' <= {max_depth}' if max_depth is not None else '')
  num_depths = len({r[1] for r in rows}) if len(rows) else 0
  if num_depths < (3 if correction else 2):
    raise ValueError(f'Need at least {"three" if correction else "two"} depths with {span} to fit '
                     f'an exponent in L{" with a 1/L correction" if correction else ""}; got '
                     f'{num_depths}.')
  keep = [0, 1] + ([2] if len({r[2] for r in rows}) > 1 else []) + ([3] if correction else [])
  coef, *_ = np.linalg.lstsq(rows[:, keep], targets, rcond=None)
  # One width: no exponent in n.
  return float(coef[1]), float(coef[2]) if 2 in keep else float('nan'), float(coef[0])


ESTIMATORS = ('linear_mean', 'linear_median', 'exact_median')


def eta_table(result: SweepResult, estimator: str, seeds=None) -> np.ndarray:
  """(n, L) eta* by `estimator` ('linear_mean': sqrt(C / mean over seeds of A), the card's;
  'linear_median'; 'exact_median'), over `seeds` (indices, a bootstrap resample) or all seeds."""
  if estimator == 'linear_mean':
    return result.eta_linear(seeds, 'mean')
  if estimator == 'linear_median':
    return result.eta_linear(seeds, 'median')
  if estimator == 'exact_median':
    if result.eta_exact is None:
      raise ValueError('The sweep ran without exact=True.')
    return result.eta_exact_median(seeds)
  raise ValueError(f'Unknown estimator {estimator!r}; use one of {ESTIMATORS}.')


def bootstrap_seeds(num_seeds: int, num_bootstrap: int, seed: int = 0) -> np.ndarray:
  """(num_bootstrap, num_seeds) resampled seed indices. Every fit of one run uses the same draws,
  so differences between fits (by depth range, by estimator) are paired."""
  if isinstance(num_bootstrap, bool) or int(num_bootstrap) != num_bootstrap or num_bootstrap < 1:
    raise ValueError(f'num_bootstrap must be a positive integer, got {num_bootstrap!r}.')
  return np.random.default_rng(seed).integers(0, num_seeds, (int(num_bootstrap), num_seeds))


def fit_with_draws(result: SweepResult, *, min_depth: int = 8, max_depth: int | None = None,
                   estimator: str = 'linear_mean', correction: bool = False,
                   num_bootstrap: int = 1000, seed: int = 0) -> tuple[dict, np.ndarray]:
  """fit_exponents' dict and its (num_bootstrap, 2) draws of (exponent in L, in n); a draw whose
  resample cannot be fitted (cells without a finite exact eta*) is NaN."""
  draws = bootstrap_seeds(result.coefficient.shape[-1], num_bootstrap, seed)
  fit = lambda eta: least_squares_exponents(eta, result.widths, result.depths, min_depth,
                                            max_depth, correction)
  b, c, a = fit(eta_table(result, estimator))
  boot = []
  for seeds in draws:
    try:
      boot.append(fit(eta_table(result, estimator, seeds))[:2])
    except ValueError:
      boot.append((np.nan, np.nan))
  boot = np.array(boot, np.float64)
  with np.errstate(all='ignore'), warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)  # an all-NaN column (one width: no n)
    lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
  depths = [d for d in result.depths if d >= min_depth and (max_depth is None or d <= max_depth)]
  return {'exponent_L': b, 'exponent_L_lo': float(lo[0]), 'exponent_L_hi': float(hi[0]),
          'exponent_n': c, 'exponent_n_lo': float(lo[1]), 'exponent_n_hi': float(hi[1]),
          'log_prefactor': a, 'min_depth': min_depth, 'max_depth': max_depth,
          'depths': depths, 'correction': correction, 'estimator': estimator}, boot


def fit_exponents(result: SweepResult, *, min_depth: int = 8, max_depth: int | None = None,
                  estimator: str = 'linear_mean', correction: bool = False,
                  num_bootstrap: int = 1000, seed: int = 0) -> dict[str, float]:
  """Exponents of eta* in L and n with 95% bootstrap intervals (resampling seeds: a resampled seed
  keeps its whole (n, L) grid, whose cells share its inputs), fitted over
  min_depth <= L <= max_depth (and with a 1/L term when `correction`).

  estimator: one of ESTIMATORS. Returns exponent_L, exponent_L_lo, exponent_L_hi, exponent_n (and
  _lo, _hi), log_prefactor, min_depth, max_depth, depths (those in the fit), correction,
  estimator. Fits of one result with the same `seed` use the same resamples (paired).
  """
  return fit_with_draws(result, min_depth=min_depth, max_depth=max_depth, estimator=estimator,
                        correction=correction, num_bootstrap=num_bootstrap, seed=seed)[0]
