"""muse_mrf's config check: every field that can be wrong, refused before any compute, naming the
dotted field (common.config_lib's field checks)."""

from __future__ import annotations

import ml_collections

from common import config_lib
from common import mesh as mesh_lib
from common import models
from common import train as train_lib
from muse_mrf import maskgit

_whole = config_lib.whole
_real = config_lib.real
_choice = config_lib.choice
_number = config_lib.is_number


def _check_section_loop(config, name: str) -> None:
  """A common.train loop section: its numbers, optimizer and sharding names."""
  section = config[name]
  config_lib.check_loop(section, name)
  if section.get('total_steps') is None and section.get('total_epochs') is None:
    raise config_lib.ConfigError(f'{name}.total_steps and {name}.total_epochs are both unset: '
                                 'set one of them.')
  try:
    train_lib.make_optimizer(section.optimizer, 1)
    mesh_lib.rules_from_config(section)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'{name}: {e}') from e


def _check_steps(config, field: str) -> tuple[int, ...]:
  values = config.sampling[field]
  if (not isinstance(values, (tuple, list)) or not values
      or not all(_number(t) and float(t).is_integer() and t >= 1 for t in values)):
    raise config_lib.ConfigError(f'sampling.{field}={values!r}: expected a non-empty tuple of '
                                 'whole numbers of decoding steps T >= 1.')
  return tuple(int(t) for t in values)


def _check_input(config) -> None:
  """config.input: 'memory' (the splits loaded as arrays) or 'stream' (muse_mrf.inputs: images of
  any size resized and cropped to image_size, tokenised per batch; the VQ tokenizer only)."""
  if 'input' not in config:
    return
  if _choice(config, 'input', ('memory', 'stream')) != 'stream':
    return
  if config.get('image_size') is None:
    raise config_lib.ConfigError("image_size=None: config.input='stream' resizes and crops every "
                                 'image to an image_size x image_size square; set it (e.g. 256).')
  size = _whole(config, 'image_size', 1)
  if config.tokenizer.kind != 'vq':
    raise config_lib.ConfigError(
        f"tokenizer.kind={config.tokenizer.kind!r} with config.input='stream': the grey-level and "
        "k-means tokenizers fit on every image at once; a stream is tokenised by 'vq'.")
  if config.upsample != 1:
    raise config_lib.ConfigError(f"upsample={config.upsample} with config.input='stream': set "
                                 'image_size instead (the stream resizes every image to it).')
  f = 2 ** _whole(config, 'tokenizer.num_downsamples', 0)
  if size % f:
    raise config_lib.ConfigError(
        f'image_size={size} is not a multiple of 2^tokenizer.num_downsamples = {f}: the VQ '
        'token grid would not cover the image.')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (naming the dotted field) for a config that cannot run or would run
  wrongly; reads only the config (no data, no compile, no files), so every variant is checked
  without its data. Run at the top of `run` and by common.app before anything runs."""
  _whole(config, 'seed', 0)
  _whole(config, 'upsample', 1)
  for field in ('dataset', 'train_split', 'test_split'):
    if not isinstance(config[field], str) or not config[field]:
      raise config_lib.ConfigError(f'{field}={config[field]!r}: expected a non-empty string.')
  # The tokenizer: only the fields of its kind are read.
  tok = config.tokenizer
  _choice(config, 'tokenizer.kind', ('grey', 'kmeans', 'vq'))
  _check_input(config)
  if tok.kind == 'grey':
    _whole(config, 'tokenizer.levels', 2)
  else:
    _whole(config, 'tokenizer.codebook_size', 2)
  if tok.kind == 'kmeans':
    _whole(config, 'tokenizer.patch', 1)
  if tok.kind == 'vq':
    for field in ('embed_dim', 'width'):
      _whole(config, f'tokenizer.{field}', 1)
    _whole(config, 'tokenizer.num_downsamples', 0)
    _real(config, 'tokenizer.beta', 0.0)
    _check_section_loop(config, 'tokenizer_loop')
  # The backbone and its training.
  m = config.model
  for field in ('num_layers', 'd_model', 'num_heads'):
    _whole(config, f'model.{field}', 1)
  if m.d_model % m.num_heads:
    raise config_lib.ConfigError(f'model.d_model={m.d_model} is not a multiple of '
                                 f'model.num_heads={m.num_heads}.')
  if m.get('mlp_dim') is not None:
    _whole(config, 'model.mlp_dim', 1)
  _choice(config, 'model.attention', ('naive', 'blockwise'))
  try:
    maskgit.check_schedule(config.mask_schedule, 'mask_schedule')
  except ValueError as e:
    raise config_lib.ConfigError(str(e)) from e
  _real(config, 'label_smoothing', 0.0, 1.0, open_high=True)
  # The MRF layer and its training at late-stage masking rates.
  layer = config.mrf_layer
  if (not _number(layer.window) or not float(layer.window).is_integer() or layer.window < 3
      or layer.window % 2 == 0):
    raise config_lib.ConfigError(
        f'mrf_layer.window={layer.window!r}: expected an odd whole number >= 3 (the k x k '
        'neighbourhood is centred on the token, so k is odd; 3 is the 8-neighbourhood).')
  _whole(config, 'mrf_layer.iterations', 1)
  _whole(config, 'mrf_layer.num_kernels', 1)
  if layer.rank is not None:
    _whole(config, 'mrf_layer.rank', 1)
  r_range = config.mrf_r_range
  if (not isinstance(r_range, (tuple, list)) or len(r_range) != 2
      or not all(_number(r) for r in r_range) or not 0.0 <= r_range[0] < r_range[1] <= 1.0):
    raise config_lib.ConfigError(f'mrf_r_range={r_range!r}: need (lo, hi) with '
                                 '0 <= lo < hi <= 1.')
  for name in ('backbone', 'mrf', 'scorer'):
    _check_section_loop(config, name)
  # The scorer, and the training images held out from it: the real images of the FD's floor.
  try:
    models.build(config.scorer_model, 1)  # a module object only: names and fields
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'scorer_model: {e}') from e
  _whole(config, 'scorer_holdout', 2)
  # Sampling.
  s = config.sampling
  _whole(config, 'sampling.per_class', 1)
  if s.get('classes') is not None:
    _whole(config, 'sampling.classes', 1)
  try:
    maskgit.check_tau(s.tau)
  except maskgit.DecodingError as e:
    raise config_lib.ConfigError(f'sampling.{e}') from e
  plain, fast = _check_steps(config, 'plain_steps'), _check_steps(config, 'mrf_steps')
  _choice(config, 'sampling.mrf_fill', ('sample', 'argmax'))
  _whole(config, 'sampling.seeds', 2)
  # The claim's checks: thresholds stated before the run.
  c = config.checks
  for field in ('reference_steps', 'fast_steps'):
    _whole(config, f'checks.{field}', 1)
  if c.reference_steps not in plain or c.fast_steps not in plain or c.fast_steps not in fast:
    raise config_lib.ConfigError(
        f'checks compare plain T = {c.reference_steps}, plain T = {c.fast_steps} and MRF '
        f'T = {c.fast_steps}: sampling.plain_steps {plain} and sampling.mrf_steps {fast} must '
        'hold them.')
  _real(config, 'checks.acc_margin', 0.0)
  _real(config, 'checks.acc_gain_vs_plain')
  for field in ('fd_ratio_vs_reference', 'fd_ratio_vs_plain', 'calls_ratio', 'wall_ratio'):
    _real(config, f'checks.{field}', 0.0, open_low=True)
