"""What the `<pause>` embedding does inside the model (issue 31, item 6).

A standard-pretrained model never saw a `<pause>`: its pause embedding is the initial draw
(normal(1.0) per coordinate), beside byte embeddings shaped by 400 pretraining steps. This module
measures, on test prompts followed by M pauses:

- `embedding_norm_ratio`: ||e_pause|| / the mean ||e_b|| over the byte ids of the pretraining rows;
- `attention_on_pauses`: the attention the last input position (where the first answer token is
  predicted) pays to the pause positions, mean over heads, layers and prompts (beside
  `uniform_share`, what equal attention over the causal window would give);
- `residual_norm_ratio`: the last layer's residual stream (before the final norm) at the pause
  positions over its norm at the prompt's positions, mean over prompts;

and builds the two diagnostic arms' starting weights: the pause embedding set to the mean of the
byte embeddings (`mean_byte_init`) and a loss whose gradient leaves it where it starts
(`freeze_pause`).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from common import mesh as mesh_lib
from common import report
from common.models import transformer
from pause import claims
from pause import pausing

SPECIAL = 'special_embed'


def seen_ids(rows: np.ndarray, vocab_size: int) -> np.ndarray:
  """The ordinary ids that occur in the pretraining rows (trained embeddings)."""
  ids = np.unique(np.asarray(rows))
  return ids[ids < vocab_size]


def mean_byte_init(params, ids: np.ndarray):
  """params with the pause embedding replaced by the mean of the embeddings of `ids`."""
  mean = jnp.mean(jnp.asarray(params['embed']['embedding'])[ids], axis=0)
  out = dict(params)
  out[SPECIAL] = jnp.broadcast_to(mean, params[SPECIAL].shape).astype(params[SPECIAL].dtype)
  return out


def freeze_pause(loss_fn):
  """loss_fn whose gradient with respect to the pause embedding is zero (Adam then leaves it)."""

  def frozen(params, *args):
    params = dict(params)
    params[SPECIAL] = jax.lax.stop_gradient(params[SPECIAL])
    return loss_fn(params, *args)

  return frozen


def embedding_norm_ratio(params, ids: np.ndarray, token: int = pausing.PAUSE_ID) -> float:
  """||e_token|| / mean ||e_b|| over `ids` (the pause's own embedding, or an ordinary token's)."""
  table = np.asarray(params['embed']['embedding'])
  embed = table[ids]
  pause = np.asarray(params[SPECIAL])[0] if token >= len(table) else table[token]
  return float(np.linalg.norm(pause) / np.mean(np.linalg.norm(embed, axis=-1)))


@functools.partial(jax.jit, static_argnums=0)
def _internals(model: transformer.TransformerLM, params, tokens):
  """(queries, keys, residuals) per layer: rotated q, k (B, L, H, D) and block outputs (B, L, d)."""
  found: dict[str, list] = {'rotate': [], 'query': [], 'key': [], 'block': []}

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module, method = context.module, context.method_name
    if method == 'rotate':
      found['rotate'].append(out)
    elif method == '__call__' and isinstance(module, transformer.Projection) and \
        module.name in ('query', 'key'):
      found[module.name].append(out)
    elif method == '__call__' and isinstance(module, transformer.DecoderBlock):
      found['block'].append(out)
    return out

  with nn.intercept_methods(interceptor):
    model.apply({'params': params}, tokens)
  if found['rotate']:
    qs, ks = [q for q, _ in found['rotate']], [k for _, k in found['rotate']]
  else:                                              # no rotation (NoPE): the projections
    qs, ks = found['query'], found['key']
  return qs, ks, found['block']


def pause_internals(model, params, prefixes, num_pauses: int, width: int,
                    token: int = pausing.PAUSE_ID) -> dict[str, float]:
  """The attention and residual measures on `prefixes` + `num_pauses` delay tokens (`token`:
  the pause, or the '.' filler) (module docstring)."""
  if num_pauses < 1:
    raise ValueError(f'num_pauses={num_pauses}: the measures need at least one pause.')
  rows = np.zeros((len(prefixes), width), np.int32)       # right padding: causal, never read
  lengths = np.zeros(len(prefixes), np.int64)
  for i, prefix in enumerate(prefixes):
    prompt = pausing.Delay(num_pauses, token=token).apply(prefix)
    rows[i, :len(prompt)], lengths[i] = prompt, len(prompt)
  qs, ks, blocks = mesh_lib.fetch(_internals(model, params, jnp.asarray(rows)))
  attention, residual, uniform = [], [], []
  for i, n in enumerate(lengths):
    pauses = slice(n - num_pauses, n)
    shares = []
    for q, k in zip(qs, ks):
      scores = np.einsum('hd,khd->hk', q[i, n - 1], k[i, :n]) / np.sqrt(q.shape[-1])
      weights = np.exp(scores - scores.max(-1, keepdims=True))
      weights /= weights.sum(-1, keepdims=True)
      shares.append(weights[:, pauses].sum(-1).mean())
    attention.append(np.mean(shares))
    uniform.append(num_pauses / n)
    norms = np.linalg.norm(blocks[-1][i, :n], axis=-1)
    residual.append(norms[pauses].mean() / norms[:n - num_pauses].mean())
  return {'attention_on_pauses': float(np.mean(attention)),
          'uniform_share': float(np.mean(uniform)),
          'residual_norm_ratio': float(np.mean(residual))}


def measure(model, params, prefixes, num_pauses: int, width: int, ids,
            token: int = pausing.PAUSE_ID) -> dict[str, Any]:
  return {'embedding_norm_ratio': embedding_norm_ratio(params, ids, token),
          **pause_internals(model, params, prefixes, num_pauses, width, token)}


def prompts(config, test_data) -> list[np.ndarray]:
  """config.diagnosis_prompts test prefixes, taken from the tasks in turn."""
  out, i = [], 0
  while len(out) < config.diagnosis_prompts and i < config.test_examples_per_task:
    out.extend(test_data[t][i][0] for t in config.tasks if i < len(test_data[t]))
    i += 1
  return out[:config.diagnosis_prompts]


def cell(values) -> str:
  if len(values) == 1:
    return f'{values[0]:.3f} (one model)'
  gap = claims.interval(values)
  return f'{gap["mean"]:.3f} [{gap["low"]:.3f}, {gap["high"]:.3f}]'


def summary_table(config, table, measures) -> tuple[dict[str, Any], Any]:
  """numbers['diagnosis'] and the 'Diagnosis: ...' table: per arm, its exact match against the
  baseline and against StdPT_PauseFT (paired by seed), and the pause embedding's measures."""
  names = list(config.tasks)
  base = claims.per_seed(table[claims.BASELINE], names)
  plain = claims.per_seed(table['StdPT_PauseFT'], names) if 'StdPT_PauseFT' in table else None
  numbers, rows = {}, []
  keys = ('embedding_norm_ratio', 'attention_on_pauses', 'uniform_share', 'residual_norm_ratio')
  for arm, per_seed in measures.items():
    entry = {k: [round(x[k], 4) for x in per_seed] for k in keys}
    row = [arm]
    if arm in table:
      em = claims.per_seed(table[arm], names)
      entry['minus_baseline'] = [round(float(x), 4) for x in em - base]
      row.append(cell(em - base))
      if plain is not None and arm != 'StdPT_PauseFT':
        entry['minus_StdPT_PauseFT'] = [round(float(x), 4) for x in em - plain]
        row.append(cell(em - plain))
      else:
        row.append('-')
    else:
      row += ['-', '-']
    row += [cell(entry[k]) for k in keys]
    rows.append(row)
    numbers[arm] = entry
  title = (f'Diagnosis: the <pause> embedding (M = {config.num_pauses} delay tokens, <pause> or '
           f"the filler's '.', after {config.diagnosis_prompts} test prompts; mean [95% interval "
           f'over {config.seeds} seeds])')
  return numbers, report.table(
      title, ['arm', 'EM minus StdPT_StdFT', 'EM minus StdPT_PauseFT',
              '|e_delay| / mean |e_byte|', 'attention on the delay (answer position)',
              'uniform share', 'residual norm at the delay / at the prompt'], rows)
