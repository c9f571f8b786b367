"""Models: shapes, the width and depth knobs, logical axes on every parameter, bad input."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from common import models
from common.models import transformer


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


def test_transformer_refuses_token_ids_outside_the_vocabulary():
  """An id >= vocab_size (or negative) used to give NaN logits without an error."""
  model = transformer.TransformerLM(vocab_size=11, num_layers=1, d_model=16, num_heads=2)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, (2, 6)))
  variables = model.init(jax.random.key(0), tokens)
  logits = model.apply(variables, tokens)
  chex.assert_shape(logits, (2, 6, 11))
  chex.assert_tree_all_finite(logits)
  with pytest.raises(ValueError, match=r'Token id 11 at index \(1, 3\) is outside \[0, 11\) '
                     r'\(vocab_size=11'):
    model.apply(variables, tokens.at[1, 3].set(11))
  with pytest.raises(ValueError, match=r'Token id -1 at index \(0, 0\) is outside \[0, 11\)'):
    model.apply(variables, np.asarray(tokens.at[0, 0].set(-1)))
  with pytest.raises(ValueError, match='Token id 12'):
    model.init(jax.random.key(0), tokens.at[0, 5].set(12))
  with pytest.raises(ValueError, match=r'token ids of shape \(batch, length\), got shape \(6,\)'):
    model.apply(variables, tokens[0])
  # Traced ids are not checked (no cheap check under jit), and the check does not get in the way;
  # concrete ids closed over by a jitted function (the train loop's init) still are.
  chex.assert_trees_all_close(jax.jit(model.apply)(variables, tokens), logits, rtol=1e-5,
                              atol=1e-6)
  jax.jit(lambda rng: model.init(rng, tokens))(jax.random.key(0))
  bad = tokens.at[0, 0].set(11)
  with pytest.raises(ValueError, match='Token id 11'):
    jax.jit(lambda rng: model.init(rng, bad))(jax.random.key(0))


def test_transformer_lays_out_activations_by_logical_axes():
  """Under the loop's rules the LM's activations carry sharding constraints (heads and mlp over
  'model'), so a tensor-parallel layout does not rest on XLA's guesses."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from common import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from common.models import transformer  # pylint: disable=g-import-not-at-top
  model = transformer.TransformerLM(vocab_size=16, num_layers=1, d_model=16, num_heads=4)
  tokens = jnp.zeros((4, 8), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(0), tokens))
  mesh = mesh_lib.make_mesh((('data', 2), ('model', 4)))
  with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_lib.STRATEGIES['fsdp_tensor']):
    text = jax.jit(model.apply).lower(params, tokens).as_text()
  constraints = [line for line in text.splitlines() if 'sharding_constraint' in line]
  assert len(constraints) >= 6, text[:2000]
  heads = [c for c in constraints if 'tensor<4x8x4x4xf32>' in c]  # q, k, v, attention out
  assert len(heads) == 4 and all('{"data"}, {}, {"model"}, {}' in c for c in heads)


def test_masked_token_transformer_gives_nan_logits_for_a_traced_label_outside_the_classes():
  """Under jit a label cannot be checked on the host; label 3 of 3 classes would otherwise read
  the mask token's embedding and give finite, wrong logits."""
  model = transformer.MaskedTokenTransformer(codebook_size=4, num_classes=3, num_tokens=4,
                                             num_layers=1, d_model=8, num_heads=2)
  tokens = jnp.zeros((2, 4), jnp.int32)
  variables = model.init(jax.random.key(0), tokens, jnp.zeros((2,), jnp.int32))
  logits = jax.jit(model.apply)(variables, tokens, jnp.array([1, 3]))
  assert np.isfinite(np.asarray(logits[0])).all() and np.isnan(np.asarray(logits[1])).all()
  with pytest.raises(ValueError, match=r'Class labels must lie in \[0, 3\)'):
    model.apply(variables, tokens, jnp.array([1, 3]))


def test_an_id_past_the_special_tokens_is_nan_under_jit_not_the_last_special_token():
  model = transformer.TransformerLM(vocab_size=259, num_special_tokens=1, num_layers=1,
                                    d_model=8, num_heads=2, mlp_dim=16)
  tokens = jnp.array([[3, 259, 7], [3, 261, 7]])
  variables = model.init(jax.random.key(0), tokens[:1])
  logits = np.asarray(jax.jit(model.apply)(variables, tokens))
  assert np.isfinite(logits[0]).all()
  assert np.isnan(logits[1, 1:]).all()   # (and through attention's 0 x NaN, the row's start)
