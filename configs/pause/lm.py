r"""Pause tokens: two small LMs pretrained with and without pauses, fine-tuned with and without.

    python -m pause.main --config=configs/pause/lm.py:cpu --workdir=/tmp/pause

Variants:
  cpu    2 layers, d 64, 4 heads; pretraining rows of 64 tokens (the docstring corpus with 30%
         algorithmic text), 400 Adam steps of 32 rows per model, M_pt = 6 (10%); fine-tuning on
         the mixture of count / count_long / add_2digit (tasks this model learns part of in the
         budget: digit_sum and 3-digit add stay at chance after 1,000 steps), 500 steps of 32 at
         lr 3e-3, 5 seeds at once (common.ensemble; seed m in the same data order in every
         setting, so differences are paired), M_ft = 8; exact match on up to 256 unseen test
         prompts per task, greedy KV-cache decoding; the diagnosis arms (pause embedding from the
         mean byte embedding, or frozen). 329 CPU-seconds (10 min 32 s wall on the shared 2-core
         machine; 3 seeds: 250 CPU-s). Intervals (95% Student-t over the 5 seeds of the per-seed
         difference, mean over tasks): half-widths 0.06-0.17 for differences against the
         baseline (count_long's seeds range 0.32-0.96), 0.02-0.06 between the StdPT_PauseFT arms;
         verdict inconclusive (the M_inf = 0 drop holds, 4 checks straddle their thresholds).
  tiny   the same pipeline at the least cost (the end-to-end test): 1 layer, d 16, rows of 32,
         4 steps each, 2 seeds.
  study  longer pretraining and fine-tuning, all five tasks, 5 seeds, the M_ft grid (2, 4, 16),
         pauses prepended and the diagnosis arms (not run here).
  c4     the real-scale configuration (not run here), for accelerators: C4 through TFDS ('c4/en'
         prepared as array_record: `tfds build c4/en --file_format=array_record`; a run without
         it stops before compute with that command), its pretraining rows streamed (two documents
         packed to a row of 2,049 tokens, read as their batch is needed: never the 195 GiB of
         100,000 x 256 rows in host memory; the pauses inserted into each row as it is read, by
         the in-memory path's pretrain_batch), length 2048, a 12-layer d 768 model with blockwise
         attention sharded FSDP, M_pt = 205, M_ft = 10. Per device (common.memory: the real steps
         compiled ahead of time on 8 fake CPU devices, mesh data 8): pretraining at batch 256 x
         2,049 64.5 GiB (state 0.12, activations and temporaries 64.3): fits H100 only (the
         activations divide over more data-parallel devices); with naive attention it was 202
         GiB, fitting none. Fine-tuning (common.ensemble: every device holds all 5 seeds' models,
         batch 128 x 257 each) 45.1 GiB (state 4.8): H100. Rehearsal: `python -m reproduce
         --rehearse --only=pause` (see config.rehearsal below).
"""

import ml_collections

from configs.common import loop

VARIANTS = ('cpu', 'tiny', 'study', 'c4')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  # Pretraining data: the docstring corpus mixed with algorithmic text (pause/tasks.py).
  config.corpus = 'stdlib_text'
  config.data_dir = ml_collections.config_dict.placeholder(str)   # TFDS's (c4)
  # 'memory': rows cut at random offsets of the corpus (read up to max_corpus_bytes) and of the
  # algorithmic text, held as a host array. 'stream': the corpus's documents (a TFDS text dataset
  # prepared as array_record, larger than a host) read as their batches are needed and packed
  # docs_per_row to a row (common.data.stream); no algorithmic text, max_corpus_bytes unused.
  config.train_input = 'memory'
  config.docs_per_row = 1
  config.max_corpus_bytes = 400_000
  config.algorithmic_fraction = 0.3     # share of pretraining rows cut from algorithmic text
  config.algorithmic_lines = 20_000
  config.pretrain_length = 64
  config.pretrain_pause_fraction = 0.1  # M_pt = round(0.1 * length)
  config.pause_positions = 'with_replacement'   # or 'distinct'
  config.model = ml_collections.ConfigDict({
      'num_layers': 2, 'd_model': 64, 'num_heads': 4, 'mlp_dim': 256, 'encoding': 'rope'})
  config.pretrain = loop.get_config(
      batch_size=32, total_steps=400, log_every_steps=100, checkpoint_every_steps=400,
      optimizer=loop.optimizer(learning_rate=3e-3, warmup_steps=50, grad_clip_norm=1.0))
  # Fine-tuning: a mixture of the downstream tasks, one model per setting and seed.
  config.tasks = ('count', 'count_long', 'add_2digit')
  config.train_examples_per_task = 4000
  config.test_examples_per_task = 256
  config.finetune_length = 32
  config.answer_tokens = 5              # decoded per prompt (the longest answer, 4, + EOS)
  config.num_pauses = 8                 # M_ft of the PauseFT settings (and M_inf = M_ft)
  config.mft_grid = ()                  # extra M_ft values for PausePT (the ablation)
  config.minf_grid = (0, 2, 4, 8)       # M_inf on the PausePT_PauseFT models
  config.ablations = ('filler',)
  # The diagnosis (issue 31): StdPT_PauseFT with the pause embedding set to the mean of the
  # trained byte embeddings ('mean_init') or frozen at its initial draw ('frozen'); the pause
  # embedding's norm, attention and residual measured on diagnosis_prompts test prompts.
  config.diagnosis_arms = ('mean_init', 'frozen')
  config.diagnosis_prompts = 96
  config.seeds = 5
  config.finetune = loop.get_config(
      batch_size=32, total_steps=500, log_every_steps=100, checkpoint_every_steps=500,
      optimizer=loop.optimizer(learning_rate=3e-3, warmup_steps=20, grad_clip_norm=1.0))
  config.finetune.ensemble = loop.ensemble(num_models=5)
  config.eval_batch_size = 256
  # The checks, stated before the run (pause/claims.py): each on the per-seed paired difference
  # of exact match (mean over tasks), decided by its 95% Student-t interval over seeds.
  config.checks = ml_collections.ConfigDict({
      'beats_margin': 0.0,       # PausePT_PauseFT minus StdPT_StdFT above this
      'about_margin': 0.03,      # StdPT_PauseFT minus baseline in +-this; filler minus it <= this
      'minf0_drop': 0.1,         # M_inf = M_ft minus M_inf = 0 at least this
      'recover_share': 0.5,      # the smallest M_inf > 0 recovers at least this share of the drop
      'floor': 0.05,             # both arms' exact match below this: the check is inconclusive
  })

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    # The end-to-end test: every setting, check and figure of the cpu variant, at the least cost
    # (one layer, short rows, a few steps; the settings compile the same programs, which the
    # process's compilation cache compiles once), on one device as the cpu variant runs in the
    # main job (the loops' sharding over devices is common's tests' and the rehearsal's).
    config.max_corpus_bytes = 20_000
    config.algorithmic_lines = 200
    config.pretrain_length = 32
    config.model = ml_collections.ConfigDict({
        'num_layers': 1, 'd_model': 16, 'num_heads': 2, 'mlp_dim': 32, 'encoding': 'rope'})
    config.pretrain.total_steps = 4
    config.pretrain.batch_size = 8
    config.pretrain.log_every_steps = 2
    config.pretrain.optimizer.warmup_steps = 0
    config.pretrain.num_devices = 1
    config.train_examples_per_task = 40
    config.test_examples_per_task = 8
    config.num_pauses = 4
    config.minf_grid = (0, 2)
    config.ablations = ('filler',)
    config.diagnosis_prompts = 6
    config.seeds = 2
    config.finetune.total_steps = 4
    config.finetune.batch_size = 8
    config.finetune.log_every_steps = 2
    config.finetune.optimizer.warmup_steps = 0
    config.finetune.num_devices = 1
    config.finetune.ensemble.num_models = 2
    config.finetune.ensemble.chunk_size = 2   # both seeds in one dispatch, without measuring
    config.eval_batch_size = 8
  elif variant == 'study':
    config.tasks = ('count', 'count_long', 'add_2digit', 'add', 'digit_sum')
    config.ablations = ('prepend', 'filler')
    config.finetune_length = 40
    config.pretrain.checkpoint_every_steps = 1000
    config.finetune.checkpoint_every_steps = 500
    config.max_corpus_bytes = 2_000_000
    config.pretrain.total_steps = 4000
    config.finetune.total_steps = 1500
    config.finetune.batch_size = 64
    config.mft_grid = (2, 4, 16)
    config.minf_grid = (0, 1, 2, 4, 8, 16)
    config.seeds = 5
    config.finetune.ensemble.num_models = 5
    config.test_examples_per_task = 1000
  elif variant == 'c4':
    config.corpus = 'c4/en'
    config.train_input = 'stream'      # 100,000 x 256 rows of 2,049 tokens: 195 GiB as one array
    config.docs_per_row = 2            # documents average ~2,200 bytes: two fill a 2,049 row
    config.algorithmic_fraction = 0.0
    config.pretrain_length = 2048
    config.model = ml_collections.ConfigDict({
        'num_layers': 12, 'd_model': 768, 'num_heads': 12, 'mlp_dim': 3072, 'encoding': 'rope',
        'attention': 'blockwise', 'block_size': 512})   # no 2048 x 2048 scores per head
    config.pretrain.batch_size = 256
    config.pretrain.total_steps = 100_000
    config.pretrain.sharding = 'fsdp'
    config.pretrain.optimizer.name = 'adamw'
    config.pretrain.optimizer.weight_decay = 0.1
    config.pretrain.optimizer.learning_rate = 1e-3
    config.pretrain.optimizer.warmup_steps = 2000
    config.pretrain.checkpoint_every_steps = 2000
    config.num_pauses = 10
    config.finetune_length = 256
    config.mft_grid = (2, 4, 16, 50)
    config.finetune.batch_size = 128
    config.finetune.total_steps = 10_000
    # The fine-tuning runs are a common.ensemble (seeds x settings): each model whole on its
    # devices (45.1 GiB a device, pause/memory.py); common.ensemble refuses 'fsdp' here.
    config.finetune.sharding = 'data'
    config.seeds = 5
    config.finetune.ensemble.num_models = 5
    config.test_examples_per_task = 5000
    # common.rehearsal (`python -m reproduce --rehearse --only=pause`): mock c4 streamed through
    # the real input path, the real model, meshes and shardings; 2 pretraining steps of 8 rows
    # per model, one seed fine-tuned 2 steps on one task in every setting (the first run stops
    # after 1, the second resumes), evaluated on 8 prompts. Rows of 256 tokens: at 2,048 the 8
    # fake devices' pretraining step needs 8 x 2.3 GiB of host memory (the AOT estimate at batch
    # 8). The fine-tuning ensemble holds the whole 85M-parameter model and its Adam state on
    # every device (3.6 GiB per device at batch 8, AOT): about 30 GiB on 8 fake devices, more
    # than a 24 GiB machine; on 1 fake device the rehearsal passes (257 s, peak 8.3 GiB with
    # MALLOC_ARENA_MAX=2). Memory: the pretraining step at the real batch, length and mesh.
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'c4/en', 'mock_examples': 64,
        'overrides': (
            ('pretrain.batch_size', 8), ('pretrain.total_steps', 2), ('pretrain_length', 256),
            ('pretrain.optimizer.warmup_steps', 1), ('pretrain.log_every_steps', 1),
            ('finetune.batch_size', 8), ('finetune.total_steps', 2),
            ('finetune.optimizer.warmup_steps', 1), ('finetune.log_every_steps', 1),
            ('seeds', 1), ('finetune.ensemble.num_models', 1), ('tasks', ('count',)),
            ('train_examples_per_task', 16), ('test_examples_per_task', 8),
            ('eval_batch_size', 8), ('diagnosis_prompts', 4), ('mft_grid', ()),
            ('minf_grid', (0,))),
        'first_run': (('finetune.total_steps', 1),),
        'memory': {'step': 'pause.memory:pretrain_step'},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config
