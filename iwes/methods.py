"""A selection method by name and parameters, and the batch it picks in one round.

    method = methods.Method.from_config('iwes_dis_w5', {'kind': 'iwes', 'sampling': 'dis',
                                                        'p_min': 0.05, 'w_max': 5.0})
    picked = methods.select(method, view, k, rng)   # Picked(indices, weights, log)

`view` is what a round knows: the pool's labels, both models' probabilities on the pool, the
first model's penultimate features (only methods in NEEDS_FEATURES ask for them), the selected
mask. IWeS kinds keep each example with probability p and weight min(1/p, w_max); every other
method's examples get weight 1.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from iwes import baselines
from iwes import checks
from iwes import sampling

KINDS = ('uniform', 'margin', 'entropy', 'least_confidence', 'kcenter', 'badge',
         'cluster_margin', 'iwes')
NEEDS_FEATURES = ('kcenter', 'badge', 'cluster_margin')


@dataclasses.dataclass(frozen=True)
class Method:
  """One selection method; fields other than `kind`'s own are ignored by it (and checked)."""
  name: str
  kind: str
  sampling: str = 'dis'         # iwes: dis | free | ent
  p_min: float = 0.05           # iwes: probabilities clipped to [p_min, 1]
  w_max: float = math.inf       # iwes: weights min(1/p, w_max)
  normalise: bool = False       # iwes: weights rescaled to mean 1 within each batch
  weighted: bool = True         # iwes: False is the no-weight ablation (same sampling, weight 1)
  num_clusters: int = 50        # cluster_margin: HAC clusters of the pool (made once)
  ratio: float = 10.0           # cluster_margin: smallest-margin candidates per selected example
  cluster_points: int = 2000    # cluster_margin: HAC on a sample this large, the rest joins it

  def __post_init__(self):
    if self.kind not in KINDS:
      raise checks.IwesInputError(f'Method {self.name!r}: unknown kind {self.kind!r}; use one of '
                                  f'{KINDS}.')
    if self.kind == 'iwes':
      if self.sampling not in sampling.KINDS:
        raise checks.IwesInputError(f'Method {self.name!r}: unknown sampling {self.sampling!r}; '
                                    f'use one of {sampling.KINDS}.')
      checks.check_p_min(self.p_min)
      checks.check_w_max(self.w_max)
    if self.kind == 'cluster_margin':
      checks.check_count(self.num_clusters, f'{self.name}.num_clusters')
      checks.check_count(self.cluster_points, f'{self.name}.cluster_points', minimum=2)
      if not self.ratio >= 1:
        raise checks.IwesInputError(f'Method {self.name!r}: ratio={self.ratio!r}, expected >= 1.')

  @classmethod
  def from_config(cls, name: str, cfg) -> 'Method':
    fields = dict(cfg.to_dict() if hasattr(cfg, 'to_dict') else cfg)
    known = {f.name for f in dataclasses.fields(cls)} - {'name'}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise checks.IwesInputError(f'Method {name!r}: unknown fields {unknown}; fields: '
                                  f'{sorted(known)}.')
    if 'kind' not in fields:
      raise checks.IwesInputError(f'Method {name!r} has no kind; use one of {KINDS}.')
    return cls(name=name, **fields)

  @property
  def uses_labels(self) -> bool:
    """Whether it reads the pool's labels (only IWeS-dis: subset selection, not active
    learning)."""
    return self.kind == 'iwes' and self.sampling == 'dis'


def models_read(method: Method) -> tuple[int, ...]:
  """Which of the run's models (0: f, 1: g) the method reads the pool outputs of."""
  if method.kind == 'uniform':
    return ()
  if method.kind == 'iwes' and method.sampling in ('dis', 'free'):
    return (0, 1)
  return (0,)


@dataclasses.dataclass
class RoundView:
  """What a round knows about the pool (N examples)."""
  labels: np.ndarray                    # (N,) int
  probs_f: np.ndarray | None           # (N, C) of the first model (None: not read)
  probs_g: np.ndarray | None           # (N, C) of the second model (None: not read)
  selected: np.ndarray                  # (N,) bool
  features_f: Callable[[], np.ndarray] | None = None  # (N, D) on demand
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # kept across rounds


@dataclasses.dataclass
class Picked:
  indices: np.ndarray
  weights: np.ndarray
  log: dict[str, float]


def _weight_log(weights: np.ndarray, w_max: float, raw: np.ndarray | None) -> dict[str, float]:
  q = np.quantile(weights, [0.1, 0.5, 0.9])
  out = {'weight_mean': float(weights.mean()), 'weight_max': float(weights.max()),
         'weight_p10': float(q[0]), 'weight_p50': float(q[1]), 'weight_p90': float(q[2]),
         'batch_ess_fraction': sampling.effective_sample_size(weights) / len(weights)}
  if raw is not None:  # the share of kept examples whose 1/p was cut down to w_max
    out['capped_fraction'] = float(np.mean(raw > w_max)) if math.isfinite(w_max) else 0.0
  return out


def select(method: Method, view: RoundView, k: int, rng: np.random.Generator) -> Picked:
  """The round's k pool indices (from the available ones) and their weights."""
  available = ~view.selected
  kind = method.kind
  if kind == 'iwes':
    p = sampling.probability(method.sampling, view.probs_f, view.probs_g, view.labels,
                             p_min=method.p_min)
    draw = sampling.sample_batch(p, k, rng, available=available, w_max=method.w_max,
                                 normalise=method.normalise, weighted=method.weighted)
    log = {'acceptance_rate': draw.acceptance_rate, 'examined': draw.examined,
           'passes': draw.passes, 'p_mean_available': float(p[available].mean()),
           'p_mean_kept': float(draw.p.mean())}
    if view.probs_g is not None:  # how often f and g predict the same class on the pool
      log['agreement'] = float(np.mean(view.probs_f[available].argmax(1)
                                        == view.probs_g[available].argmax(1)))
    log.update(_weight_log(draw.weights, method.w_max, 1.0 / draw.p))
    return Picked(draw.indices, draw.weights, log)
  if kind == 'uniform':
    idx = baselines.uniform(k, available, rng)
  elif kind == 'margin':
    idx = baselines.top_k(baselines.margin_score(view.probs_f), k, available, largest=False)
  elif kind == 'entropy':
    idx = baselines.top_k(baselines.entropy_score(view.probs_f), k, available)
  elif kind == 'least_confidence':
    idx = baselines.top_k(baselines.least_confidence_score(view.probs_f), k, available)
  elif kind == 'kcenter':
    idx = baselines.k_center_greedy(view.features_f(), view.selected, k, available, rng)
  elif kind == 'badge':
    idx = baselines.badge_from_outputs(view.probs_f, view.features_f(), k, available, rng)
  else:  # cluster_margin: the pool clustered once, with the first round's model
    if 'clusters' not in view.extra:
      view.extra['clusters'] = baselines.hac_clusters(view.features_f(), method.num_clusters,
                                                      method.cluster_points, rng)
    idx = baselines.cluster_margin(baselines.margin_score(view.probs_f), view.extra['clusters'],
                                   k, available, rng, ratio=method.ratio)
  return Picked(np.asarray(idx, np.int64), np.ones(len(idx)), {})
