"""Checkpoints restore across meshes: saved on 8 devices, restored on 1 and on 2x4."""

import os

import jax
import numpy as np

from common import checkpoint as ckpt_lib
from common import classifier
from common import mesh as mesh_lib
from common import train as train_lib
from tests.common.conftest import tiny_config


def _restore_on(workdir, config, mesh):
  """The state of `workdir`'s newest checkpoint, restored with `mesh`'s shardings."""
  from common import models  # pylint: disable=g-import-not-at-top
  model = models.build(config.model, 10)
  sample = np.zeros((1, 8, 8, 1), np.float32)
  init_fn = lambda rng: model.init(rng, sample, train=False)
  tx = train_lib.make_optimizer(config.optimizer, config.total_steps)
  abstract, shardings = train_lib.state_shardings(
      init_fn, tx, jax.random.key(0), mesh, mesh_lib.rules_from_config(config))
  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), save_every_steps=1)
  state, _, _ = checkpointer.restore(checkpointer.latest_step(),
                                     ckpt_lib.abstract_like(abstract, shardings),
                                     meta={'fingerprint': ckpt_lib.fingerprint(abstract)})
  checkpointer.close()
  return state


def test_restore_8_devices_onto_1_and_onto_2x4(tmp_path):
  config = tiny_config(eval_splits=(), mesh=(('data', -1),), sharding='fsdp',
                       **{'model.widths': (64, 32)})
  saved = classifier.train_classifier(config, str(tmp_path)).result.state
  assert saved.params['hidden_0']['kernel'].sharding.spec == mesh_lib.P('data')
  expected = jax.tree.map(np.asarray, saved)

  one = mesh_lib.make_mesh((('data', 1),), jax.devices()[:1])
  on_one = _restore_on(str(tmp_path), config, one)
  two_by_four = mesh_lib.make_mesh((('data', 2), ('model', 4)))
  config.sharding = 'fsdp_tensor'
  on_2x4 = _restore_on(str(tmp_path), config, two_by_four)

  for restored, mesh in ((on_one, one), (on_2x4, two_by_four)):
    kernel = restored.params['hidden_0']['kernel']
    assert kernel.sharding.mesh.shape == mesh.shape
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), expected)
  assert on_2x4.params['hidden_0']['kernel'].sharding.spec == mesh_lib.P('data', 'model')
  assert len(on_one.params['hidden_0']['kernel'].sharding.device_set) == 1


def test_incomplete_checkpoint_directory_is_ignored(tmp_path):
  config = tiny_config(eval_splits=())
  classifier.train_classifier(config, str(tmp_path))
  # What a crash mid-save leaves: a temporary directory for a later step.
  os.makedirs(tmp_path / 'checkpoints' / '90.orbax-checkpoint-tmp-1234' / 'state')
  checkpointer = ckpt_lib.Checkpointer(str(tmp_path / 'checkpoints'), save_every_steps=30)
  assert checkpointer.latest_step() == 60
  config.total_steps = 90
  result = classifier.train_classifier(config, str(tmp_path)).result
  assert result.resumed_from == 60 and int(result.state.step) == 90
