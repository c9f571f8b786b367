"""The same run on 1 device, on an 8-way data mesh and on a 2x4 data x model mesh."""

import jax
import numpy as np
import pytest

from common import classifier
from common import mesh as mesh_lib
from tests.common.conftest import tiny_config

# Float32 sums are reordered across devices; 60 Adam steps keep the losses this close.
RTOL = 2e-4

LAYOUTS = {
    'one_device': dict(num_devices=1, mesh=(('data', 1), ('model', 1)), sharding='data'),
    'data8': dict(mesh=(('data', 8), ('model', 1)), sharding='data'),
    'data8_fsdp': dict(mesh=(('data', -1),), sharding='fsdp'),
    'data2_model4': dict(mesh=(('data', 2), ('model', 4)), sharding='fsdp_tensor'),
}


def _losses(tmp_path, name, **kw):
  config = tiny_config(eval_splits=(), **{'model.widths': (64, 32)}, **kw)
  result = classifier.train_classifier(config, str(tmp_path / name)).result
  return np.array([r['loss'] for r in result.history if 'loss' in r]), result


def test_same_losses_on_every_mesh(tmp_path):
  assert jax.device_count() == 8
  reference, _ = _losses(tmp_path, 'one_device', **LAYOUTS['one_device'])
  for name in ('data8', 'data8_fsdp', 'data2_model4'):
    losses, result = _losses(tmp_path, name, **LAYOUTS[name])
    assert result.mesh.size == 8
    np.testing.assert_allclose(losses, reference, rtol=RTOL, err_msg=name)


def test_parameters_are_sharded_as_the_rules_say(tmp_path):
  _, result = _losses(tmp_path, 'tp', **LAYOUTS['data2_model4'])
  params = result.state.params
  assert params['hidden_0']['kernel'].sharding.spec == mesh_lib.P('data', 'model')
  assert params['hidden_0']['bias'].sharding.spec == mesh_lib.P('model')
  # The optimizer state follows its parameter.
  mu = result.state.opt_state[0][0].mu
  assert mu['hidden_0']['kernel'].sharding.spec == mesh_lib.P('data', 'model')
  # Each device holds an eighth of the kernel.
  shard = params['hidden_0']['kernel'].addressable_shards[0].data
  assert shard.shape == (64 // 2, 64 // 4)


def test_indivisible_dimension_stays_replicated():
  mesh = mesh_lib.make_mesh((('data', 2), ('model', 4)))
  rules = mesh_lib.STRATEGIES['tensor']
  sharding = mesh_lib.logical_to_sharding(mesh_lib.P('embed', 'mlp'), (6, 10), mesh, rules)
  assert sharding.spec == mesh_lib.P()  # 10 does not divide over 4 devices
  sharding = mesh_lib.logical_to_sharding(mesh_lib.P('embed', 'mlp'), (6, 12), mesh, rules)
  assert sharding.spec == mesh_lib.P(None, 'model')


@pytest.mark.parametrize('spec,expected', [
    ((('data', -1),), {'data': 8}),
    ((('data', -1), ('model', 2)), {'data': 4, 'model': 2}),
    ((('data', 2), ('model', 4)), {'data': 2, 'model': 4}),
])
def test_mesh_resolution(spec, expected):
  mesh = mesh_lib.make_mesh(spec)
  assert dict(mesh.shape) == expected
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_streamed_batches_match_device_resident_batches(tmp_path):
  on_device, _ = _losses(tmp_path, 'on_device', **LAYOUTS['data2_model4'])
  streamed, _ = _losses(tmp_path, 'streamed', device_data_max_mb=0, **LAYOUTS['data2_model4'])
  np.testing.assert_allclose(streamed, on_device, rtol=1e-6)
