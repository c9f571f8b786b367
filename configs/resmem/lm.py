r"""ResMem over byte-level language models: the LM alone, ResMem and k-NN-LM on the same keys.

    python -m resmem.main --config=configs/resmem/lm.py:cpu --workdir=/tmp/resmem_lm

Variants:
  cpu   the embedded docstring corpus (stdlib_text): two NoPE Transformer LMs trained with the
        common loop on its first 1,048,577 bytes at context 64: 'small' (1 layer, d 32, 300 Adam
        steps of 32 windows: underfits) and 'large' (2 layers, d 64, 4 heads, 800 steps; the
        fire_pe study's size); a memory of every one of the 1,048,576 training positions per LM;
        k, sigma, T (ResMem) and k, sigma, lambda (k-NN-LM) tuned on 8,192 held-out bytes that
        follow the training text; accuracy and bits per byte on 16,384 bytes of the test split.
        222 CPU-seconds (user + sys, from scratch). The checks' intervals are mean +- 2 paired
        standard errors over the test bytes (one seed): in the recorded run se = 0.0029 for the
        small LM's accuracy gain (interval half-width 0.006) and 0.0037 for the difference of the
        two LMs' gains (half-width 0.007). The numbers: resmem/README.md (a block generated from
        results/cpu/resmem_lm.json).
  tiny  context 16, two LMs trained 15 and 30 steps, a 4,992-position memory (the test).
  c4    C4 ('c4/en', prepared with `tfds build c4/en --file_format=array_record`): LMs of 4 x 256
        and 12 x 768 at context 512, trained on streamed rows; a memory of 16M training positions
        written to disk in chunks and laid out over the mesh's 'data' axis from the files (never
        one host array), searched sharded: for accelerators. Per device (common.memory: the
        large LM's step at the real batch 256 x 512 compiled ahead of time on 8 fake CPU
        devices): 40.4 GiB (almost all activations and temporaries, CPU compilation): fits H100
        only; the small LM's 2.6 GiB. The large memory's keys (16M x 768 float32, 48 GB) add
        6 GB a device over 8. Rehearsal: `python -m reproduce --rehearse --only=resmem_lm`.

The checks (stated here, before any run; thresholds in `config.checks`): next-token accuracy
decides (the paper's metric), against the LM at its own temperature tuned on the held-out text
(the grid's scale 0). For the underfitting LM (`checks.underfit`) ResMem - LM test accuracy must be
> 0 with mean - 2 se above it; gain(underfit) - gain(`checks.larger`), paired over the same test
bytes, likewise. Reported beside them (informational): bits per byte against the tuned LM,
ResMem against k-NN-LM on the same keys, and ResMem with its correction scaled.
"""

import ml_collections

from configs.common import loop

placeholder = ml_collections.config_dict.placeholder


def _model(num_layers, d_model, num_heads, mlp_dim, total_steps, learning_rate):
  return ml_collections.ConfigDict({
      'num_layers': num_layers, 'd_model': d_model, 'num_heads': num_heads, 'mlp_dim': mlp_dim,
      'total_steps': total_steps, 'learning_rate': learning_rate})


VARIANTS = ('cpu', 'tiny', 'c4')  # get_config args (tests build each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.experiment = 'lm'          # resmem.main runs resmem.lm_experiment for this config
  config.dataset = 'stdlib_text'
  config.data_dir = placeholder(str)
  # The LM trains on train_split and the memory holds its positions (the paper's memory is the
  # training set); val_split tunes the hyper-parameters; test_split is reported.
  config.train_split = 'train[:1048577]'
  config.val_split = 'train[1048577:]'
  config.test_split = 'test'
  config.max_train_bytes = placeholder(int)   # read at most this much of a TFDS split
  config.max_eval_bytes = placeholder(int)
  config.context = 64
  config.memory_tokens = 1_048_576            # training positions in the memory (>= 1M)
  config.val_tokens = 8_192
  config.test_tokens = 16_384                 # the checks' standard errors shrink as 1/sqrt
  config.forward_batch = 256                  # windows per chunk of the memory build
  config.models = ml_collections.ConfigDict({
      'small': _model(1, 32, 2, 64, 300, 3e-3),
      'large': _model(2, 64, 4, 256, 800, 3e-3),
  })
  config.model_names = ('small', 'large')
  # The checks, stated before any run (the only place their thresholds live). Accuracy decides:
  # ResMem - LM (at the LM's tuned T) over the test tokens, its interval mean +- se_multiple x
  # the paired standard error, must be > accuracy_gain_min for `underfit`; gain(underfit) -
  # gain(larger), paired the same way, must be > shrink_min.
  config.checks = ml_collections.ConfigDict({
      'underfit': 'small', 'larger': 'large', 'accuracy_gain_min': 0.0, 'shrink_min': 0.0,
      'se_multiple': 2.0})
  # Training (common.train); total_steps and learning_rate come from each model.
  config.loop = loop.get_config(
      batch_size=32, total_steps=1, log_every_steps=100, eval_every_steps=0,
      checkpoint_every_steps=1000,
      optimizer=loop.optimizer(learning_rate=3e-3, warmup_steps=50, grad_clip_norm=1.0))
  config.train_input = 'memory'               # or 'stream' (TFDS documents packed into rows)
  config.docs_per_row = 1
  # The validation grid. ResMem: k, sigma (None: uniform weights), T; k-NN-LM: k, sigma, lambda.
  config.tune = ml_collections.ConfigDict({
      'ks': (1, 2, 4, 8, 16, 32), 'sigmas': (0.01, 0.03, 0.1, 0.3, 1.0, None),
      'temperatures': (0.75, 1.0, 1.5, 2.0), 'lambdas': (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)})
  # ResMem's output is clipped at floor x the base distribution and renormalised (resmem/lm/).
  config.floor = 0.01
  config.knn = ml_collections.ConfigDict({'query_block': 256, 'db_block': 65536, 'mode': 'exact'})
  # Shard the memory's keys over the loop mesh's 'data' axis (from files on disk) and search
  # them sharded; off on one CPU.
  config.shard_memory = False

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.context = 16
    config.train_split = 'train[:5001]'
    config.val_split = 'train[5001:10000]'
    config.memory_tokens = 5_000
    config.val_tokens = 512
    config.test_tokens = 512
    config.forward_batch = 32
    config.models = ml_collections.ConfigDict({
        'small': _model(1, 16, 2, 32, 15, 3e-3),
        'large': _model(1, 32, 2, 64, 30, 3e-3)})
    config.loop.log_every_steps = 15
    config.loop.optimizer.warmup_steps = 0
    config.tune = ml_collections.ConfigDict({
        'ks': (1, 8), 'sigmas': (0.1, None), 'temperatures': (1.0, 2.0), 'lambdas': (0.3,)})
  elif variant == 'c4':
    config.dataset = 'c4/en'
    config.train_split = 'train'
    config.val_split = 'validation[:50%]'
    config.test_split = 'validation[50%:]'
    config.train_input = 'stream'             # the LMs train on streamed rows
    config.docs_per_row = 1
    config.max_train_bytes = 16_777_300       # the memory's text: the start of the train split
    config.max_eval_bytes = 2_000_000
    config.context = 512
    config.memory_tokens = 16_777_216         # 16M positions: 16 GB (small) / 48 GB (large) keys
    config.val_tokens = 262_144
    config.test_tokens = 1_048_576
    config.forward_batch = 256
    config.models = ml_collections.ConfigDict({
        'small': _model(4, 256, 4, 1024, 20_000, 1e-3),
        'large': _model(12, 768, 12, 3072, 100_000, 1e-3)})
    config.loop.batch_size = 256
    config.loop.optimizer.name = 'adamw'
    config.loop.optimizer.weight_decay = 0.1
    config.loop.optimizer.warmup_steps = 2000
    config.loop.sharding = 'fsdp'
    config.loop.checkpoint_every_steps = 2000
    config.loop.device_data_max_mb = 0
    config.knn = ml_collections.ConfigDict({'query_block': 1024, 'db_block': 65536,
                                            'mode': 'approx'})
    config.shard_memory = True
    # common.rehearsal: both LMs at their real sizes, trained 2 steps of batch 8 at context 128
    # on mock c4 (512 documents of 10-20 bytes a split; the first run stops at step 1, the
    # second resumes), a memory of 4,096 positions sharded over the 8 fake devices and searched
    # sharded (approximate top-k), tuned and scored on 1,024 tokens, the grids cut to a value or
    # two. At context 512 the 8 fake devices' activations of the 12-layer LM would take ~14 GB
    # of host memory (fire_pe's c4 took 11 GB at 512). Memory: the large LM's step at the real
    # batch 256 x 512 and mesh.
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'c4/en', 'mock_examples': 512,
        'overrides': (('models.small.total_steps', 2), ('models.large.total_steps', 2),
                      ('loop.batch_size', 8), ('loop.optimizer.warmup_steps', 1),
                      ('loop.log_every_steps', 1), ('loop.checkpoint_every_steps', 1),
                      ('context', 128), ('memory_tokens', 4096), ('val_tokens', 1024),
                      ('test_tokens', 1024), ('forward_batch', 8), ('tune.ks', (1, 4)),
                      ('tune.sigmas', (None,)), ('tune.temperatures', (1.0,)),
                      ('tune.lambdas', (0.3,))),
        'first_run': (('models.small.total_steps', 1), ('models.large.total_steps', 1)),
        'memory': {'step': 'resmem.lm_experiment:train_step_memory', 'model': 'large'},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config
