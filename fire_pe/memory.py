"""Per-device memory of the study's train step at a variant's real batch, length and mesh.

    config.rehearsal.memory = {'step': 'fire_pe.memory:train_step', 'encoding': 'fire'}

The step is the one fire_pe.lm.train_encoding hands the common loop (fire_pe.lm.train_functions:
the same TransformerLM with that encoding, the same loss), compiled ahead of time by
common.memory.train_step at config.loop.batch_size rows of config.train_length + 1 tokens over
config.loop.mesh with config.loop.sharding. Nothing is allocated.
"""

from __future__ import annotations

from common import memory
from fire_pe import lm


def train_step(config, spec, devices=None) -> memory.Estimate:
  """common.memory.Estimate of encoding `spec.encoding` (default 'fire')'s train step."""
  name = spec.get('encoding', 'fire')
  _, init_fn, loss_fn = lm.train_functions(config, name)
  m = config.model
  note = (f'fire_pe {name} LM ({m.num_layers} layers, d {m.d_model}, {m.attention} attention), '
          f'train length {config.train_length}, {config.loop.sharding} sharding')
  return memory.train_step(config.loop, init_fn, loss_fn, lm.train_batch_shapes(config), devices,
                           note=note)
