"""The length-generalisation experiment end to end (tiny variant) and its config errors."""

import json
import os

import pytest

from common import config_lib
from common import report
from common.data import loader
from configs.fire_pe import lm as lm_config
from fire_pe import experiment


def test_tiny_config_runs_end_to_end(tmp_path):
  summary = experiment.run(lm_config.get_config('tiny'), str(tmp_path))
  on_disk = json.loads((tmp_path / 'summary.json').read_text())
  assert on_disk['reproduced'] == summary['reproduced'] and on_disk['name'] == 'fire_pe'
  assert summary['checks'] and summary['tables'] and all(t['rows'] for t in summary['tables'])
  assert summary['reproduced'] == report.verdict_from(summary['checks'])
  losses = summary['numbers']['losses']
  assert set(losses) == {'nope', 'learned_absolute', 'rope', 'fire'}
  # Learned absolute positions stop at the train length: reported, not clipped or crashed.
  assert losses['learned_absolute']['2'] == experiment.NOT_REPRESENTABLE
  assert isinstance(losses['learned_absolute']['1'], dict)
  for name in ('nope', 'rope', 'fire'):
    for factor in ('1', '2', '4', '8'):
      assert 0 < losses[name][factor]['second_half'] < 6   # below log(259) = 5.56 + slack
    # 60 steps of training moved the loss well below a uniform guess.
    assert losses[name]['final_train_loss'] < 4.0
  assert set(summary['numbers']['checks']) == {'4x', '8x'}
  assert all(os.path.exists(tmp_path / f) for f in summary['figures'])


def test_config_errors(tmp_path):
  config = lm_config.get_config('tiny')
  config.encodings = ('nope', 'fier')
  with pytest.raises(config_lib.ConfigError, match=r"'fier'.*'fire'"):
    experiment.run(config, str(tmp_path))
  config = lm_config.get_config('tiny')
  config.claim_encoding = 'fire_s'
  with pytest.raises(config_lib.ConfigError, match="Claim encoding 'fire_s' is not in"):
    experiment.run(config, str(tmp_path))


def test_windows_and_text_errors():
  ids = loader.load_text('stdlib_text', 'test', max_bytes=1000)
  assert len(ids) == 1000 and ids.min() >= loader.BYTE_OFFSET
  w = experiment.windows(ids, 65, max_windows=3)
  assert w.shape == (3, 65) and (w[1] == ids[65:130]).all()
  with pytest.raises(loader.DatasetError, match='not one window of 2000'):
    experiment.windows(ids, 2000)
  with pytest.raises(loader.DatasetError, match='Unknown text corpus'):
    loader.load_text('no_such_corpus', 'train')
