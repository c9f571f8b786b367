"""The pause embedding's diagnosis helpers on an untrained tiny model (no training)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import lm
from configs.pause import lm as pause_config
from pause import diagnosis
from pause import experiment
from pause import pausing


@pytest.fixture(scope='module')
def model_and_params():
  model = experiment.make_model(pause_config.get_config('tiny'))
  params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  return model, params


def test_frozen_pause_embedding_gets_no_gradient_and_the_rest_does(model_and_params):
  model, params = model_and_params
  prefix = np.array([70, 71, 72], np.int32)
  batch = pausing.finetune_batch([prefix], [np.array([80], np.int32)], pausing.Delay(3), 12,
                                 eos_id=1, num_special_tokens=1)
  loss = lm.make_loss_fn(model, per_example=True)
  total = lambda fn: lambda p: fn(p, {}, batch, None)[0].sum()
  plain = jax.grad(total(loss))(params)
  frozen = jax.grad(total(diagnosis.freeze_pause(loss)))(params)
  assert float(jnp.abs(plain['special_embed']).sum()) > 0     # the pauses are read
  assert float(jnp.abs(frozen['special_embed']).sum()) == 0.0
  np.testing.assert_allclose(frozen['embed']['embedding'], plain['embed']['embedding'])


def test_mean_init_is_the_mean_of_the_given_byte_embeddings(model_and_params):
  _, params = model_and_params
  ids = np.array([40, 50, 60])
  out = diagnosis.mean_byte_init(params, ids)
  np.testing.assert_allclose(out['special_embed'][0],
                             np.asarray(params['embed']['embedding'])[ids].mean(0), rtol=1e-6)
  assert out['embed'] is params['embed']


def test_internals_are_shares_and_ratios_and_need_a_pause(model_and_params):
  model, params = model_and_params
  prefixes = [np.array([70, 71, 72, 73]), np.array([80, 81])]
  got = diagnosis.measure(model, params, prefixes, 3, 12, np.arange(40, 120))
  assert 0.0 < got['attention_on_pauses'] < 1.0
  assert got['uniform_share'] == pytest.approx((3 / 7 + 3 / 5) / 2)
  assert got['residual_norm_ratio'] > 0 and got['embedding_norm_ratio'] > 0
  with pytest.raises(ValueError, match='num_pauses=0'):
    diagnosis.pause_internals(model, params, prefixes, 0, 12)


def test_the_attention_the_diagnosis_reads_is_the_models_own(model_and_params):
  # softmax(q k / sqrt(D)) from the captured rotated queries and keys, applied to the values,
  # gives the attention output the model feeds its out projection.
  model, params = model_and_params
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, 259, (2, 10)), jnp.int32)
  qs, ks, _ = diagnosis._internals(model, params, tokens)  # pylint: disable=protected-access
  found = {'value': [], 'out': []}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.name in found:
      found[context.module.name].append(args[0] if context.module.name == 'out' else out)
    return out

  with nn.intercept_methods(interceptor):
    model.apply({'params': params}, tokens)
  assert len(qs) == len(found['out']) == 1
  for q, k, v, out in zip(qs, ks, found['value'], found['out']):
    scores = np.einsum('blhd,bkhd->bhlk', q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((10, 10), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.einsum('bhlk,bkhd->blhd', weights, np.asarray(v)),
                               np.asarray(out), atol=1e-5)
