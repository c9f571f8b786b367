"""Models shared by the papers, built by name from a config: `models.build(config.model, ...)`."""

from __future__ import annotations

import ml_collections

from common import config_lib
from common.models.mlp import MLP
from common.models.resnet import ResNet

MODELS = {'mlp': MLP, 'resnet': ResNet}


def build(config: ml_collections.ConfigDict, num_outputs: int):
  """`config.name` picks the class; the other fields are its attributes."""
  kwargs = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
  name = kwargs.pop('name', None)
  if name not in MODELS:
    raise config_lib.ConfigError(
        f'Unknown model {name!r}{config_lib.closest(str(name), MODELS)}; available: '
        f'{sorted(MODELS)}.')
  cls = MODELS[name]
  fields = set(cls.__dataclass_fields__) - {'parent', 'name'}
  for key in kwargs:
    if key not in fields:
      raise config_lib.ConfigError(
          f'Model {name!r} has no field {key!r}{config_lib.closest(key, fields)}; fields: '
          f'{sorted(fields)}.')
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  return cls(num_outputs=num_outputs, **kwargs)
