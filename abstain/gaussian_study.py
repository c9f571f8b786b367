"""The closed-form check: 2-D Gaussians (gaussians.GaussianSCOD) where P_in(y|x) and rho(x) are
known, so the exact Bayes rule's SCOD risk is compared with the plug-ins fitted from n examples per
class, at each c_fn and budget; its figure (the abstain region, the half-plane, risk against
budget). experiment.run calls `run` first.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from abstain import claims
from abstain import gaussians as gaussians_lib
from abstain import scod
from common import report


def _gaussian_seed(cfg, c_fns, budgets, seed):
  problem = gaussians_lib.GaussianSCOD()
  rng = np.random.default_rng(1000 + seed)
  x, y, out = problem.sample_mixture(cfg.test_size, cfg.pi, rng)
  post = problem.posterior(x)
  m_true, rho_true, correct_true = post.max(1), problem.rho(x), (post.argmax(1) == y) & ~out
  rows = {}
  for n in cfg.sizes:
    plug = gaussians_lib.fit_plugin(problem, n, cfg.pi_mix, rng)
    xv, yv, ov = problem.sample_mixture(3 * n, cfg.pi, rng)
    m_hat, m_val = plug.max_prob(x), plug.max_prob(xv)
    correct, correct_val = (plug.predict(x) == y) & ~out, (plug.predict(xv) == yv) & ~ov
    rhos = {k: (plug.rho(x, k), plug.rho(xv, k))
            for k in ('auxiliary', 'mixture', 'corrected_sigmoid')}
    per_c = {}
    for c in c_fns:
      risk = {k: [] for k in ('bayes', 'msp', 'ood', 'plugin', 'plugin_mixture',
                              'plugin_corrected_sigmoid')}
      for b in budgets:
        risk['bayes'].append(scod.scod_risk_at_budget(
            scod.bayes_score(m_true, rho_true, c, cfg.pi), out, correct_true, c, b))
        risk['msp'].append(scod.scod_risk_at_budget(1 - m_hat, out, correct, c, b))
        risk['ood'].append(scod.scod_risk_at_budget(rhos['auxiliary'][0], out, correct, c, b))
        for name, kind in (('plugin', 'auxiliary'), ('plugin_mixture', 'mixture'),
                           ('plugin_corrected_sigmoid', 'corrected_sigmoid')):
          slope = scod.tune_slope(m_val, rhos[kind][1], ov, correct_val, c, b)
          risk[name].append(scod.scod_risk_at_budget(
              scod.plugin_score(m_hat, rhos[kind][0], c, slope), out, correct, c, b))
      per_c[c] = risk
    rows[n] = {'risk': per_c, 'pi_mix_hat': plug.corrected.pi_mix}
  return rows, (problem, x, y, out, m_true, rho_true, plug)


def _plot_gaussians(cfg, budgets, rows, example, path):
  problem, x, y, out, m_true, rho_true, plug = example
  c, b = cfg.figure_c_fn, cfg.figure_budget
  lam = scod.bayes_lambda(m_true, rho_true, c, cfg.pi, b)
  plt = report.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
  ax = axes[0]
  show = np.arange(min(3000, len(y)))
  for label, colour, name in ((0, 'tab:blue', 'class 0'), (1, 'tab:green', 'class 1'),
                              (-1, 'tab:red', 'outlier')):
    sel = show[y[show] == label]
    ax.scatter(x[sel, 0], x[sel, 1], s=2, c=colour, alpha=0.4, label=name)
  g1, g2 = np.meshgrid(np.linspace(-45, 45, 220), np.linspace(-45, 45, 220))
  grid = np.stack([g1.ravel(), g2.ravel()], 1)
  t_grid = scod.bayes_score(problem.posterior(grid).max(1), problem.rho(grid), c, cfg.pi)
  ax.contour(g1, g2, t_grid.reshape(g1.shape) - lam, levels=[0], colors='k')
  xv, yv, ov = problem.sample_mixture(3 * cfg.sizes[-1], cfg.pi, np.random.default_rng(7))
  slope = scod.tune_slope(plug.max_prob(xv), plug.rho(xv), ov, (plug.predict(xv) == yv) & ~ov,
                          c, b)
  s_test = scod.plugin_score(plug.max_prob(x), plug.rho(x), c, slope)
  thr = np.sort(s_test)[::-1][int(b * len(s_test))]
  s_grid = scod.plugin_score(plug.max_prob(grid), plug.rho(grid), c, slope)
  ax.contour(g1, g2, s_grid.reshape(g1.shape) - thr, levels=[0], colors='m', linestyles='--')
  ax.plot([], [], 'k-', label='Bayes boundary')
  ax.plot([], [], 'm--', label=f'plug-in (n={cfg.sizes[-1]})')
  ax.set_title(f'abstain region at c_fn={c}, budget={b}')
  ax.legend(fontsize=7, markerscale=4)
  ax = axes[1]
  u, v = 1 - m_true[show], np.minimum(rho_true[show], 6)
  ax.scatter(u[~out[show]], v[~out[show]], s=2, c='tab:blue', alpha=0.4, label='inliers')
  ax.scatter(u[out[show]], v[out[show]], s=2, c='tab:red', alpha=0.4, label='outliers')
  a_u, a_v, a_c = scod.half_plane(lam, c, cfg.pi)
  uu = np.linspace(0, 0.5, 50)
  ax.plot(uu, (a_c - a_u * uu) / a_v, 'k-', label='Bayes half-plane boundary')
  ax.set_ylim(0, 6)
  ax.set_xlabel('1 - max P_in(y|x)')
  ax.set_ylabel('rho(x) (clipped at 6)')
  ax.set_title('the Bayes rule is a half-plane in (1 - m, rho)')
  ax.legend(fontsize=7, markerscale=4)
  ax = axes[2]
  n_max = cfg.sizes[-1]
  for name, style in (('bayes', 'k-'), ('msp', 'C0-'), ('ood', 'C1-'), ('plugin', 'm--'),
                      ('plugin_corrected_sigmoid', 'C2:')):
    ax.plot(budgets, np.mean([r[n_max]['risk'][c][name] for r in rows], 0), style, label=name)
  ax.set_xlabel('budget (abstention rate)')
  ax.set_ylabel('SCOD risk')
  ax.set_title(f'Gaussians, n={n_max}, c_fn={c}')
  ax.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=80)


def run(config, workdir):
  """The closed-form check: each Gaussian seed's risks, the numbers, the claim's rows
  (claims.gaussian_checks) and the figure."""
  cfg = config.gaussians
  rows, example = [], None
  for seed in range(cfg.seeds):
    r, example = _gaussian_seed(cfg, config.c_fns, config.budgets, seed)
    rows.append(r)
  numbers = {}
  for c in config.c_fns:
    numbers[f'c_fn={c}'] = {
        n: {k: round(float(np.mean([np.mean(r[n]['risk'][c][k]) for r in rows])), 4)
            for k in rows[0][n]['risk'][c]} for n in cfg.sizes}
  numbers['pi_mix_hat_corrected_sigmoid'] = {
      n: round(float(np.mean([r[n]['pi_mix_hat'] for r in rows])), 3) for n in cfg.sizes}
  figure = None
  if jax.process_index() == 0:
    figure = _plot_gaussians(cfg, config.budgets, rows, example,
                             os.path.join(workdir, 'gaussians.png'))
  return numbers, claims.gaussian_checks(config, rows), figure
