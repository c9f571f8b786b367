"""The training loop's own fields (common.train reads these and nothing else of a config).

Experiment configs compose it: the reference classifier's config is this plus its data and model
fields; a paper whose model is not a classifier keeps it as `config.loop`:

    config.loop = loop.get_config(batch_size=32, total_steps=1500)

Durations are `total_steps` or `total_epochs` (one of them); cadences are in steps.
"""

import ml_collections

placeholder = ml_collections.config_dict.placeholder


def optimizer(**overrides) -> ml_collections.ConfigDict:
  """common.train.make_optimizer's fields."""
  config = ml_collections.ConfigDict({
      'name': 'adam',            # sgd | momentum | adam | adamw
      'learning_rate': 1e-3,
      'schedule': 'cosine',      # constant | cosine | linear (over total_steps, after warmup)
      'warmup_steps': 0,
      'weight_decay': 0.0,       # decoupled for adamw, coupled L2 otherwise
      'momentum': 0.9,
      'grad_clip_norm': placeholder(float),
  })
  config.update(overrides)
  return config


def get_config(**overrides) -> ml_collections.ConfigDict:
  """The loop config with its defaults; `overrides` sets top-level fields (e.g. batch_size=32)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 128
  # Set total_steps or total_epochs (one of them); common.config_lib.num_steps turns epochs into
  # steps in one place.
  config.total_steps = placeholder(int)
  config.total_epochs = placeholder(float)
  config.optimizer = optimizer()

  # Cadence.
  config.log_every_steps = 50
  config.eval_every_steps = 0        # 0: evaluate at the end only
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 2

  # Devices: the mesh (one size may be -1), how parameters shard, how many devices to use.
  config.mesh = (('data', -1), ('model', 1))
  config.sharding = 'data'           # replicated | data | fsdp | tensor | fsdp_tensor
  # Or the rules themselves, which then replace the strategy: ((logical axis, mesh axis), ...).
  config.sharding_rules = placeholder(tuple)
  config.num_devices = -1
  config.device_data_max_mb = 256    # in-memory training sets up to this size live on the devices

  # Re-running a workdir resumes it; a checkpoint made under other values of the fields that
  # determine the result is refused unless this is set (a larger total_steps always continues).
  config.resume_despite_changes = False
  for key, value in overrides.items():
    config[key] = value
  return config


def ensemble(num_models: int = 8, **overrides) -> ml_collections.ConfigDict:
  """common.ensemble's section (`config.ensemble`): M models trained at once.

  model_axis: the mesh axis the models spread over (each device trains M / its size of them);
  chunk_size: models per device in one dispatch of the step; 0 chooses it for the backend and the
  model (common.ensemble.choose_chunk: all of them on accelerators; on CPU about 2.5e8 FLOPs per
  dispatch, one at a time for convolutional models). On CPU a dispatch runs its models one after
  another through one compiled single-model program, so the result is bit-identical whatever the
  chunk and a resumed run may change it; on accelerators the models are vmapped, the float order
  depends on the chunk, and a resume under another chunk is refused (the run's identity).
  """
  config = ml_collections.ConfigDict({'num_models': num_models, 'model_axis': 'model',
                                      'chunk_size': 0})
  config.update(overrides)
  return config
