"""The tokenizers: grey levels, k-means patches, VQ-VAE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muse_mrf import tokenizers


# ---------------------------------------------------------------------------------------------
# Tokenizers.
# ---------------------------------------------------------------------------------------------
def test_grey_tokenizer_round_trip_and_bad_grids():
  tok = tokenizers.GreyLevelTokenizer(levels=8)
  images = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32)
  ids = tok.encode(images)
  assert ids.shape == (5, 64) and ids.min() >= 0 and ids.max() < 8
  assert np.abs(tok.decode(ids) - images).max() <= 0.5 / 7 + 1e-6
  np.testing.assert_array_equal(tok.encode(tok.decode(ids)), ids)
  with pytest.raises(tokenizers.TokenizerError, match='does not match the tokenizer'):
    tok.decode(ids[:, :16])
  with pytest.raises(tokenizers.TokenizerError, match='outside the codebook'):
    tok.decode(np.full((1, 64), 8))
  with pytest.raises(tokenizers.TokenizerError, match='images of shape'):
    tok.encode(images[:, :4])


def test_kmeans_tokenizer():
  images = np.random.default_rng(0).random((40, 8, 8, 1)).astype(np.float32)
  tok = tokenizers.KMeansPatchTokenizer(codebook_size=8, patch=2).fit(images, iterations=5)
  ids = tok.encode(images)
  assert ids.shape == (40, 16) and tok.grid == (4, 4)
  recon = tok.decode(ids)
  assert recon.shape == images.shape
  # Nearest-centre assignment: re-encoding the decoded images gives the same codes.
  np.testing.assert_array_equal(tok.encode(recon), ids)


@pytest.mark.slow
def test_vq_autoencoder_straight_through_and_save_load(tmp_path):
  model = tokenizers.VQAutoencoder(codebook_size=16, embed_dim=4, width=8, num_downsamples=1)
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 1))
  params = model.init(jax.random.key(1), images)['params']
  loss_fn = tokenizers.make_vq_loss_fn(model)
  grads = jax.grad(lambda p: loss_fn(p, {}, {'inputs': images}, None)[0])(params)
  # The reconstruction's gradient reaches the encoder through the straight-through estimator.
  assert float(jnp.abs(grads['enc_0']['kernel']).sum()) > 0
  assert float(jnp.abs(grads['codebook']).sum()) > 0
  tok = tokenizers.VQTokenizer(model, params, (8, 8, 1))
  ids = tok.encode(np.asarray(images))
  assert ids.shape == (4, 16) and tok.grid == (4, 4)
  path = tok.save(str(tmp_path / 'vq.msgpack'))
  loaded = tokenizers.VQTokenizer.load(path)
  np.testing.assert_array_equal(loaded.encode(np.asarray(images)), ids)
  np.testing.assert_allclose(loaded.decode(ids), tok.decode(ids), atol=1e-6)
  with pytest.raises(tokenizers.TokenizerError, match='codebook of 16 codes'):
    tokenizers.VQTokenizer.load(path, codebook_size=8192)
  with pytest.raises(tokenizers.TokenizerError, match='does not match'):
    loaded.decode(ids.reshape(8, 8))
