"""The pause-token study: pretrain a standard and a pause model on the same rows, fine-tune each
with and without pauses on tasks that need computation before the first answer token, and decode
the answers with a KV cache. The pretraining rows are a host array or, for c4, streamed batch
by batch (pause/pretraining.py).

    python -m pause.main --config=configs/pause/lm.py:cpu --workdir=/tmp/pause

Layout under workdir: pretrain/{standard,pause}/ (common.train runs), finetune/<setting>/ (one
common.ensemble run per setting, its seeds trained at once from the same pretrained weights, each
in its own data order), summary.json and figures. Settings: the four configurations, the M_ft grid
(PausePT with other M_ft), pauses prepended instead of appended (PausePT), and '.' filler tokens
instead of pauses on the standard model. Evaluation: greedy decoding after prompt + M_inf pauses
(M_inf = M_ft; on PausePT_PauseFT also every M_inf of config.minf_grid), exact match of the answer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from common import config_lib
from common import ensemble
from common import lm
from common import report
from common import train as train_lib
from common.data import loader
from common.data import text_tasks
from common.models import decoding
from common.models import positions
from common.models import transformer
from common import mesh as mesh_lib
from pause import claims
from pause import diagnosis
from pause import pausing
from pause import pretraining
from pause import tasks

CLAIM = ('Training with <pause> tokens both in pretraining and in fine-tuning (PausePT_PauseFT) '
         'beats standard training on most downstream tasks; pauses only at fine-tuning give about '
         'the baseline, and "." filler tokens give no gain; a PausePT_PauseFT model decoded '
         'without pauses (M_inf = 0) falls sharply, and a few pauses recover most of it.')
EOS = 1
NUM_SPECIAL_TOKENS = 1   # the <pause> (pausing.PAUSE_ID); the batches' ids are checked against it
DIAGNOSIS_ARMS = ('mean_init', 'frozen')
TRAIN_INPUTS = ('memory', 'stream')
MAX_MEMORY_ROWS_GIB = 16  # train_input='memory' refuses pretraining rows larger than this


@dataclasses.dataclass(frozen=True)
class FinetuneSetting:
  name: str
  pretrained: str            # 'standard' | 'pause'
  delay: pausing.Delay
  pause_init: str = 'trained'   # 'trained' (as pretrained) | 'mean_bytes' (the diagnosis arm)
  freeze_pause: bool = False    # the pause embedding kept where it starts (the diagnosis arm)


def settings(config) -> list[FinetuneSetting]:
  m = config.num_pauses
  out = [FinetuneSetting('StdPT_StdFT', 'standard', pausing.Delay(0)),
         FinetuneSetting('StdPT_PauseFT', 'standard', pausing.Delay(m)),
         FinetuneSetting('PausePT_StdFT', 'pause', pausing.Delay(0)),
         FinetuneSetting('PausePT_PauseFT', 'pause', pausing.Delay(m))]
  for mft in config.mft_grid:
    if mft not in (0, m):
      out.append(FinetuneSetting(f'PausePT_PauseFT_mft{mft}', 'pause', pausing.Delay(mft)))
  if 'prepend' in config.ablations:
    out.append(FinetuneSetting('PausePT_PrependFT', 'pause', pausing.Delay(m, 'prepend')))
  if 'filler' in config.ablations:
    out.append(FinetuneSetting('StdPT_FillerFT', 'standard',
                               pausing.Delay(m, token=pausing.FILLER_ID)))
  # The diagnosis arms (issue 31): StdPT_PauseFT with the never-trained pause embedding set to
  # the mean of the trained byte embeddings, or frozen at its initial draw.
  if 'mean_init' in config.diagnosis_arms:
    out.append(FinetuneSetting('StdPT_PauseFT_meaninit', 'standard', pausing.Delay(m),
                               pause_init='mean_bytes'))
  if 'frozen' in config.diagnosis_arms:
    out.append(FinetuneSetting('StdPT_PauseFT_frozen', 'standard', pausing.Delay(m),
                               freeze_pause=True))
  return out


def make_model(config) -> transformer.TransformerLM:
  m = config.model
  if m.encoding not in ('rope', 'nope'):
    raise config_lib.ConfigError(f"model.encoding={m.encoding!r}: use 'rope' or 'nope'.")
  encoding = positions.build(m.encoding, num_heads=m.num_heads,
                             train_length=config.pretrain_length)['encoding']
  # 'blockwise' attention (c4: no L x L scores at length 2048) is optional in the model config.
  return transformer.TransformerLM(
      vocab_size=loader.BYTE_VOCAB_SIZE, num_special_tokens=NUM_SPECIAL_TOKENS,
      num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
      encoding=encoding, attention=m.get('attention', 'naive'),
      block_size=m.get('block_size', 512))


def _whole(name: str, value, minimum: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise config_lib.ConfigError(f'{name}={value!r}: expected a whole number >= {minimum}.')
  return int(value)


def _real(name: str, value, lo: float, hi: float | None = None, *, hi_open: bool = False) -> float:
  ok = (not isinstance(value, bool) and isinstance(value, (int, float, np.number))
        and math.isfinite(value) and value >= lo)
  if ok and hi is not None:
    ok = value < hi if hi_open else value <= hi
  if not ok:
    upper = '' if hi is None else f', {hi})' if hi_open else f', {hi}]'
    raise config_lib.ConfigError(f'{name}={value!r}: expected a finite number in '
                                 f'[{lo}{upper or ", inf)"}.')
  return float(value)


def _names(name: str, values, known) -> tuple:
  if isinstance(values, str) or not isinstance(values, (tuple, list)):
    raise config_lib.ConfigError(f'{name}={values!r}: expected a tuple of names.')
  for value in values:
    if value not in known:
      hint = config_lib.closest(str(value), known)
      raise config_lib.ConfigError(f'{name}: unknown {value!r}{hint}; use some of {sorted(known)}.')
  if len(set(values)) != len(values):
    raise config_lib.ConfigError(f'{name}={tuple(values)!r} names one twice.')
  return tuple(values)


def _pauses(name: str, value, length: int) -> int:
  try:
    return pausing.check_count(value, length, name)
  except pausing.PauseError as e:
    raise config_lib.ConfigError(str(e)) from e


def check_config(config: ml_collections.ConfigDict) -> None:
  """Everything that can be wrong with the config, read from the config alone (no data, no
  compile, no files): raises ConfigError naming the dotted field. Called first by `run`, and by
  common.app and reproduce before anything runs."""
  # Pretraining data and the pause model's rows.
  if not isinstance(config.corpus, str) or not config.corpus:
    raise config_lib.ConfigError(f'corpus={config.corpus!r}: expected a dataset name.')
  fraction = _real('algorithmic_fraction', config.algorithmic_fraction, 0.0, 1.0)
  _whole('algorithmic_lines', config.algorithmic_lines, 1)
  length = _whole('pretrain_length', config.pretrain_length, 2)
  if config.train_input not in TRAIN_INPUTS:
    raise config_lib.ConfigError(f'train_input={config.train_input!r}: use one of {TRAIN_INPUTS}.')
  _whole('docs_per_row', config.docs_per_row, 1)
  if config.train_input == 'stream':
    # Streamed rows are the corpus's documents packed docs_per_row to a row: there is no host
    # text to cut algorithmic rows from, and an embedded corpus is one text, not documents.
    if fraction:
      raise config_lib.ConfigError(
          f'algorithmic_fraction={fraction:g} with train_input=\'stream\': streamed rows are '
          'documents of the corpus only; set algorithmic_fraction=0, or train_input=\'memory\' '
          'to mix algorithmic text into rows cut from a host array.')
    if config.corpus in loader.available():
      raise config_lib.ConfigError(
          f'corpus={config.corpus!r} with train_input=\'stream\': an embedded corpus is one text '
          'in memory, not documents to stream; use train_input=\'memory\', or a TFDS text '
          'dataset prepared as array_record (e.g. \'c4/en\').')
  else:
    corpus_bytes = _whole('max_corpus_bytes', config.max_corpus_bytes, 1)
    if fraction < 1 and corpus_bytes <= length + 1:
      raise config_lib.ConfigError(f'max_corpus_bytes={corpus_bytes}: not one pretraining row '
                                   f'of pretrain_length + 1 = {length + 1} tokens.')
  _real('pretrain_pause_fraction', config.pretrain_pause_fraction, 0.0, 1.0, hi_open=True)
  _pauses('M_pt (pretrain_pause_fraction x (pretrain_length + 1))',
          pausing.pretrain_pauses(length + 1, config.pretrain_pause_fraction), length + 1)
  if config.pause_positions not in ('with_replacement', 'distinct'):
    raise config_lib.ConfigError(f"pause_positions={config.pause_positions!r}: use "
                                 "'with_replacement' or 'distinct'.")
  # The model.
  m = config.model
  for field in ('num_layers', 'd_model', 'num_heads', 'mlp_dim'):
    _whole(f'model.{field}', m[field], 1)
  if m.d_model % m.num_heads:
    raise config_lib.ConfigError(f'model.d_model={m.d_model} is not divisible by '
                                 f'model.num_heads={m.num_heads}.')
  if m.encoding not in ('rope', 'nope'):
    raise config_lib.ConfigError(f"model.encoding={m.encoding!r}: use 'rope' or 'nope'.")
  # The two training loops, each named by its section.
  config_lib.check_loop(config.pretrain, 'pretrain')
  if config.pretrain.get('total_epochs') is not None or config.pretrain.total_steps is None:
    raise config_lib.ConfigError(
        f'pretrain.total_steps={config.pretrain.total_steps!r}, pretrain.total_epochs='
        f'{config.pretrain.get("total_epochs")!r}: pretraining cuts total_steps x batch_size '
        'rows, each seen once; set total_steps (not total_epochs).')
  if config.train_input == 'memory':
    rows_bytes = config.pretrain.total_steps * config.pretrain.batch_size * (length + 1) * 4
    if rows_bytes > MAX_MEMORY_ROWS_GIB * 2**30:
      raise config_lib.ConfigError(
          f"train_input='memory': pretrain.total_steps x pretrain.batch_size = "
          f'{config.pretrain.total_steps * config.pretrain.batch_size} rows of pretrain_length + '
          f'1 = {length + 1} tokens are {rows_bytes / 2**30:.0f} GiB as one int32 host array (and '
          f'each model\'s batches copy them); more than {MAX_MEMORY_ROWS_GIB} GiB: use '
          "train_input='stream' (a TFDS text corpus read batch by batch).")
  config_lib.check_loop(config.finetune, 'finetune')
  if (config.finetune.total_steps is None) == (config.finetune.get('total_epochs') is None):
    raise config_lib.ConfigError('finetune: set one of finetune.total_steps and '
                                 'finetune.total_epochs.')
  ens = config.finetune.ensemble
  num_models = _whole('finetune.ensemble.num_models', ens.num_models, 1)
  _whole('finetune.ensemble.chunk_size', ens.chunk_size, 0)
  seeds = _whole('seeds', config.seeds, 1)
  if seeds != num_models:
    raise config_lib.ConfigError(f'seeds={seeds} but finetune.ensemble.num_models={num_models}: '
                                 'one model per seed.')
  # Fine-tuning data, delays and decoding: every row and prompt must fit.
  names = _names('tasks', config.tasks, tasks.TASKS)
  if not names:
    raise config_lib.ConfigError('tasks=(): name at least one task.')
  _names('ablations', config.ablations, ('prepend', 'filler'))
  _names('diagnosis_arms', config.diagnosis_arms, DIAGNOSIS_ARMS)
  _whole('diagnosis_prompts', config.diagnosis_prompts, 1)
  train_examples = _whole('train_examples_per_task', config.train_examples_per_task, 1)
  _whole('test_examples_per_task', config.test_examples_per_task, 1)
  if config.finetune.batch_size > train_examples * len(names):
    raise config_lib.ConfigError(
        f'finetune.batch_size={config.finetune.batch_size}: more than the '
        f'{train_examples * len(names)} fine-tuning examples (train_examples_per_task x tasks).')
  width = _whole('finetune_length', config.finetune_length, 2)
  _whole('eval_batch_size', config.eval_batch_size, 1)
  m_ft = _pauses('num_pauses', config.num_pauses, width)
  if m_ft < 1:
    raise config_lib.ConfigError('num_pauses=0: the PauseFT settings need at least one pause '
                                 '(M_ft >= 1).')
  grid = [_pauses(f'mft_grid[{i}]', v, width) for i, v in enumerate(config.mft_grid)]
  minf = [_pauses(f'minf_grid[{i}]', v, width) for i, v in enumerate(config.minf_grid)]
  answer_tokens = _whole('answer_tokens', config.answer_tokens, 1)
  for name in names:
    prompt, answer = tasks.MAX_TOKENS[name]
    if answer + 1 > answer_tokens:
      raise config_lib.ConfigError(f'answer_tokens={answer_tokens}: task {name!r} has answers '
                                   f'of up to {answer} tokens + EOS = {answer + 1}.')
    most = max([m_ft, *grid])
    if prompt + most + answer + 1 > width + 1:
      raise config_lib.ConfigError(
          f'finetune_length={width}: task {name!r} needs rows of {prompt + most + answer + 1} '
          f'tokens (prompt {prompt} + {most} pauses + answer {answer} + EOS) > finetune_length '
          '+ 1; raise finetune_length or lower num_pauses / mft_grid.')
    if minf and prompt + max(minf) > width:
      raise config_lib.ConfigError(
          f'minf_grid={tuple(config.minf_grid)}: task {name!r} prompts of {prompt} tokens + '
          f'{max(minf)} pauses exceed finetune_length={width} (the decoder\'s prompt width).')
  # The checks' thresholds.
  checks = config.checks
  _real('checks.beats_margin', checks.beats_margin, 0.0)
  _real('checks.about_margin', checks.about_margin, 0.0)
  _real('checks.minf0_drop', checks.minf0_drop, 0.0)
  _real('checks.recover_share', checks.recover_share, 0.0, 1.0)
  _real('checks.floor', checks.floor, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Pretraining.
# ---------------------------------------------------------------------------------------------
def pretrain_model(config):
  """(init_fn, loss_fn) of the pretraining step, as common.train takes them: what `pretrain`
  trains and pause.memory compiles at the real batch."""
  model = make_model(config)
  sample = jnp.zeros((1, config.pretrain_length), jnp.int32)
  return (lambda rng: model.init(rng, sample)), lm.make_loss_fn(model)


def pretrain(config, kind: str, data, workdir: str) -> train_lib.TrainResult:
  """Trains the standard ('standard') or pause-pretrained ('pause') model on the same rows."""
  init_fn, loss_fn = pretrain_model(config)
  identity = {'kind': kind, 'model': config.model.to_dict(), 'pause_positions':
              config.pause_positions, 'fraction': config.pretrain_pause_fraction}
  train_iter = pretraining.pretrain_iterator(config, kind, data,
                                            num_special_tokens=NUM_SPECIAL_TOKENS)
  try:
    return train_lib.train(config.pretrain, workdir, init_fn=init_fn, loss_fn=loss_fn,
                           train_iter=train_iter, identity=identity)
  finally:
    if hasattr(train_iter, 'close'):
      train_iter.close()


# ---------------------------------------------------------------------------------------------
# Fine-tuning and evaluation.
# ---------------------------------------------------------------------------------------------
def task_data(config, split: str) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
  num = config.train_examples_per_task if split == 'train' else config.test_examples_per_task
  return {name: [(text_tasks.encode(ex['inputs']), text_tasks.encode(ex['targets']))
                 for ex in tasks.task_examples(name, split, num,
                                               train_size=config.train_examples_per_task)]
          for name in config.tasks}


def finetune(config, setting: FinetuneSetting, params, train_data, workdir: str,
             byte_ids: np.ndarray | None = None):
  model = make_model(config)
  if setting.pause_init == 'mean_bytes':
    params = diagnosis.mean_byte_init(params, byte_ids)
  pairs = [pair for name in config.tasks for pair in train_data[name]]
  batch = pausing.finetune_batch([p for p, _ in pairs], [t for _, t in pairs], setting.delay,
                                 config.finetune_length, eos_id=EOS,
                                 num_special_tokens=NUM_SPECIAL_TOKENS)
  # Every seed starts from the pretrained weights, handed over as arguments (not constants of
  # the init program: at 85M parameters those made its compilation take gigabytes); their digest
  # joins the run's identity, so a fine-tuning is never resumed from other pretrained weights.
  seeds = config.finetune.ensemble.num_models
  start = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (seeds,) + np.shape(a)), params)
  identity = {'setting': setting.name, 'delay': dataclasses.asdict(setting.delay),
              'model': config.model.to_dict(), 'pause_init': setting.pause_init,
              'freeze_pause': setting.freeze_pause}
  loss_fn = lm.make_loss_fn(model, per_example=True)
  if setting.freeze_pause:
    loss_fn = diagnosis.freeze_pause(loss_fn)
  return ensemble.train_ensemble(
      config.finetune, workdir, init_fn=None, loss_fn=loss_fn, arrays=batch,
      init_params=start, identity=identity)


def exact_match(config, model, params, test_pairs, num_pauses: int, position: str = 'append',
                token: int = pausing.PAUSE_ID) -> float:
  """Greedy KV-cache decoding after prompt + M_inf delay tokens; the answer (up to EOS) must
  equal the target exactly."""
  width = config.finetune_length
  answer_len = config.answer_tokens          # one decoder shape for every task and setting
  if max(len(t) for _, t in test_pairs) + 1 > answer_len:
    raise config_lib.ConfigError(f'answer_tokens={answer_len}: shorter than an answer + EOS.')
  prompts = np.zeros((len(test_pairs), width), np.int32)
  lengths = np.zeros(len(test_pairs), np.int32)
  for i, (prefix, _) in enumerate(test_pairs):
    prompt = pausing.Delay(num_pauses, position, token).apply(prefix)
    prompts[i, :len(prompt)], lengths[i] = prompt, len(prompt)
  correct = 0
  for start in range(0, len(test_pairs), config.eval_batch_size):
    sl = slice(start, start + config.eval_batch_size)
    rows, lens = prompts[sl], lengths[sl]
    pad = config.eval_batch_size - len(rows)      # a full batch: one compiled shape
    if pad:
      rows = np.concatenate([rows, np.repeat(rows[:1], pad, 0)])
      lens = np.concatenate([lens, np.repeat(lens[:1], pad)])
    out = decoding.generate(model, params, rows, lens, max_new_tokens=answer_len,
                            eos_id=EOS, cache_length=width + answer_len)
    for row, (_, target) in zip(out.tokens, test_pairs[sl]):
      end = np.flatnonzero(row == EOS)
      answer = row[:end[0]] if len(end) else row
      correct += int(np.array_equal(answer, target))
  return correct / len(test_pairs)


def _mean(xs):
  return round(float(np.mean(xs)), 4)


def _plot(config, table, minf, path):
  plt = report.pyplot()
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
  names = list(table)
  width = 0.8 / len(config.tasks)
  for k, task in enumerate(config.tasks):
    means = [np.mean(table[s][task]) for s in names]
    errs = [np.std(table[s][task]) for s in names]
    ax.bar(np.arange(len(names)) + k * width, means, width, yerr=errs, label=task)
  ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
  ax.set_xticklabels(names, rotation=35, ha='right', fontsize=7)
  ax.set_ylabel('exact match (mean over seeds)')
  ax.legend(fontsize=7)
  ax.set_title('Fine-tuning settings')
  ms = sorted(minf)
  for task in config.tasks:
    ax2.plot(ms, [np.mean(minf[m][task]) for m in ms], 'o-', label=task)
  ax2.set_xlabel('M_inf (pauses at inference)')
  ax2.set_ylabel('exact match')
  ax2.set_title(f'PausePT_PauseFT (M_ft = {config.num_pauses})')
  ax2.legend(fontsize=7)
  return report.save_figure(fig, path, dpi=90)


DIAGNOSED = ('StdPT_PauseFT', 'StdPT_PauseFT_meaninit', 'StdPT_PauseFT_frozen',
             'PausePT_PauseFT', 'StdPT_FillerFT')


def _evaluate(config, model, setting, stacked, test_data, table, minf):
  """Exact match of every seed of one setting (and the M_inf grid on PausePT_PauseFT)."""
  table[setting.name] = {t: [] for t in config.tasks}
  d = setting.delay
  for m in range(config.seeds):
    params = jax.tree.map(lambda x, m=m: x[m], stacked)
    for task in config.tasks:
      table[setting.name][task].append(exact_match(
          config, model, params, test_data[task], d.num_pauses, d.position, d.token))
      if setting.name == 'PausePT_PauseFT':
        for m_inf in config.minf_grid:
          em = (table[setting.name][task][-1] if m_inf == d.num_pauses else
                exact_match(config, model, params, test_data[task], m_inf))
          minf.setdefault(m_inf, {t: [] for t in config.tasks})[task].append(em)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The experiment. The fine-tuning settings compile the same programs: the process's
  compilation cache (common.app's) compiles each once."""
  check_config(config)
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  data = pretraining.pretrain_data(config)   # a missing corpus stops here, before compute
  byte_ids = pretraining.pretrained_ids(config, data)
  pretrained, losses = {}, {}
  for kind in ('standard', 'pause'):
    result = pretrain(config, kind, data, os.path.join(workdir, 'pretrain', kind))
    pretrained[kind] = mesh_lib.fetch(result.state.params)
    losses[kind] = round(float([r for r in result.history if 'loss' in r][-1]['loss']), 4)
    del result   # its state (parameters, Adam's moments) leaves the devices before the next model
  train_data, test_data = task_data(config, 'train'), task_data(config, 'test')
  model = make_model(config)
  prompts = diagnosis.prompts(config, test_data)
  measure = lambda params, token=pausing.PAUSE_ID: diagnosis.measure(
      model, params, prompts, config.num_pauses, config.finetune_length, byte_ids, token)
  measures = {'StdPT before fine-tuning': [measure(pretrained['standard'])],
              'PausePT before fine-tuning': [measure(pretrained['pause'])]}
  if 'filler' in config.ablations:
    measures["StdPT before fine-tuning, '.' filler"] = [
        measure(pretrained['standard'], pausing.FILLER_ID)]
  table: dict[str, dict[str, list[float]]] = {}
  minf: dict[int, dict[str, list[float]]] = {}
  for setting in settings(config):
    result = finetune(config, setting, pretrained[setting.pretrained], train_data,
                      os.path.join(workdir, 'finetune', setting.name), byte_ids)
    stacked = mesh_lib.fetch(result.state.params)   # host arrays: no program per slice
    del result
    _evaluate(config, model, setting, stacked, test_data, table, minf)
    if setting.name in DIAGNOSED:
      measures[setting.name] = [measure(jax.tree.map(lambda x, m=m: x[m], stacked),
                                        setting.delay.token) for m in range(config.seeds)]
    logging.info('%s: %s', setting.name, {t: _mean(v) for t, v in table[setting.name].items()})
  if config.num_pauses not in minf and 'PausePT_PauseFT' in table:
    minf[config.num_pauses] = table['PausePT_PauseFT']
  checks = claims.check_claims(config, table, minf)
  figures = []
  if jax.process_index() == 0:
    figures.append(_plot(config, table, minf, os.path.join(workdir, 'exact_match.png')))
  diagnosis_numbers, diagnosis_table = diagnosis.summary_table(config, table, measures)
  numbers = {
      'exact_match': {s: {t: {'mean': _mean(v), 'seeds': [round(x, 4) for x in v]}
                          for t, v in row.items()} for s, row in table.items()},
      'exact_match_mean_over_tasks': {s: _mean([np.mean(v) for v in row.values()])
                                      for s, row in table.items()},
      'minf_on_PausePT_PauseFT': {str(m): {t: _mean(v) for t, v in row.items()}
                                  for m, row in sorted(minf.items())},
      'minf_on_PausePT_PauseFT_seeds': {
          str(m): [round(float(x), 4) for x in claims.per_seed(row, config.tasks)]
          for m, row in sorted(minf.items())},
      'diagnosis': diagnosis_numbers,
      'pretrain_final_loss': losses,
      'seconds': round(time.time() - start, 1),
  }
  m = config.model
  notes = (f'{m.num_layers}-layer d {m.d_model} byte-level LMs ({m.encoding}) pretrained on '
           f'{config.pretrain.total_steps} x {config.pretrain.batch_size} rows of '
           f'{config.pretrain_length} tokens ({config.corpus} with '
           f'{config.algorithmic_fraction:.0%} algorithmic text); the pause model with M_pt = '
           f'{pretraining.pretrain_pauses(config)}'
           f' pauses per row ({config.pause_positions}). Fine-tuned on the mixture of '
           f'{list(config.tasks)} ({config.train_examples_per_task} examples each, '
           f'{config.finetune.total_steps} steps), M_ft = {config.num_pauses}, {config.seeds} '
           f'seeds (fine-tuning data order, the same in every setting: the checks pair them; one '
           f'pretraining per model). Exact match of greedy KV-cache decoding on '
           f'{config.test_examples_per_task} test prompts per task. Checks: 95% Student-t '
           f'intervals over seeds of per-seed differences (mean over tasks); a difference '
           f'between two arms both below {config.checks.floor:g} is inconclusive.')
  tables = [report.table(
      f'Exact match (greedy decoding; means over {config.seeds} seeds)',
      ['setting'] + list(config.tasks) + ['mean'],
      [[s] + [_mean(row[t]) for t in config.tasks] +
       [numbers['exact_match_mean_over_tasks'][s]] for s, row in table.items()]),
      diagnosis_table]
  return report.make_summary(
      name='pause', title='Pause tokens: think before you speak', claim=CLAIM, numbers=numbers,
      checks=checks, tables=tables, workdir=workdir, figures=figures, notes=notes,
      config=config)
