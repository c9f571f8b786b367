"""The experiment: the closed-form Gaussian check, then mnist1d and digits split by class, each
seed training an inlier classifier, an Outlier Exposure model and two binary classifiers (inliers
vs auxiliary outliers, inliers vs a wild mixture) with the common loop; every method's SCOD risk
at each budget and c_fn on the test mixture; the checks fixed in the config; figures.

    python -m abstain.main --config=configs/abstain/mnist1d.py:cpu --workdir=/tmp/abstain

Trained models are checkpointed under workdir/models/..., so a rerun reuses them.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import special

from abstain import claims
from abstain import estimators
from abstain import figures as figures_lib
from abstain import gaussian_study
from abstain import metrics
from abstain import scod
from abstain import scores
from abstain import splits as splits_lib
from common import classifier
from common import config_lib
from common import models
from common import report
from common import train as train_lib
from common.data import loader
from common.data import pipeline

CLAIM = ('The max softmax probability is optimal for learning to reject but not for selective '
         'classification with OOD detection (SCOD); the Bayes-optimal SCOD rule combines '
         'max P_in(y|x) with the density ratio p_out/p_in, a half-plane in the two, and plug-in '
         'estimates of both, thresholded at the abstention budget, are competitive with or '
         'better than the baselines of both literatures: never worse than the better of MSP and '
         'the OOD score, clearly better when an unlabelled wild mixture holds the test outliers.')
SETTINGS = ('auxiliary', 'wild')
BASE_METHODS = ('msp', 'max_logit', 'energy', 'odin', 'mahalanobis', 'outlier_exposure')
TUNED = {'auxiliary': ('linear_double', 'plugin', 'plugin_black_box'),
         'wild': ('linear_double', 'plugin', 'plugin_corrected_sigmoid')}

# ------------------------------------------------------------------------------------------------
# The config.
# ------------------------------------------------------------------------------------------------
def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the dotted field) for a config that cannot run or would run
  wrongly; reads only the config (no data, no compile, no files). Called at the top of `run` and
  by common.app before anything runs."""
  config_lib.check_loop(config.classifier, 'classifier')
  config_lib.whole(config, 'classifier.seed', 0)
  for name in config.models:
    _check_model(config, f'models.{name}')
  for name in config_lib.choice_tuple(config, 'dataset_names', tuple(config.datasets)):
    _check_dataset(config, name)
    pair = config_lib.field(config, f'dataset_models.{name}')
    if isinstance(pair, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise config_lib.ConfigError(f'dataset_models.{name}={pair!r}: expected (the inlier '
                                   'classifier and OE model, the binary classifiers), two names '
                                   f'from config.models ({sorted(config.models)}).')
    for model in pair:
      if model not in config.models:
        raise config_lib.ConfigError(
            f'dataset_models.{name} names {model!r}{config_lib.closest(model, config.models)}, '
            f'which is not in config.models ({sorted(config.models)}).')
  config_lib.whole(config, 'seeds', 1)
  config_lib.real(config, 'wild_pi', 0.0, 1.0, open_low=True, open_high=True)
  config_lib.real_tuple(config, 'c_fns', 0.0, 1.0)
  config_lib.real_tuple(config, 'budgets', 0.0, 1.0)
  config_lib.real(config, 'oe_weight', 0.0)
  config_lib.real(config, 'odin.temperature', 0.0, open_low=True)
  config_lib.real(config, 'odin.epsilon', 0.0)
  config_lib.whole_tuple(config, 'gaussians.sizes', 1)
  config_lib.whole(config, 'gaussians.seeds', 1)
  config_lib.whole(config, 'gaussians.test_size', 1)
  for field in ('pi', 'pi_mix'):
    config_lib.real(config, f'gaussians.{field}', 0.0, 1.0, open_low=True, open_high=True)
  config_lib.real(config, 'gaussians.figure_c_fn', 0.0, 1.0)
  config_lib.real(config, 'gaussians.figure_budget', 0.0, 1.0, open_high=True)
  for field in ('noise_margin', 'bayes_margin'):
    config_lib.real(config, f'checks.{field}', 0.0)
  config_lib.real(config, 'checks.clear_gain')
  config_lib.real(config, 'checks.bayes_gap_growth')


def _check_model(config, name: str) -> None:
  """One trained model's entry: its steps, learning rate and model config."""
  classifier.check_study_model(config, name)


def _check_dataset(config, name: str) -> None:
  """The split by class: disjoint class sets, fractions that leave something to train on."""
  prefix = f'datasets.{name}'
  ds = config_lib.field(config, prefix)
  if not isinstance(ds.dataset, str) or not ds.dataset:
    raise config_lib.ConfigError(f'{prefix}.dataset={ds.dataset!r}: expected a dataset name.')
  classes = {kind: set(config_lib.whole_tuple(config, f'{prefix}.{kind}', 0))
             for kind in ('inlier_classes', 'aux_classes', 'test_outlier_classes')}
  if len(classes['inlier_classes']) < 2:
    raise config_lib.ConfigError(f'{prefix}.inlier_classes={tuple(ds.inlier_classes)!r}: '
                                 'expected at least two classes to classify.')
  pairs = [('inlier_classes', 'aux_classes')]
  if not ds.outlier_dataset:  # test outliers from the same dataset: their classes are its own
    pairs += [('inlier_classes', 'test_outlier_classes'), ('aux_classes', 'test_outlier_classes')]
  for a, b in pairs:
    if classes[a] & classes[b]:
      raise config_lib.ConfigError(f'{prefix}.{a} and {prefix}.{b} share classes '
                                   f'{sorted(classes[a] & classes[b])}: they must be disjoint.')
  for field in ('val_fraction', 'wild_fraction', 'aux_val_fraction', 'wild_val_fraction'):
    config_lib.real(config, f'{prefix}.{field}', 0.0, 1.0, open_low=True, open_high=True)
  if ds.val_fraction + ds.wild_fraction >= 1:
    raise config_lib.ConfigError(f'{prefix}.val_fraction + wild_fraction = '
                                 f'{ds.val_fraction + ds.wild_fraction:g}: must be below 1 '
                                 '(the rest of the inliers trains the models).')


def model_seed(config, seed: int) -> int:
  """The seed of the models of run seed `seed` (0 .. seeds - 1): config.classifier.seed shifts
  every run's models (initialisation, batch order); the split by class follows the run seed."""
  return int(config.classifier.seed) + seed


# ------------------------------------------------------------------------------------------------
# Models.
# ------------------------------------------------------------------------------------------------
def _train(config, model_name, arrays, num_classes, workdir, seed) -> classifier.Classifier:
  mcfg = classifier.study_config(config.classifier, config.models[model_name],
                                 model_seed(config, seed))
  data = {'inputs': arrays['inputs'], 'label': arrays['label']}
  return classifier.train_classifier(mcfg, workdir, train_arrays=data, eval_arrays={},
                                     num_classes=num_classes)


def _binary(negatives, positives) -> dict[str, np.ndarray]:
  return {'inputs': np.concatenate([negatives['inputs'], positives['inputs']]),
          'label': np.concatenate([np.zeros(len(negatives['label']), np.int32),
                                   np.ones(len(positives['label']), np.int32)])}


def _train_outlier_exposure(config, model_name, train_in, aux, num_classes, workdir, seed):
  """The inlier classifier trained with Outlier Exposure's loss through the common loop."""
  mcfg = classifier.study_config(config.classifier, config.models[model_name],
                                 model_seed(config, seed))
  model = models.build(mcfg.model, num_classes)
  arrays = {'inputs': np.concatenate([train_in['inputs'], aux['inputs']]),
            'label': np.concatenate([train_in['label'], aux['label']]).astype(np.int32),
            'is_outlier': np.concatenate([np.zeros(len(train_in['label'])),
                                          np.ones(len(aux['label']))]).astype(np.float32)}
  weight = float(config.oe_weight)

  def loss_fn(params, model_state, batch, rng):
    logits, new_state = classifier.apply_in_training(model, params, model_state,
                                                     batch['inputs'], rng)
    loss = scores.outlier_exposure_loss(logits, batch['label'], batch['is_outlier'], weight)
    inl = 1 - batch['is_outlier']
    acc = jnp.sum(inl * (jnp.argmax(logits, -1) == batch['label'])) / jnp.maximum(inl.sum(), 1)
    return loss, ({'inlier_accuracy': acc}, new_state)

  sample = jnp.zeros((1,) + arrays['inputs'].shape[1:], jnp.float32)
  result = train_lib.train(
      mcfg, workdir, init_fn=lambda rng: model.init(rng, sample, train=False), loss_fn=loss_fn,
      train_iter=pipeline.BatchIterator(arrays, mcfg.batch_size, seed=mcfg.seed),
      identity={'loss': 'outlier_exposure', 'oe_weight': weight})
  return classifier.Classifier(model=model, result=result, num_classes=num_classes)


def _load(config, name):
  ds = config.datasets[name]
  data = loader.load_splits(ds, ('train', 'test'), data_dir=config.get('data_dir'))
  other = {}
  if ds.outlier_dataset:
    spec = ml_collections.ConfigDict({'dataset': ds.outlier_dataset, 'train_split': 'train',
                                      'test_split': 'test'})
    out = loader.load_splits(spec, ('train', 'test'), data_dir=config.get('data_dir'))
    other = {'outlier_train': out['train'], 'outlier_test': out['test']}
  return data, other


# ------------------------------------------------------------------------------------------------
# One dataset and seed: every method's scores, then the metrics.
# ------------------------------------------------------------------------------------------------
def _softmax(logits):
  return special.softmax(np.asarray(logits, np.float64), axis=1)


def _standardise(ref):
  mean, std = float(np.mean(ref)), float(np.std(ref)) or 1.0
  return lambda s: (s - mean) / std


def outputs(config, name, seed, workdir) -> dict[str, Any]:
  """Trains (or reuses) the seed's four models; returns every set's raw outputs."""
  ds = config.datasets[name]
  data, other = _load(config, name)
  parts = splits_lib.build(data['train'], data['test'], ds, config.wild_pi, seed, **other)
  clf_name, ood_name = config.dataset_models[name]
  base = os.path.join(workdir, 'models', name, f'seed{seed}')
  if config.classifier.seed:  # other models: their own checkpoints, not the default run's
    base += f'_classifier_seed{config.classifier.seed}'
  k = parts['num_classes']
  clf = _train(config, clf_name, parts['train_in'], k, f'{base}/classifier', seed)
  aux_net = _train(config, ood_name, _binary(parts['train_in'], parts['aux_train']), 2,
                   f'{base}/inlier_vs_auxiliary', seed)
  wild_net = _train(config, ood_name, _binary(parts['train_in'], parts['wild_train']), 2,
                    f'{base}/inlier_vs_wild', seed)
  oe = _train_outlier_exposure(config, clf_name, parts['train_in'], parts['aux_train'], k,
                               f'{base}/outlier_exposure', seed)
  res = {'parts': parts, 'sets': {},
         'aux_share': len(parts['aux_train']['label']) / (len(parts['train_in']['label'])
                                                          + len(parts['aux_train']['label'])),
         'wild_share': len(parts['wild_train']['label']) / (len(parts['train_in']['label'])
                                                            + len(parts['wild_train']['label']))}
  _, train_features = clf.logits_and_features(parts['train_in']['inputs'])
  res['mahalanobis'] = scores.Mahalanobis.fit(train_features, parts['train_in']['label'])
  for part in ('val_in', 'aux_val', 'wild_val', 'test'):
    inputs = parts[part]['inputs']
    logits, features = clf.logits_and_features(inputs)
    aux_logits, wild_logits = aux_net.logits(inputs), wild_net.logits(inputs)
    res['sets'][part] = {
        'logits': logits, 'features': features, 'oe_probs': _softmax(oe.logits(inputs)),
        'aux_logit': aux_logits[:, 1] - aux_logits[:, 0],
        'wild_logit': wild_logits[:, 1] - wild_logits[:, 0],
        'label': parts[part]['label'], 'is_outlier': parts[part]['is_outlier']}
  apply = lambda x: clf.model.apply(clf.variables, x, train=False)
  res['sets']['test']['odin'] = scores.odin(apply, parts['test']['inputs'],
                                            config.odin.temperature, config.odin.epsilon)
  return res


# The binary classifier's logit and the density-ratio estimate each setting's rules use.
LOGIT_KEY = {'auxiliary': 'aux_logit', 'wild': 'wild_logit'}
RHO_KEY = {'auxiliary': 'rho_aux', 'wild': 'rho_wild'}
# Angles of linear_double tried in the wild setting (tuned on the unlabelled mixture's risk).
WILD_ANGLES = np.linspace(0, np.pi / 2, 31)


def per_example_quantities(res, temperature: float):
  """For every set (val_in, aux_val, wild_val, test), what the rules are built from; and the
  corrected-sigmoid fit.

  m_raw, m: max softmax probability, raw and temperature-scaled; correct: the classifier is right
  on an inlier; energy: the free energy; rho_aux, rho_wild, rho_energy, rho_csig: the density
  ratio p_out / p_in estimated from the inlier-vs-auxiliary classifier, the inlier-vs-wild one
  with the mixture correction, the energy through a fitted transform, the corrected sigmoid.
  """
  sets, parts = res['sets'], res['parts']
  quantities = {}
  for part, s in sets.items():
    probs = _softmax(s['logits'])
    quantities[part] = {
        'm_raw': probs.max(1), 'm': estimators.max_prob(s['logits'], temperature),
        'correct': (probs.argmax(1) == s['label']) & ~s['is_outlier'],
        'is_outlier': s['is_outlier'],
        'rho_aux': estimators.rho_from_binary(special.expit(s['aux_logit']), res['aux_share']),
        'rho_wild': estimators.rho_from_mixture(special.expit(s['wild_logit']), parts['wild_pi'],
                                                res['wild_share']),
        'energy': scores.energy(s['logits'])}
  transform = estimators.fit_score_transform(quantities['val_in']['energy'],
                                             quantities['aux_val']['energy'])
  corrected = estimators.fit_corrected_sigmoid(sets['val_in']['wild_logit'],
                                               sets['wild_val']['wild_logit'])
  for part, s in sets.items():
    quantities[part]['rho_energy'] = transform.rho(quantities[part]['energy'])
    quantities[part]['rho_csig'] = corrected.rho(s['wild_logit'])
  return quantities, corrected


def baseline_scores(res, test) -> dict[str, np.ndarray]:
  """The test scores of the baselines that use neither outlier classifier (`test`: the test
  set's per_example_quantities)."""
  outputs_ = res['sets']['test']
  return {'msp': 1 - test['m_raw'], 'max_logit': scores.max_logit(outputs_['logits']),
          'energy': test['energy'], 'odin': outputs_['odin'],
          'mahalanobis': res['mahalanobis'].score(outputs_['features']),
          'outlier_exposure': scores.msp(outputs_['oe_probs'])}


def single_scores(setting: str, baselines, quantities, sets) -> dict[str, np.ndarray]:
  """Test scores that need no tuning per budget: the baselines, the setting's ratio estimate
  alone ('ood'), SIRC on it, and in the wild setting the corrected sigmoid's ratio."""
  logit, test = LOGIT_KEY[setting], quantities['test']
  single = dict(baselines, ood=test[RHO_KEY[setting]])
  sirc = scores.Sirc.fit(-sets['val_in'][logit])
  single['sirc'] = sirc.score(test['m_raw'], -sets['test'][logit])
  if setting == 'wild':
    single['ood_corrected_sigmoid'] = test['rho_csig']
  return single


def _linear_double_inputs(quantities, sets, logit: str):
  """inputs(m_raw, logit values) -> linear_double's two inputs (1 - m_raw and the binary
  classifier's logit), each standardised on the held-out inliers."""
  scale_msp = _standardise(1 - quantities['val_in']['m_raw'])
  scale_logit = _standardise(sets['val_in'][logit])
  return lambda m_raw, values: (scale_msp(1 - m_raw), scale_logit(values))


def auxiliary_tuned_scores(quantities, sets):
  """(c_fn, budget) -> test scores of linear_double and the plug-ins, each tuned at that cost
  and budget on the labelled validation mixture (held-out inliers + auxiliary outliers)."""
  val = {k: np.concatenate([quantities['val_in'][k], quantities['aux_val'][k]])
         for k in quantities['val_in']}
  val_logit = np.concatenate([sets['val_in']['aux_logit'], sets['aux_val']['aux_logit']])
  inputs = _linear_double_inputs(quantities, sets, 'aux_logit')
  test = quantities['test']

  def at(c, b):
    angle = scores.tune_linear_double(*inputs(val['m_raw'], val_logit), val['is_outlier'],
                                      val['correct'], c, b)
    slope = scod.tune_slope(val['m'], val['rho_aux'], val['is_outlier'], val['correct'], c, b)
    slope_black_box = scod.tune_slope(val['m'], val['rho_energy'], val['is_outlier'],
                                      val['correct'], c, b)
    return {'linear_double': scores.linear_double(
                *inputs(test['m_raw'], sets['test']['aux_logit']), angle),
            'plugin': scod.plugin_score(test['m'], test['rho_aux'], c, slope),
            'plugin_black_box': scod.plugin_score(test['m'], test['rho_energy'], c,
                                                  slope_black_box)}
  return at


def wild_tuned_scores(quantities, sets, wild_pi: float, corrected_pi_mix: float):
  """(c_fn, budget) -> test scores of linear_double and the plug-ins, each tuned at that cost
  and budget without outlier labels: held-out inliers against the unlabelled wild mixture (the
  mixture risk, at the known outlier share or the corrected sigmoid's estimate of it)."""
  inliers, mixture, test = quantities['val_in'], quantities['wild_val'], quantities['test']
  inputs = _linear_double_inputs(quantities, sets, 'wild_logit')
  linear_double = lambda part, angle: scores.linear_double(
      *inputs(quantities[part]['m_raw'], sets[part]['wild_logit']), angle)

  def at(c, b):
    risks = [scod.mixture_risk_at_budget(linear_double('val_in', a), inliers['correct'],
                                         linear_double('wild_val', a), c, b, wild_pi)
             for a in WILD_ANGLES]
    angle = float(WILD_ANGLES[int(np.argmin(risks))])
    slope = scod.tune_slope_unlabelled(inliers['m'], inliers['rho_wild'], inliers['correct'],
                                       mixture['m'], mixture['rho_wild'], c, b, wild_pi)
    slope_corrected = scod.tune_slope_unlabelled(
        inliers['m'], inliers['rho_csig'], inliers['correct'], mixture['m'], mixture['rho_csig'],
        c, b, corrected_pi_mix)
    return {'linear_double': linear_double('test', angle),
            'plugin': scod.plugin_score(test['m'], test['rho_wild'], c, slope),
            'plugin_corrected_sigmoid': scod.plugin_score(test['m'], test['rho_csig'], c,
                                                          slope_corrected)}
  return at


def risks_by_cost(config, setting: str, single, tuned_at, test) -> dict[float, dict[str, list]]:
  """{c_fn: {method: [SCOD risk on the test mixture at each budget]}}: the single scores
  thresholded at each budget, the tuned methods tuned anew at each (c_fn, budget)."""
  risks = {}
  for c in config.c_fns:
    risks[c] = {m: metrics.risk_at_budgets(score, test['is_outlier'], test['correct'], c,
                                           config.budgets).tolist()
                for m, score in single.items()}
    tuned = [tuned_at(c, b) for b in config.budgets]
    for m in TUNED[setting]:
      risks[c][m] = [scod.scod_risk_at_budget(t[m], test['is_outlier'], test['correct'], c, b)
                     for t, b in zip(tuned, config.budgets)]
  return risks


def budget_free_metrics(single, test) -> dict[str, Any]:
  """The OOD and selective-classification metrics of the single scores (no budget, no c_fn)."""
  out, correct = test['is_outlier'], test['correct']
  ood_order = [m for m in single if m != 'msp'] + ['msp']
  joint = {m: metrics.joint_risk_at_tpr(single[m], out, correct) for m in single}
  return {
      'auroc': {m: metrics.auroc(single[m], out) for m in ood_order},
      'fpr_at_95': {m: metrics.fpr_at_tpr(single[m], out) for m in ood_order},
      'aurc': {m: metrics.aurc(single[m], out, correct) for m in single},
      'selective_accuracy_at_0.2': {
          m: metrics.selective_accuracy(single[m], out, correct, 0.2) for m in single},
      'joint_risk_at_tpr_0.95': {m: v['joint_risk'] for m, v in joint.items()},
      'curves': {m: metrics.risk_coverage_curve(single[m], out, correct)
                 for m in ('msp', 'ood', 'energy', 'mahalanobis', 'outlier_exposure')}}


def evaluate(config, res) -> dict[str, Any]:
  """Every method's metrics on the test mixture for one seed (both settings)."""
  sets, wild_pi = res['sets'], res['parts']['wild_pi']
  temperature = estimators.fit_temperature(sets['val_in']['logits'], sets['val_in']['label'])
  quantities, corrected = per_example_quantities(res, temperature)
  test = quantities['test']
  tuners = {'auxiliary': auxiliary_tuned_scores(quantities, sets),
            'wild': wild_tuned_scores(quantities, sets, wild_pi, corrected.pi_mix)}
  baselines = baseline_scores(res, test)
  out = {'accuracy': float(test['correct'][~test['is_outlier']].mean()),
         'temperature': temperature, 'wild_pi': wild_pi,
         'pi_mix_hat_corrected_sigmoid': corrected.pi_mix,
         'test_pi': float(test['is_outlier'].mean()), 'settings': {}}
  for setting in SETTINGS:
    single = single_scores(setting, baselines, quantities, sets)
    out['settings'][setting] = {
        'risk': risks_by_cost(config, setting, single, tuners[setting], test),
        **budget_free_metrics(single, test)}
  return out


# ------------------------------------------------------------------------------------------------
# Aggregation, checks, figures.
# ------------------------------------------------------------------------------------------------
def _mean_dict(rows, key):
  return {m: round(float(np.mean([r[key][m] for r in rows])), 4) for m in rows[0][key]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  check_config(config)
  for name in config.dataset_names:  # read (and cached) first: unprepared data stops the run
    _load(config, name)               # here, with its `tfds build` command, before any compute
  os.makedirs(workdir, exist_ok=True)
  numbers, figures = {}, []
  numbers['gaussians'], check_list, fig = gaussian_study.run(config, workdir)
  figures.append(fig)
  checks_cfg = config.checks
  for name in config.dataset_names:
    rows = [evaluate(config, outputs(config, name, seed, workdir)) for seed in range(config.seeds)]
    per_setting = {s: [r['settings'][s] for r in rows] for s in SETTINGS}
    numbers[name] = {k: round(float(np.mean([r[k] for r in rows])), 4)
                     for k in ('accuracy', 'temperature', 'wild_pi', 'test_pi',
                               'pi_mix_hat_corrected_sigmoid')}
    for setting, srows in per_setting.items():
      block = {}
      for c in config.c_fns:
        mean_risk = {m: float(np.mean([np.mean(r['risk'][c][m]) for r in srows]))
                     for m in srows[0]['risk'][c]}
        diffs = claims.risk_differences(srows, c)
        block[f'c_fn={c}'] = {
            'risk_mean_over_budgets': {m: round(v, 4) for m, v in mean_risk.items()},
            'risk_per_budget': {m: np.round(np.mean([r['risk'][c][m] for r in srows], 0),
                                            4).tolist() for m in mean_risk},
            'differences_per_seed': {k: [round(v, 4) for v in vs] for k, vs in diffs.items()}}
        rows_checks = claims.setting_checks(checks_cfg, name, setting, c, diffs)
        check_list.extend(rows_checks)
        logging.info('%s/%s/c_fn=%s: %s', name, setting, c,
                     [(k['name'], k['value'], k['interval'], k['state']) for k in rows_checks])
      for key in ('auroc', 'fpr_at_95', 'aurc', 'selective_accuracy_at_0.2',
                  'joint_risk_at_tpr_0.95'):
        block[key] = _mean_dict(srows, key)
      numbers[name][setting] = block
    if jax.process_index() == 0:
      figures.append(figures_lib.plot_risks(name, config, per_setting, SETTINGS,
                                 os.path.join(workdir, f'risk_{name}.png')))
      figures.append(figures_lib.plot_coverage(name, per_setting, SETTINGS,
                                    os.path.join(workdir, f'risk_coverage_{name}.png')))
  notes = (f'Means over {config.seeds} seeds (Gaussians: {config.gaussians.seeds}); risks are '
           f'means over budgets {tuple(config.budgets)}. Inliers: classes 0-5; auxiliary '
           'outliers 6-7 (labelled); test outliers 8-9; wild mixture: held-out inliers + other '
           f'8-9 examples, outlier share {config.wild_pi}. "plugin" is (1 - c_fn)(1 - m_hat) + '
           'slope rho_hat with the slope tuned per budget on validation (auxiliary: labelled '
           'inliers + auxiliary outliers; wild: inliers + the unlabelled mixture via the '
           'mixture risk); rho_hat from the inlier-vs-auxiliary classifier (auxiliary) or the '
           'inlier-vs-wild classifier with the mixture correction (wild). "ood" ranks by that '
           'rho_hat alone. Checks fixed in config.checks before the run, each a per-seed paired '
           'difference decided by its 95% Student-t interval over seeds: plug-in minus MSP and '
           f'plug-in minus ood, each <= {checks_cfg.noise_margin}; wild: MSP minus plug-in >= '
           f'{checks_cfg.clear_gain}; Gaussians: plug-in minus Bayes <= '
           f'{checks_cfg.bayes_margin} at the largest n, and that gap minus the gap at the '
           f'smallest n <= {checks_cfg.bayes_gap_growth}.')
  rows, methods = [], None
  for name in config.dataset_names:
    for setting, per_c in numbers[name].items():
      if not isinstance(per_c, dict):
        continue
      for c_fn, entry in per_c.items():
        if not c_fn.startswith('c_fn='):
          continue
        risks = entry['risk_mean_over_budgets']
        methods = methods or list(risks)
        rows.append([f'{name} / {setting}', c_fn[5:]] + [risks.get(m) for m in methods])
  tables = [report.table(
      f'SCOD risk (lower is better), mean over budgets {tuple(config.budgets)}',
      ['dataset / setting', 'c_fn'] + (methods or []), rows)] if rows else []
  return report.make_summary(
      name='abstain', title='abstain: plug-in estimators for SCOD', claim=CLAIM, numbers=numbers,
      checks=check_list, tables=tables, workdir=workdir, figures=figures, notes=notes,
      config=config)
