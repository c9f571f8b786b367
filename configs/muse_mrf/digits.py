r"""MarkovGen: a class-conditional masked-token model on digit tokens, sampled with T = 8, T = 4 and
T = 4 whose last step is the MRF layer.

    python -m muse_mrf.main --config=configs/muse_mrf/digits.py:cpu --workdir=/tmp/muse_mrf

Variants:
  cpu          sklearn digits (8 x 8) quantised to 8 grey levels: 64 tokens per image, codebook 8;
               a 3-layer d 64 bidirectional transformer with a class token (MaskGIT cosine
               masking, label smoothing 0.1); a dense 3 x 3 MRF (5 mean-field iterations) trained
               on the frozen backbone at late-stage masking rates; an MLP scorer on the tokenised
               real digits, 500 held out from it as the FD floor. Samplers: plain T in
               (2, 4, 6, 8, 12), MRF T in (2, 4, 6), the MRF with its pairwise term zeroed at
               T = 4; 500 samples each for each of 5 sampler seeds (paired: the samplers of a
               seed share its key). The checks' intervals are 95% Student-t over the 5 seeds
               (t = 2.78): about +-0.013 in class accuracy differences, +-0.1 to +-0.2 in FD
               differences at T = 4 (+-0.4 to +-0.5 at T = 2) and +-0.15 in the FD-excess
               ratio (they cover the sampling, not the training of the backbone, the MRF or the
               scorer, each trained once). About 205 CPU-seconds (2 cores, shared). Its numbers:
               results/cpu/muse_mrf.json and the README's generated block.
  tiny         the same pipeline in seconds (the end-to-end test).
  kmeans       the cpu variant on k-means VQ tokens of 2 x 2 patches (a 4 x 4 grid, 32 codes).
  study        the diagnosis' regime (issue 31): the digits upsampled 2x (16 x 16, bilinear) and
               tokenised as k-means VQ of 2 x 2 patches, 64 codes (an 8 x 8 grid of patch tokens
               whose neighbours must join up), plain T in (2, 4, 8), MRF T = 4, 3 sampler seeds
               (t = 4.30: intervals about +-0.02 in accuracy, +-0.3 to +-0.7 in FD); the rest
               as cpu. 167 CPU-seconds (115 s user + 52 s system). Whether plain T = 4 loses quality against T = 8 there, and what
               the MRF and its pairwise term do: the README's "Why it does not reproduce here".
  imagenet256  ImageNet 256 x 256 through a trained VQ autoencoder (f = 16: 16 x 16 tokens,
               codebook 8192), a 24-layer d 768 backbone (MaskGIT's size), a low-rank (r = 64)
               MRF: for accelerators, not run here. ImageNet is streamed (array_record; each
               image resized and cropped to 256 as it is read; the tokenizer encodes each batch
               as it is needed). Per device (muse_mrf.memory, compiled ahead of time on 8 fake
               devices at batch 256): backbone step 40.95 GiB (temporaries 40.7): H100 only;
               MRF step 4.12, tokenizer step 6.18. Rehearsal: `python -m reproduce --rehearse
               --only=muse_mrf` needs more host memory than a 24 GiB machine on 8 fake devices:
               the backbone's step at batch 8 needs 2.20 GiB a device (the FSDP-gathered
               24-layer backbone and its gradients on every device), 17.6 GiB for the 8 in one
               host.
"""

import ml_collections

from configs.common import loop

VARIANTS = ('cpu', 'tiny', 'kmeans', 'study', 'imagenet256')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = 'digits'
  config.dataset_kwargs = ml_collections.ConfigDict()
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.train_split = 'train'
  config.test_split = 'test'
  # 'memory': the splits loaded as arrays and tokenised up front. 'stream': read batch by batch
  # (common.data.stream; TFDS datasets prepared as array_record), every image resized and
  # cropped to image_size x image_size, tokens computed per batch (muse_mrf.inputs; VQ only).
  config.input = 'memory'
  config.image_size = ml_collections.config_dict.placeholder(int)
  # Images upsampled by this factor (bilinear) before tokenising: 2 gives digits a 16 x 16 grid.
  config.upsample = 1
  # Tokenizer: 'grey' (pixel -> K levels), 'kmeans' (p x p patches), 'vq' (trained VQ-VAE).
  config.tokenizer = ml_collections.ConfigDict({
      'kind': 'grey', 'levels': 8, 'codebook_size': 32, 'patch': 2,
      'embed_dim': 32, 'width': 64, 'num_downsamples': 2, 'beta': 0.25})
  config.tokenizer_loop = loop.get_config(
      batch_size=64, total_steps=1000, optimizer=loop.optimizer(learning_rate=1e-3))
  # The backbone: common.models.MaskedTokenTransformer.
  config.model = ml_collections.ConfigDict({
      'num_layers': 3, 'd_model': 64, 'num_heads': 4, 'mlp_dim': 256, 'attention': 'naive'})
  config.mask_schedule = 'cosine'       # MaskGIT's and Muse's (its arccos rate density); 'linear'
  config.label_smoothing = 0.1
  config.backbone = loop.get_config(
      batch_size=32, total_steps=1200, log_every_steps=200, checkpoint_every_steps=600,
      optimizer=loop.optimizer(learning_rate=1e-3, warmup_steps=100, grad_clip_norm=1.0))
  # The MRF layer and its training on the frozen backbone.
  config.mrf_layer = ml_collections.ConfigDict({
      'window': 3, 'iterations': 5, 'num_kernels': 1,
      'rank': ml_collections.config_dict.placeholder(int)})   # None: dense compatibility
  config.mrf_r_range = (0.5, 0.95)      # late-stage masking: gamma(r) from 0.71 down to 0.08
  config.mrf = loop.get_config(
      batch_size=32, total_steps=400, log_every_steps=100, checkpoint_every_steps=400,
      optimizer=loop.optimizer(learning_rate=1e-2, warmup_steps=50))
  # The scorer: a classifier on tokenised real images (common.classifier).
  config.scorer = loop.get_config(batch_size=128, total_steps=600, log_every_steps=200,
                                  checkpoint_every_steps=600,
                                  optimizer=loop.optimizer(learning_rate=1e-3))
  config.scorer_model = ml_collections.ConfigDict({'name': 'mlp', 'widths': (128, 32)})
  # Training images the scorer never sees (the split's last ones): scored like a sampler, they
  # give the Frechet distance's floor. As many as a sampler draws (10 classes x per_class), so
  # the floor has the samplers' sample-size bias.
  config.scorer_holdout = 500
  # Sampling.
  # Every sampler draws per_class x classes samples for each of `seeds` sampler seeds (the
  # samplers of one seed share its key); the checks' intervals are Student-t over these seeds.
  config.sampling = ml_collections.ConfigDict({
      'per_class': 50, 'tau': 4.5, 'plain_steps': (2, 4, 6, 8, 12), 'mrf_steps': (2, 4, 6),
      'mrf_fill': 'sample', 'seeds': 5,
      'classes': ml_collections.config_dict.placeholder(int)})   # the first this many; None: all
  # The checks, stated before the run (muse_mrf/scoring.py: make_checks). FDs are read as their
  # excess over the floor (held-out real images scored like a sampler).
  config.checks = ml_collections.ConfigDict({
      'reference_steps': 8,
      'fast_steps': 4,
      'acc_margin': 0.05,             # MRF-4 accuracy - 8-step accuracy >= -0.05
      'fd_ratio_vs_reference': 1.25,  # MRF-4 FD excess <= 1.25 x 8-step FD excess
      'fd_ratio_vs_plain': 0.8,       # MRF-4 FD excess <= 0.8 x plain-4's ("clearly better")
      'acc_gain_vs_plain': 0.0,       # MRF-4 accuracy - plain-4 accuracy >= 0
      'calls_ratio': 0.6,             # backbone calls MRF-4 <= 0.6 x 8-step (exact)
      'wall_ratio': 0.67,             # wall time MRF-4 <= 0.67 x 8-step ("1.5x faster"; shown)
  })

  if variant == 'cpu':
    pass
  elif variant == 'tiny':
    config.model.update({'num_layers': 1, 'd_model': 32, 'mlp_dim': 64})
    config.backbone.total_steps = 20
    config.backbone.batch_size = 32
    config.backbone.log_every_steps = 10
    config.backbone.optimizer.warmup_steps = 0
    config.mrf.total_steps = 10
    config.mrf.batch_size = 16
    config.mrf.log_every_steps = 5
    config.mrf.optimizer.warmup_steps = 0
    config.scorer.total_steps = 20
    config.scorer.log_every_steps = 10
    config.scorer_model.widths = (32, 16)
    config.tokenizer_loop.total_steps = 5
    config.sampling.per_class = 4
    config.scorer_holdout = 40
    config.sampling.plain_steps = (4, 8)
    config.sampling.mrf_steps = (4,)
    config.sampling.seeds = 2
  elif variant == 'kmeans':
    config.tokenizer.kind = 'kmeans'
  elif variant == 'study':
    config.upsample = 2
    config.tokenizer.kind = 'kmeans'
    config.tokenizer.codebook_size = 64
    config.sampling.plain_steps = (2, 4, 8)
    config.sampling.mrf_steps = (4,)
    config.sampling.seeds = 3
  elif variant == 'imagenet256':
    config.dataset = 'imagenet2012'
    config.train_split = 'train'
    config.test_split = 'validation'
    config.input = 'stream'
    config.image_size = 256
    config.tokenizer.update({'kind': 'vq', 'codebook_size': 8192, 'embed_dim': 256, 'width': 128,
                             'num_downsamples': 4})
    config.tokenizer_loop = loop.get_config(
        batch_size=256, total_steps=500_000, sharding='fsdp', checkpoint_every_steps=5000,
        optimizer=loop.optimizer(learning_rate=1e-4, warmup_steps=5000))
    config.model = ml_collections.ConfigDict({
        'num_layers': 24, 'd_model': 768, 'num_heads': 16, 'mlp_dim': 3072, 'attention': 'naive'})
    config.backbone = loop.get_config(
        batch_size=256, total_steps=1_500_000, sharding='fsdp', checkpoint_every_steps=5000,
        log_every_steps=500, optimizer=loop.optimizer(
            name='adamw', learning_rate=1e-4, warmup_steps=5000, weight_decay=0.045,
            grad_clip_norm=1.0))
    config.mrf_layer.rank = 64
    config.mrf = loop.get_config(
        batch_size=256, total_steps=20_000, sharding='fsdp', checkpoint_every_steps=2000,
        optimizer=loop.optimizer(learning_rate=1e-3, warmup_steps=500))
    config.scorer = loop.get_config(
        batch_size=1024, total_steps=100_000, sharding='fsdp', checkpoint_every_steps=5000,
        optimizer=loop.optimizer(name='momentum', learning_rate=0.4, warmup_steps=5000,
                                 weight_decay=5e-5))
    config.scorer_model = ml_collections.ConfigDict({
        'name': 'resnet', 'ndim': 2, 'width': 64, 'stage_sizes': (2, 2, 2, 2), 'norm': 'batch',
        'stem_strides': 2})
    config.sampling.per_class = 50
    config.scorer_holdout = 50_000    # 1,000 classes x 50
    config.sampling.plain_steps = (4, 8, 12, 16, 24)
    config.sampling.mrf_steps = (4, 8, 16)
    # common.rehearsal: every phase through its real path (streamed mock imagenet2012 of random
    # sizes resized to 256, the real VQ, backbone, MRF and scorer shapes, the real mesh) with
    # batches of 8, a few steps each, 2 samples per sampler (2 classes x 1) at T in (1, 2); the
    # first run stops the MRF at step 2 and the second resumes it to 4. Memory: the tokenizer,
    # backbone and MRF steps at their real batch (256) and mesh (the largest is reported).
    sizes = lambda loop, steps: ((f'{loop}.batch_size', 8), (f'{loop}.total_steps', steps),
                                 (f'{loop}.optimizer.warmup_steps', 1),
                                 (f'{loop}.log_every_steps', 1),
                                 (f'{loop}.checkpoint_every_steps', 2))
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': 'imagenet2012', 'mock_examples': 24,
        'overrides': (sizes('tokenizer_loop', 2) + sizes('backbone', 2) + sizes('mrf', 4)
                      + sizes('scorer', 2)
                      + (('scorer_holdout', 4), ('sampling.per_class', 1),
                         ('sampling.classes', 2), ('sampling.seeds', 2),
                         ('sampling.plain_steps', (1, 2)), ('sampling.mrf_steps', (1,)),
                         ('checks.reference_steps', 2), ('checks.fast_steps', 1))),
        'first_run': (('mrf.total_steps', 2),),
        'memory': {'step': 'muse_mrf.memory:train_steps', 'num_classes': 1000},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config
