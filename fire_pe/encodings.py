"""FIRE (Li et al., 2023) for common.models.transformer.TransformerLM, its ablations, and `build`.

    from fire_pe import FIRE, build
    model = TransformerLM(vocab_size=259, encoding=functools.partial(FIRE, num_heads=4))
    model = TransformerLM(..., **build('fire_s', num_heads=4, train_length=64))  # FIRE-S

The baselines (RoPE, ALiBi, Kerple, T5, sinusoidal, learned absolute, NoPE) are the platform's
standard encodings, in common.models.positions; importing this module registers FIRE's names there
too, so `positions.build('fire', ...)` works once fire_pe is imported.

FIRE is a relative encoding: `bias(length)` returns `(bias_fn, params)`, `bias_fn(params,
q_start, k_start, q_len, k_len)` the (H, q_len, k_len) additive bias of one block of positions
(common.models.attention), pure, so the block-wise kernel can evaluate and differentiate it block
by block.

FIRE:  b(i, j) = f_theta( psi(i - j) / psi(max(L, i)) ),  psi(x) = log(c x + 1),
f_theta an MLP 1 -> width (x depth) -> H with ReLU, c > 0 and the threshold L = |L_mult * init_L|
learnable. Ablations: `log_transform=False` (psi(x) = x), `threshold=False` (normalise by psi(i)),
`interpolate=False` (f(psi(i - j)), no normalisation), `learn_threshold=False`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common import config_lib
from common.models import positions as positions_lib
from common.models.transformer import PositionEncoding

_relative = positions_lib.relative


# ---------------------------------------------------------------------------------------------
# FIRE.
# ---------------------------------------------------------------------------------------------
def fire_mlp(mlp, x):
  """f_theta applied elementwise to x (...,) -> (..., H)."""
  def dense(h, w, b):  # b (out,) broadcast over the leading axes of h explicitly
    return h @ w + b.reshape((1,) * (h.ndim - 1) + b.shape)

  h = x[..., None]
  for w, b in mlp[:-1]:
    h = jax.nn.relu(dense(h, w, b))
  return dense(h, *mlp[-1])


def fire_psi(x, c, log_transform: bool):
  return jnp.log1p(c * x) if log_transform else x


def fire_normaliser(i, c, threshold_length, *, log_transform, threshold, freeze_at=None,
                    eps=1e-6):
  """psi(max(L, i)) + eps (psi(i) + eps without the threshold) for query positions i."""
  i = i.astype(jnp.float32)
  if freeze_at is not None:
    i = jnp.minimum(i, freeze_at)
  norm_pos = jnp.maximum(threshold_length, i) if threshold else i
  return fire_psi(norm_pos, c, log_transform) + eps


def fire_inputs(i, rel, c, threshold_length, *, log_transform, threshold, interpolate,
                freeze_at=None, eps=1e-6):
  """The MLP's input psi(i - j) / psi(max(L, i)) (or an ablation's) for positions i, i - j.

  freeze_at: a diagnostic, not FIRE: the normaliser's position stops growing at this row,
  psi(max(L, min(i, freeze_at))) (None: FIRE's).
  """
  num = fire_psi(rel.astype(jnp.float32), c, log_transform)
  if not interpolate:
    return num
  return num / fire_normaliser(i, c, threshold_length, log_transform=log_transform,
                               threshold=threshold, freeze_at=freeze_at, eps=eps)


def fire_piecewise(mlp, i, rel, c, threshold_length, *, log_transform, threshold,
                   freeze_at=None):
  """f_theta(psi(i - j) / Z_i) of a one-hidden-layer FIRE, (H, q, k), without the per-pair MLP.

  f(x) = sum_u a_u relu(w_u x + b_u) + b_out is piecewise affine in x with a kink at
  t_u = -b_u / w_u per unit: on the segment above the s smallest kinks it is A_s x + B_s, where
  (A_s, B_s) sum the (a_u w_u, a_u b_u) of the units live there (an (width + 1, 2H) table, built
  once per block from the parameters). Within a query row the input psi(d) / Z_i grows with the
  distance d = i - j, so x >= t_u exactly when d >= ceil(psi^-1(t_u Z_i)): per row, `width`
  distances at which a kink is crossed. A pair's segment is the number of those it reaches, a
  count over `width` comparisons, and its bias a gather of (A_s, B_s) and one multiply-add, in
  place of `width` hidden units and a width x H product (forward and backward). The same values
  (up to rounding at a kink, where a unit contributes ~0) and, through the table, the same
  gradients for every parameter (the segment index, like relu's kink, has none).

  Args:
    mlp: [(w0 (1, width), b0 (width,)), (w1 (width, H), b1 (H,))].
    i: query positions broadcastable to rel's (q, 1); rel: (q, k) integer distances >= 0.
    c, threshold_length, log_transform, threshold, freeze_at: as `fire_inputs`.
  """
  (w0, b0), (w1, b1) = mlp
  num_heads = w1.shape[1]
  z = fire_normaliser(i, c, threshold_length, log_transform=log_transform, threshold=threshold,
                      freeze_at=freeze_at)                                    # (q, 1)
  rel = rel.astype(jnp.float32)
  x = fire_psi(rel, c, log_transform) / z                                    # (q, k)
  w, b = w0[0], b0
  live_low = w < 0                                   # live below the kink (x < t)
  kinks = -b / jnp.where(w == 0, 1.0, w)
  sign = jnp.where(w > 0, 1.0, jnp.where(live_low, -1.0, 0.0))  # crossing adds / removes a unit
  live_below = live_low | ((w == 0) & (b > 0))      # with a zero weight: live everywhere, or dead
  base = jnp.concatenate([                           # the segment below every kink
      jnp.sum(jnp.where(live_below, w, 0.0)[:, None] * w1, axis=0),
      b1 + jnp.sum(jnp.where(live_below, b, 0.0)[:, None] * w1, axis=0)])
  jumps = jnp.concatenate([(sign * w)[:, None] * w1, (sign * b)[:, None] * w1], axis=1)
  order = jnp.argsort(jax.lax.stop_gradient(kinks))
  kinks, jumps = kinks[order], jumps[order]
  table = base[None] + jnp.concatenate([jnp.zeros((1, 2 * num_heads), jumps.dtype),
                                  jnp.cumsum(jumps, axis=0)])             # (width + 1, 2H)
  # The first distance at which each kink is crossed, per row (psi^-1 of t_u Z_i; capped so that
  # expm1 stays finite: a kink that far is never crossed).
  y = kinks[None, :] * z                                                     # (q, width)
  crossing = jnp.ceil(jnp.expm1(jnp.minimum(y, 60.0)) / c if log_transform else y)
  crossing = jax.lax.stop_gradient(crossing)
  segment = jnp.sum(rel[:, :, None] >= crossing[:, None, :], axis=-1)        # (q, k)
  a_b = table[segment]                                                       # (q, k, 2H)
  return jnp.moveaxis(a_b[..., :num_heads] * x[..., None] + a_b[..., num_heads:], -1, 0)


def _fire_bias(params, q_start, k_start, q_len, k_len, *, log_transform, threshold,
               interpolate, freeze_at=None):
  i, _, rel = _relative(q_start, k_start, q_len, k_len)
  c, length_l, table = params['c'], params['threshold'], params['table']
  flags = dict(log_transform=log_transform, threshold=threshold, interpolate=interpolate,
               freeze_at=freeze_at)
  if 'positions' in params:   # randomised positions: row r sits at positions[r]
    positions = params['positions']
    last = positions.shape[0] - 1
    pos_i = positions[jnp.minimum(q_start + jnp.arange(q_len), last)]
    pos_j = positions[jnp.minimum(k_start + jnp.arange(k_len), last)]
    i, rel = pos_i[:, None], jnp.maximum(pos_i[:, None] - pos_j[None, :], 0.0)

  def from_table():  # rows whose normaliser is constant: the bias depends on i - j only
    # A gather (its VJP a scatter-add into the table); measured faster on CPU than building the
    # Toeplitz block from slices. Distances past the table (padded rows only) read its end.
    return table[:, jnp.minimum(rel, table.shape[1] - 1)]

  # Rows past the threshold: f on every (i, j) of the block (for one hidden layer through its
  # piecewise-affine form, `fire_piecewise`). Rematerialised: a VJP keeps only the block's inputs.
  @jax.checkpoint
  def full():
    if len(params['mlp']) == 2 and interpolate:   # one hidden layer: its piecewise-affine form
      return fire_piecewise(params['mlp'], i, rel, c, length_l, log_transform=log_transform,
                            threshold=threshold, freeze_at=freeze_at)
    x = fire_inputs(i, rel, c, length_l, **flags)
    return jnp.moveaxis(fire_mlp(params['mlp'], x), -1, 0)

  if 'positions' in params:
    return full()
  if not interpolate:
    return from_table()
  if not threshold:
    return full()
  last_row = jnp.asarray(q_start + q_len - 1, jnp.float32)
  return jax.lax.cond(last_row <= length_l, from_table, full)


def kink_bias_init(key, shape, *, previous, weight, input_max: float):
  """Biases that put every hidden unit's kink inside the MLP's input range [0, input_max].

  LeCun-normal weights with zero biases (the usual Flax init) start half of the first layer's
  units dead on inputs >= 0 (negative weight, zero bias: relu(w x) = 0 for all x >= 0) and every
  live unit's kink at x = 0, so f starts linear on [0, 1]. Here unit u of the first layer gets its
  kink at x_u = (u + U(0, 1)) / width * input_max, shuffled (stratified: one kink per 1/width of
  the range): b_u = -w_u x_u. A unit is then live on [0, x_u) (w_u < 0) or (x_u, input_max]
  (w_u > 0), never dead on the range. A deeper layer's unit v, whose pre-activation z_v(x) is
  piecewise linear in x, gets b_v = -(the q_v-quantile of z_v over a grid of the range), q_v
  stratified in (0.1, 0.9): live on at least a tenth of the range and off on another tenth.

  Args:
    key: the PRNG key.
    shape: (width,).
    previous: the (w, b) pairs of the layers before this one (empty for the first).
    weight: this layer's weight (fan_in, width), already drawn.
    input_max: the top of the input range (1 with interpolation).
  """
  (width,) = shape
  kink_key, order_key = jax.random.split(key)
  levels = (jnp.arange(width) + jax.random.uniform(kink_key, (width,))) / width
  levels = jax.random.permutation(order_key, levels)
  if not previous:
    return -weight[0] * levels * input_max
  grid = jnp.linspace(0.0, input_max, 257)
  hidden = grid[:, None]
  for w, b in previous:
    hidden = jax.nn.relu(hidden @ w + b[None])
  pre = hidden @ weight                                           # (grid, width)
  quantiles = 0.1 + 0.8 * levels
  return -jax.vmap(jnp.quantile, in_axes=(1, 0))(pre, quantiles)


class FIRE(PositionEncoding):
  """FIRE: a learned function of the normalised relative position.

  Attributes:
    num_heads: H, the MLP's output size.
    mlp_width, mlp_depth: hidden width and number of hidden layers of f_theta (paper: 32, 1).
    init_c: initial c of psi(x) = log(c x + 1) (learned).
    init_threshold: init_L; the threshold is |L_mult * init_L| with L_mult learned (from 1) unless
      `learn_threshold=False`. The public code uses 512 at train length 2048: a quarter of it.
    log_transform, threshold, interpolate: False for the paper's ablations.
    freeze_normaliser_at: a diagnostic for evaluation, not FIRE: the normaliser's position stops
      at this row (psi(max(L, min(i, freeze)))); the experiment sets the train length - 1.

  Initialisation: hidden units' kinks spread over the input range and none starts dead
  (`kink_bias_init`); the readout is LeCun normal with zero bias.

  `bias(length)` evaluates f_theta once on the distances 0 .. length-1 with the threshold
  normaliser (the table used by every block whose rows are all <= L); blocks past the threshold
  evaluate it on each (i, j), through its piecewise-affine form with one hidden layer
  (`fire_piecewise`: the same values and gradients as the MLP at a fraction of the cost).
  """
  num_heads: int = 4
  mlp_width: int = 32
  mlp_depth: int = 1
  init_c: float = 0.1
  init_threshold: float = 512.0
  learn_threshold: bool = True
  log_transform: bool = True
  threshold: bool = True
  interpolate: bool = True
  freeze_normaliser_at: float | None = None

  def setup(self):
    widths = [1] + [self.mlp_width] * self.mlp_depth + [self.num_heads]
    # Python floats (init may be traced): psi(init_L), the inputs' scale without interpolation.
    input_max = 1.0 if self.interpolate else (
        math.log1p(self.init_c * self.init_threshold) if self.log_transform
        else float(self.init_threshold))
    mlp = []
    for n, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
      if n == self.mlp_depth:   # the readout: LeCun normal, zero bias
        w = self.param(f'w{n}', nn.initializers.lecun_normal(), (a, b))
        bias = self.param(f'b{n}', nn.initializers.zeros_init(), (b,))
      else:
        w = self.param(f'w{n}', nn.initializers.lecun_normal(), (a, b))
        bias = self.param(f'b{n}', functools.partial(
            kink_bias_init, previous=tuple(mlp), weight=w, input_max=input_max), (b,))
      mlp.append((w, bias))
    self.mlp = mlp
    self.c = self.param('c', nn.initializers.constant(self.init_c), ())
    if self.learn_threshold:
      self.threshold_mult = self.param('threshold_mult', nn.initializers.ones_init(), ())
    else:
      self.threshold_mult = jnp.ones(())

  def bias(self, length, positions=None):
    """(bias_fn, params); `positions` (length,), sorted, replaces 0 .. length-1 as the rows' and
    columns' positions (randomised-position training, `training_positions`)."""
    c = jnp.abs(self.c)
    threshold_length = jnp.abs(self.threshold_mult * self.init_threshold)
    rel = jnp.arange(length)
    flags = dict(log_transform=self.log_transform, threshold=self.threshold,
                 interpolate=self.interpolate)
    freeze = self.freeze_normaliser_at
    # Table rows: the normaliser of any row i <= L (psi(L)); without interpolation, none.
    x = fire_inputs(jnp.zeros_like(rel), rel, c, threshold_length, **flags)
    table = jnp.moveaxis(fire_mlp(self.mlp, x), -1, 0)           # (H, length)
    params = {'mlp': self.mlp, 'c': c, 'threshold': threshold_length, 'table': table}
    if positions is not None:
      if positions.shape != (length,):
        raise ValueError(f'positions must have shape ({length},), got {positions.shape}.')
      params['positions'] = positions.astype(jnp.float32)   # float: no integer cotangents
    return functools.partial(_fire_bias, freeze_at=freeze, **flags), params


@contextlib.contextmanager
def training_positions(positions):
  """Within this context every FIRE module's bias uses `positions` (L,) for the rows and
  columns of a length-L input instead of 0 .. L-1 (the other encodings are unaffected).

      with training_positions(random_positions(key, 64, 512)):
        logits = model.apply(variables, tokens)        # tokens (B, 64)
  """
  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, FIRE) and context.method_name == 'bias':
      kwargs = {**kwargs, 'positions': positions}
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    yield


def random_positions(key, length: int, max_position: int):
  """A sorted random subset of `length` positions of 0 .. max_position - 1 (randomised positional
  encodings, Ruoss et al. 2023; offered by the public PyTorch FIRE): (length,) int32."""
  if length > max_position:
    raise ValueError(f'Cannot draw {length} distinct positions below {max_position}.')
  return jnp.sort(jax.random.choice(key, max_position, (length,), replace=False)).astype(
      jnp.int32)


# ---------------------------------------------------------------------------------------------
# By name, from a config (registered in common.models.positions).
# ---------------------------------------------------------------------------------------------
# The ablations: FIRE with one field changed, and whether one encoding serves every layer.
FIRE_VARIANTS = {
    'fire': ({}, False),
    'fire_s': ({}, True),
    'fire_no_log': ({'log_transform': False}, False),
    'fire_no_threshold': ({'threshold': False}, False),
    'fire_no_interpolation': ({'interpolate': False}, False),
    'fire_fixed_threshold': ({'learn_threshold': False}, False),
    # FIRE itself, trained with randomised positions (an extension: the experiment draws them,
    # `training_positions`); evaluated at 0 .. L-1 like FIRE.
    'fire_random_positions': ({}, False),
}
RANDOM_POSITIONS = ('fire_random_positions',)
# The study's encodings: the standard ones, then FIRE's.
ENCODINGS = ('nope', 'learned_absolute', 'sinusoidal', 'rope', 'rope_pi', 'alibi', 'kerple_log',
             'kerple_power', 't5', *FIRE_VARIANTS)
# FIRE's fields a config may set (`fire={...}`); num_heads comes from the model.
FIRE_FIELDS = tuple(f.name for f in dataclasses.fields(FIRE)
                    if f.name not in ('parent', 'name', 'num_heads'))


def check_fire_fields(fire: dict[str, Any]) -> None:
  """Refuses a FIRE field that does not exist (a misspelt one would be ignored)."""
  for key in fire:
    if key not in FIRE_FIELDS:
      raise config_lib.ConfigError(f'FIRE has no field {key!r}'
                                   f'{config_lib.closest(key, FIRE_FIELDS)}; fields: '
                                   f'{list(FIRE_FIELDS)}.')


def _fire_builder(changes: dict[str, Any], shared: bool):
  def builder(*, num_heads, train_length, max_len, fire=None):
    del max_len
    fields = dict(fire or {})
    check_fire_fields(fields)
    fields.setdefault('init_threshold', float(train_length))
    return functools.partial(FIRE, num_heads=num_heads, **{**fields, **changes}), shared
  return builder


for _name, (_changes, _shared) in FIRE_VARIANTS.items():
  positions_lib.register(_name, _fire_builder(_changes, _shared), options=('fire',))
del _name, _changes, _shared


def build(name: str, *, num_heads: int, train_length: int, max_len: int | None = None,
          fire: dict[str, Any] | None = None) -> dict[str, Any]:
  """The TransformerLM fields (`encoding`, `share_encoding`) for one of the study's ENCODINGS.

  `fire` (FIRE fields overriding the defaults: mlp_width, mlp_depth, init_c, init_threshold...)
  applies to FIRE's variants; the study passes its one `fire` section for every encoding, and the
  standard ones ignore it. Everything else is common.models.positions.build.
  """
  if fire:
    check_fire_fields(fire)
  options = {'fire': fire} if name in FIRE_VARIANTS else {}
  return positions_lib.build(name, num_heads=num_heads, train_length=train_length,
                             max_len=max_len, **options)
