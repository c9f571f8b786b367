"""Position encodings for common.models.transformer.TransformerLM: FIRE and the paper's baselines.

    from fire_pe import FIRE, ALiBi, build
    model = TransformerLM(vocab_size=259, encoding=functools.partial(FIRE, num_heads=4))
    model = TransformerLM(..., **build('fire_s', num_heads=4, train_length=64))  # FIRE-S

Relative encodings return `(bias_fn, params)` from `bias(length)`; `bias_fn(params, q_start,
k_start, q_len, k_len)` is the (H, q_len, k_len) additive bias for one block of query and key
positions (common.models.attention), pure, so the block-wise kernel can evaluate and differentiate
it block by block. Future keys (i < j) get arbitrary values: the causal mask removes them.

FIRE (Li et al., 2023):  b(i, j) = f_theta( psi(i - j) / psi(max(L, i)) ),  psi(x) = log(c x + 1),
f_theta an MLP 1 -> width (x depth) -> H with ReLU, c > 0 and the threshold L = |L_mult * init_L|
learnable. Ablations: `log_transform=False` (psi(x) = x), `threshold=False` (normalise by psi(i)),
`interpolate=False` (f(psi(i - j)), no normalisation), `learn_threshold=False`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from common import config_lib
from common.models.transformer import LearnedPositions
from common.models.transformer import PositionEncoding

NoPE = PositionEncoding


def _relative(q_start, k_start, q_len, k_len):
  """(i, j, i - j) for one block; i - j is clipped at 0 (future keys are masked anyway)."""
  i = q_start + jnp.arange(q_len)[:, None]
  j = k_start + jnp.arange(k_len)[None, :]
  return i, j, jnp.maximum(i - j, 0)


# ---------------------------------------------------------------------------------------------
# Absolute encodings (added to the token embeddings once).
# ---------------------------------------------------------------------------------------------
class LearnedAbsolute(LearnedPositions):
  """A learned embedding per position 0 .. max_len - 1 (common's LearnedPositions, the masked
  models' encoding, under the name this study reports); cannot represent longer inputs."""


def sinusoid(positions, dim: int, base: float = 10_000.0):
  half = dim // 2
  freqs = base ** (-jnp.arange(half) / half)
  angles = positions[:, None].astype(jnp.float32) * freqs[None, :]
  out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
  return jnp.pad(out, ((0, 0), (0, dim - 2 * half)))


class Sinusoidal(PositionEncoding):
  """The original Transformer's fixed sin/cos embedding."""
  ABSOLUTE: ClassVar[bool] = True

  def embed(self, x, positions):
    return x + sinusoid(positions, x.shape[-1]).astype(x.dtype)[None]


# ---------------------------------------------------------------------------------------------
# Rotary.
# ---------------------------------------------------------------------------------------------
class RoPE(PositionEncoding):
  """Rotary embedding; `interpolate` rescales positions by train_length / L beyond train_length
  (position interpolation, Chen et al. 2023), for evaluation past the training length."""
  base: float = 10_000.0
  train_length: int | None = None
  interpolate: bool = False

  def rotate(self, q, k, positions):
    length, dim = q.shape[1], q.shape[-1]
    pos = positions.astype(jnp.float32)
    if self.interpolate and self.train_length and length > self.train_length:
      pos = pos * (self.train_length / length)
    half = dim // 2
    freqs = self.base ** (-jnp.arange(half) / half)
    angles = pos[:, None] * freqs[None, :]                      # (L, D/2)
    cos, sin = jnp.cos(angles)[None, :, None, :], jnp.sin(angles)[None, :, None, :]

    def apply(x):
      x1, x2 = x[..., :half], x[..., half:2 * half]
      rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
      return jnp.concatenate([rotated, x[..., 2 * half:]], axis=-1).astype(x.dtype)

    return apply(q), apply(k)


# ---------------------------------------------------------------------------------------------
# Additive relative biases.
# ---------------------------------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> jnp.ndarray:
  """The geometric slopes 2^(-8 h / H), h = 1 .. H."""
  return 2.0 ** (-8.0 * jnp.arange(1, num_heads + 1) / num_heads)


def _alibi_bias(params, q_start, k_start, q_len, k_len):
  _, _, rel = _relative(q_start, k_start, q_len, k_len)
  return -params['slopes'][:, None, None] * rel.astype(jnp.float32)[None]


class ALiBi(PositionEncoding):
  """b_h(i, j) = -m_h (i - j) with fixed geometric slopes m_h."""
  num_heads: int = 4

  def bias(self, length):
    del length
    return _alibi_bias, {'slopes': alibi_slopes(self.num_heads)}


def _kerple_bias(params, q_start, k_start, q_len, k_len, *, kind):
  _, _, rel = _relative(q_start, k_start, q_len, k_len)
  rel = rel.astype(jnp.float32)[None]
  r1 = jax.nn.softplus(params['r1'])[:, None, None]
  if kind == 'log':
    r2 = jax.nn.softplus(params['r2'])[:, None, None]
    return -r1 * jnp.log1p(r2 * rel)
  r2 = 2.0 * jax.nn.sigmoid(params['r2'])[:, None, None]   # power in (0, 2)
  return -r1 * jnp.where(rel > 0, jnp.exp(r2 * jnp.log(jnp.maximum(rel, 1.0))), 0.0)


class Kerple(PositionEncoding):
  """Kerple (Chi et al., 2022): 'log' -r1 log(1 + r2 (i - j)), or 'power' -r1 (i - j)^r2,
  r1, r2 > 0 learnable per head (r2 < 2 for the power kernel)."""
  num_heads: int = 4
  kind: str = 'log'

  def setup(self):
    if self.kind not in ('log', 'power'):
      raise config_lib.ConfigError(f"Kerple kind must be 'log' or 'power', got {self.kind!r}.")
    inv_softplus_1 = math.log(math.e - 1.0)   # softplus(x) = 1
    self.r1 = self.param('r1', nn.initializers.constant(inv_softplus_1), (self.num_heads,))
    self.r2 = self.param('r2', nn.initializers.constant(inv_softplus_1 if self.kind == 'log'
                                                        else 0.0), (self.num_heads,))

  def bias(self, length):
    del length
    return functools.partial(_kerple_bias, kind=self.kind), {'r1': self.r1, 'r2': self.r2}


def t5_bucket(rel, num_buckets: int = 32, max_distance: int = 128):
  """T5's causal relative-position bucket of i - j >= 0: exact below num_buckets / 2, then
  logarithmic up to max_distance, then the last bucket."""
  exact = num_buckets // 2
  rel = jnp.maximum(rel, 0)
  log_bucket = exact + (jnp.log(jnp.maximum(rel, 1).astype(jnp.float32) / exact)
                        / math.log(max_distance / exact) * (num_buckets - exact)).astype(jnp.int32)
  return jnp.where(rel < exact, rel, jnp.minimum(log_bucket, num_buckets - 1))


def _t5_bias(params, q_start, k_start, q_len, k_len, *, num_buckets, max_distance):
  _, _, rel = _relative(q_start, k_start, q_len, k_len)
  return params['table'][:, t5_bucket(rel, num_buckets, max_distance)]


class T5Bias(PositionEncoding):
  """T5's relative bias: a learned scalar per head and log-spaced distance bucket."""
  num_heads: int = 4
  num_buckets: int = 32
  max_distance: int = 128

  def setup(self):
    self.table = self.param('table', nn.initializers.zeros_init(),
                            (self.num_heads, self.num_buckets))

  def bias(self, length):
    del length
    return (functools.partial(_t5_bias, num_buckets=self.num_buckets,
                              max_distance=self.max_distance), {'table': self.table})


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
# By name, from a config.
# ---------------------------------------------------------------------------------------------
ENCODINGS = ('nope', 'learned_absolute', 'sinusoidal', 'rope', 'rope_pi', 'alibi', 'kerple_log',
             'kerple_power', 't5', 'fire', 'fire_s', 'fire_no_log', 'fire_no_threshold',
             'fire_no_interpolation', 'fire_fixed_threshold', 'fire_random_positions')
# FIRE itself, trained with randomised positions (an extension: the experiment draws them,
# `training_positions`); evaluated at 0 .. L-1 like FIRE.
RANDOM_POSITIONS = ('fire_random_positions',)


def build(name: str, *, num_heads: int, train_length: int, max_len: int | None = None,
          fire: dict[str, Any] | None = None) -> dict[str, Any]:
  """The TransformerLM fields (`encoding`, `share_encoding`) for an encoding name.

  Args:
    name: one of ENCODINGS.
    num_heads: the model's heads (the bias's H); TransformerLM refuses a bias for other heads.
    train_length: the training sequence length (RoPE's interpolation; FIRE's default threshold).
    max_len: learned absolute's table size (default: train_length).
    fire: FIRE fields overriding the defaults (mlp_width, mlp_depth, init_c, init_threshold...).
  """
  if isinstance(num_heads, bool) or int(num_heads) != num_heads or num_heads < 1:
    raise config_lib.ConfigError(f'num_heads must be a positive integer (the model\'s heads), got '
                                 f'{num_heads!r}.')
  fire = dict(fire or {})
  fire.setdefault('init_threshold', float(train_length))
  partial = functools.partial
  table = {
      'nope': (None, False),
      'learned_absolute': (partial(LearnedAbsolute, max_len=max_len or train_length), False),
      'sinusoidal': (Sinusoidal, False),
      'rope': (partial(RoPE, train_length=train_length), False),
      'rope_pi': (partial(RoPE, train_length=train_length, interpolate=True), False),
      'alibi': (partial(ALiBi, num_heads=num_heads), False),
      'kerple_log': (partial(Kerple, num_heads=num_heads, kind='log'), False),
      'kerple_power': (partial(Kerple, num_heads=num_heads, kind='power'), False),
      't5': (partial(T5Bias, num_heads=num_heads), False),
      'fire': (partial(FIRE, num_heads=num_heads, **fire), False),
      'fire_s': (partial(FIRE, num_heads=num_heads, **fire), True),
      'fire_no_log': (partial(FIRE, num_heads=num_heads, **{**fire, 'log_transform': False}),
                      False),
      'fire_no_threshold': (partial(FIRE, num_heads=num_heads, **{**fire, 'threshold': False}),
                            False),
      'fire_no_interpolation': (partial(FIRE, num_heads=num_heads,
                                        **{**fire, 'interpolate': False}), False),
      'fire_fixed_threshold': (partial(FIRE, num_heads=num_heads,
                                       **{**fire, 'learn_threshold': False}), False),
      'fire_random_positions': (partial(FIRE, num_heads=num_heads, **fire), False),
  }
  if name not in table:
    raise config_lib.ConfigError(f'Unknown position encoding {name!r}'
                                 f'{config_lib.closest(name, ENCODINGS)}; available: '
                                 f'{list(ENCODINGS)}.')
  encoding, shared = table[name]
  return {'encoding': encoding, 'share_encoding': shared}
