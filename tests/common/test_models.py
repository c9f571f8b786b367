"""Models: shapes, the width and depth knobs, logical axes on every parameter."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest

from common import models


@pytest.mark.parametrize('kwargs,shape', [
    ({'name': 'mlp', 'widths': (32, 16)}, (4, 8, 8, 1)),
    ({'name': 'resnet', 'ndim': 2, 'width': 8, 'stage_sizes': (1, 1)}, (4, 8, 8, 1)),
    ({'name': 'resnet', 'ndim': 1, 'width': 8, 'stage_sizes': (2, 1, 1), 'norm': 'batch'},
     (4, 40, 1)),
])
def test_models_produce_logits_and_annotate_every_parameter(kwargs, shape):
  model = models.build(ml_collections.ConfigDict(kwargs), num_outputs=7)
  x = jnp.ones(shape)
  variables = model.init(jax.random.key(0), x)
  specs = nn.get_partition_spec(variables['params'])
  assert all(s is not None for s in jax.tree.leaves(specs, is_leaf=lambda s: s is None))
  unboxed = nn.meta.unbox(variables)
  logits, features = model.apply(unboxed, x, return_features=True)
  assert logits.shape == (4, 7) and features.ndim == 2


def test_resnet_width_and_depth_knobs_change_the_size():
  count = lambda m: sum(p.size for p in jax.tree.leaves(nn.meta.unbox(
      m.init(jax.random.key(0), jnp.ones((1, 8, 8, 1))))['params']))
  base = count(models.ResNet(width=8, stage_sizes=(1, 1)))
  assert count(models.ResNet(width=16, stage_sizes=(1, 1))) > 3 * base
  assert count(models.ResNet(width=8, stage_sizes=(2, 2))) > 1.5 * base


def test_resnet_rejects_inputs_of_the_wrong_rank():
  with pytest.raises(ValueError, match='expects inputs of rank 3'):
    models.ResNet(ndim=1).init(jax.random.key(0), jnp.ones((1, 8, 8, 1)))
