"""Nothing silently wrong: a resume under another config, bad loop values, damaged checkpoints."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest

from common import checkpoint as ckpt_lib
from common import classifier
from common import config_lib
from common import metrics as metrics_lib
from common.data import embedded
from common.data import loader
from tests.common.conftest import run_cli
from tests.common.conftest import tiny_config


def _train(config, workdir, **kwargs):
  return classifier.train_classifier(config, str(workdir), **kwargs).result


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
  """A finished 60-step run (checkpoints at 30 and 60), copied afresh for each test."""
  workdir = tmp_path_factory.mktemp('finished')
  result = _train(tiny_config(), workdir)
  return workdir, jax.tree.map(np.asarray, result.state)


@pytest.fixture
def workdir(finished, tmp_path):
  target = tmp_path / 'run'
  shutil.copytree(finished[0], target)
  return target


# --- 1. A resume under changed values is refused, with the fields named. ----------------------
@pytest.mark.parametrize('field,value', [('optimizer.learning_rate', 1e-2), ('seed', 1),
                                         ('label_smoothing', 0.1), ('train_split', 'train[:90%]')])
def test_resume_under_a_changed_config_is_refused(workdir, field, value):
  with pytest.raises(ckpt_lib.CheckpointMismatchError) as error:
    _train(tiny_config(**{field: value}), workdir)
  message = str(error.value)
  assert field in message and 'resume_despite_changes' in message and 'fresh --workdir' in message


def test_resume_on_other_training_data_is_refused(workdir):
  train = loader.load('digits', 'train')
  other = {k: v[::-1].copy() for k, v in train.items()}  # the same examples, another order
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r'data\.arrays\.inputs'):
    _train(tiny_config(), workdir, train_arrays=other, eval_arrays={}, num_classes=10)


def test_fewer_total_steps_are_refused_and_more_continue(workdir, finished):
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match='past the 40 total steps'):
    _train(tiny_config(total_steps=40), workdir)
  config = tiny_config(total_steps=90)
  result = _train(config, workdir)
  assert result.resumed_from == 60 and int(result.state.step) == 90


def test_shorter_run_than_recorded_is_refused_even_before_its_end(workdir):
  shutil.rmtree(workdir / 'checkpoints' / '60')  # as if killed after step 30
  with pytest.raises(ckpt_lib.CheckpointMismatchError, match=r'total_steps: checkpoint 60, now 45'):
    _train(tiny_config(total_steps=45), workdir)


def test_changed_cadence_resumes_and_resume_despite_changes_continues(workdir):
  result = _train(tiny_config(log_every_steps=5, eval_every_steps=0, keep_checkpoints=3,
                              total_steps=70), workdir)
  assert result.resumed_from == 60
  result = _train(tiny_config(resume_despite_changes=True, total_steps=80,
                              **{'optimizer.learning_rate': 1e-2}), workdir)
  assert result.resumed_from == 70 and int(result.state.step) == 80


# --- 2. Loop values that would run wrongly stop before any compute. ----------------------------
@pytest.mark.parametrize('field,value,expected', [
    ('keep_checkpoints', 0, 'keep_checkpoints=0'),
    ('checkpoint_every_steps', 0, 'checkpoint_every_steps=0'),
    ('total_steps', 0, 'total_steps=0'),
    ('total_steps', -5, 'total_steps=-5'),
    ('batch_size', 0, 'batch_size=0'),
    ('log_every_steps', 0, 'log_every_steps=0'),
    ('eval_every_steps', -1, 'eval_every_steps=-1'),
])
def test_bad_loop_values_fail_before_compute(tmp_path, field, value, expected):
  with pytest.raises(config_lib.ConfigError, match=expected):
    _train(tiny_config(**{field: value}), tmp_path)
  assert not (tmp_path / 'checkpoints').exists()


def test_sharding_rule_naming_a_missing_mesh_axis(tmp_path):
  config = tiny_config(sharding_rules=(('batch', 'data'), ('mlp', 'modle')))
  with pytest.raises(config_lib.ConfigError, match=r"mesh axis 'modle' \(did you mean 'model'"):
    _train(config, tmp_path)
  config = tiny_config(mesh=(('data', -1),), sharding='tensor')
  with pytest.raises(config_lib.ConfigError, match="names mesh axis 'model'"):
    _train(config, tmp_path)
  assert not (tmp_path / 'checkpoints').exists()


# --- 3. The workdir's records survive a refused run and a lost metrics file. ------------------
def test_refused_run_keeps_config_json_and_success_archives_it(tmp_path):
  flags = ('--config.total_steps=40', '--config.checkpoint_every_steps=20',
           '--config.model.widths=(32,)', '--config.eval_every_steps=0')
  first = run_cli(tmp_path, *flags)
  assert first.returncode == 0, first.stderr
  assert (tmp_path / 'jax_cache').is_dir()  # --compilation_cache's default: <workdir>/jax_cache
  assert not (tmp_path / 'workdir.lock').exists()  # the lock is released at exit
  with open(tmp_path / 'config.json', encoding='utf-8') as f:
    original = json.load(f)
  refused = run_cli(tmp_path, *flags, '--config.optimizer.learning_rate=0.01')
  assert refused.returncode != 0
  assert 'optimizer.learning_rate: checkpoint 0.001, now 0.01' in refused.stderr
  with open(tmp_path / 'config.json', encoding='utf-8') as f:
    assert json.load(f) == original
  allowed = run_cli(tmp_path, *flags, '--config.optimizer.learning_rate=0.01',
                    '--config.resume_despite_changes=True', '--config.total_steps=60')
  assert allowed.returncode == 0, allowed.stderr
  with open(tmp_path / 'config.json', encoding='utf-8') as f:
    assert json.load(f)['config']['optimizer']['learning_rate'] == 0.01
  with open(tmp_path / 'config.1.json', encoding='utf-8') as f:
    assert json.load(f) == original


def test_lost_metrics_file_is_rebuilt_from_the_checkpoint(workdir):
  before = metrics_lib.read_jsonl(str(workdir / 'metrics.jsonl'))
  assert any('test/accuracy' in r for r in before)
  os.remove(workdir / 'metrics.jsonl')
  summary = classifier.run(tiny_config(), str(workdir))
  assert summary['numbers']['test/accuracy'] == before[-1]['test/accuracy']
  after = metrics_lib.read_jsonl(str(workdir / 'metrics.jsonl'))
  assert [r['step'] for r in after] == [r['step'] for r in before]


# --- 8. A damaged newest checkpoint: fall back to the newest readable one. ---------------------
def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


DAMAGE = {
    'truncated array file': lambda step: [_truncate(p) for p in glob.glob(
        os.path.join(step, 'state', '**', 'd', '*'), recursive=True)],
    'truncated metadata': lambda step: _truncate(os.path.join(step, 'meta', 'metadata')),
    'missing item': lambda step: shutil.rmtree(os.path.join(step, 'data')),
}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_newest_checkpoint_falls_back_to_an_older_one(workdir, finished, damage, caplog):
  DAMAGE[damage](str(workdir / 'checkpoints' / '60'))
  with caplog.at_level('WARNING'):
    result = _train(tiny_config(), workdir)
  assert result.resumed_from == 30
  assert 'Checkpoint step 60' in caplog.text and 'unreadable' in caplog.text
  assert os.path.isdir(workdir / 'checkpoints.unreadable' / '60')
  # Retrained from step 30: the same state as the uninterrupted run.
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, result.state), finished[1])
  checkpointer = ckpt_lib.Checkpointer(str(workdir / 'checkpoints'), save_every_steps=30)
  assert checkpointer.all_steps() == [30, 60]
  checkpointer.close()


def test_no_readable_checkpoint_names_the_folder(workdir):
  for step in ('30', '60'):
    DAMAGE['missing item'](str(workdir / 'checkpoints' / step))
  with pytest.raises(ckpt_lib.CheckpointUnreadableError, match='Remove that folder'):
    _train(tiny_config(), workdir)


# --- 9. The embedded data's cache dir. ----------------------------------------------------------
def test_unwritable_data_dir_is_named_before_generating(tmp_path, monkeypatch):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  monkeypatch.setenv('GRP_DATA_DIR', str(blocker / 'cache'))
  with pytest.raises(embedded.DataDirError, match='GRP_DATA_DIR'):
    embedded.mnist1d('train', num_samples=123)
