r"""The depth law of maximal-update learning rates (Jelassi et al., arXiv 2305.07810).

    python -m mup_depth.main --config=configs/mup_depth/sweep.py:cpu --workdir=/tmp/mup_depth

Variants:
  cpu    the main job's run: (A) n in {256, 512, 1024}, L in {2..64}, 64 seeds, batch 8, the
         linearised estimator (the claim's); standard-parameterisation contrast (same seeds,
         L in {4, 16}); (B) mnist1d training check, n = 256, L in {4, 8, 16, 32}, 21 learning
         rates, one epoch. 379 CPU-seconds (user + sys, from scratch; 24 min wall beside ~8
         other jobs on 2 cores; 250 CPU-s with 32 seeds). Intervals (95% bootstrap over the 64
         seeds): exponent in L over L >= 8 about +-0.05 wide (-1.66 [-1.70, -1.60]), in n
         about +-0.08 ([-0.15, 0.00]); over L >= 16 about +-0.08; local exponents between
         consecutive depths +-0.03 (2 -> 4) to +-0.2 (32 -> 64), per width up to +-0.4.
  study  the exact (applied-step) estimator beside the linearised one, 128 seeds (intervals about
         1/sqrt(2) as wide), the diagnosis down to L >= 32; hours on 2 cores (not run for the
         README).
  tiny   the same, shrunk for tests: n in {64, 128}, L in {4, 8, 16}, 8 seeds, exact and
         linearised; the contrast through the sweep's compiled programs; 8 large compiles.
  paper  n up to 4096, L up to 128, 128 seeds, the diagnosis down to L >= 64: for an
         accelerator. Its largest cell (n = 4096, L = 128: 7.9 GiB of parameters a seed, one
         seed per chunk), compiled ahead of time (common.memory via mup_depth.memory): 55.6 GiB
         on one device (the sweep runs on one; it is not split over a mesh): fits H100 only.
         Each (n, L) cell is saved under workdir/cells as it finishes: a stopped run resumes.
         Rehearsal: `python -m reproduce --rehearse --only=mup_depth`.
"""

import ml_collections


VARIANTS = ('cpu', 'study', 'tiny', 'paper')  # get_config args (tests build each)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or 'cpu'
  config = ml_collections.ConfigDict()
  config.sweep = ml_collections.ConfigDict({
      'widths': (256, 512, 1024), 'depths': (2, 4, 8, 16, 32, 64), 'num_seeds': 32,
      'batch_size': 8, 'input_dim': 64, 'threshold': 1.0, 'exact': True, 'seed': 0})
  config.fit_min_depth = 8
  config.num_bootstrap = 1000
  # The standard parameterisation (readout variance 1/n): eta* smaller and not flat in n.
  config.contrast = ml_collections.ConfigDict({
      'enabled': True, 'widths': (256, 512, 1024), 'depths': (4, 16), 'num_seeds': 32,
      'batch_size': 8, 'input_dim': 64, 'threshold': 1.0, 'exact': False, 'seed': 0})
  config.training = ml_collections.ConfigDict({
      'enabled': True, 'dataset': 'mnist1d',
      'dataset_kwargs': ml_collections.ConfigDict({'num_samples': 5000}),
      'width': 256, 'depths': (4, 8, 16, 32), 'base_depth': 4, 'lr_min': 0.01,
      'lr_max': 1000.0, 'num_lrs': 21, 'batch_size': 32, 'epochs': 1, 'seed': 0})
  # The fits the diagnosis reports beside the deciding one (fit_min_depth): the exponent in L by
  # the smallest depth in the fit, to show a finite-depth correction settle.
  config.diagnosis_min_depths = (2, 4, 8, 16)
  # The thresholds of every check (mup_depth/claims.py), as the claim states them (fixed before
  # any run, not tuned to one): the fitted exponents' 95% intervals must lie inside these ranges.
  config.checks = ml_collections.ConfigDict({
      'exponent_L': (-1.65, -1.35),
      'exponent_n': (-0.1, 0.1),
      # informational: the share of depths where the L^-3/2-scaled rate beats the fixed one.
      'transfer_win_fraction': 0.5,
  })

  if variant == 'cpu':
    # 64 seeds: the per-seed change A is heavy-tailed (one seed of 32 carried up to 41% of a
    # cell's sum at L >= 32), the budget holds twice the card's 32 (see the docstring).
    config.sweep.num_seeds = 64
    config.contrast.num_seeds = 64
    # Without the exact estimator. Two widths (256, 512) would halve the time but leave the
    # exponent in n undetermined (-0.25, interval [-0.70, 0.14], in a measured run): keep three.
    config.sweep.exact = False
  elif variant == 'study':
    # The exact estimator beside the linearised one, twice the seeds (intervals ~1/sqrt(2) as
    # wide), and the diagnosis down to L >= 32 (two depths, 32 and 64).
    config.sweep.num_seeds = 128
    config.contrast.num_seeds = 128
    config.diagnosis_min_depths = (2, 4, 8, 16, 32)
  elif variant == 'tiny':
    # Every compiled program counts here (compiling is most of the test's time): two widths
    # (the exponent in n), two depths >= fit_min_depth (the exponent in L) and the contrast's
    # depth; the contrast measures as the sweep does (same seeds, same estimator), so both
    # parameterisations run through one compiled program per (n, L).
    config.sweep.widths = (64, 128)
    config.sweep.depths = (4, 8, 16)
    config.sweep.num_seeds = 8
    config.num_bootstrap = 50
    config.contrast.widths = (64, 128)
    config.contrast.depths = (4, 8)  # two depths: the contrast's exponent in n is fitted
    config.contrast.num_seeds = config.sweep.num_seeds
    config.contrast.exact = config.sweep.exact
    config.training.width = 32
    config.training.depths = (2, 4)
    config.training.base_depth = 2
    config.training.num_lrs = 5
    config.training.dataset_kwargs.num_samples = 600
    config.diagnosis_min_depths = (4, 8)
  elif variant == 'paper':
    config.sweep.widths = (1024, 2048, 4096)
    config.sweep.depths = (4, 8, 16, 32, 64, 128)
    config.sweep.num_seeds = 128
    config.contrast.widths = config.sweep.widths
    config.contrast.num_seeds = config.sweep.num_seeds
    config.diagnosis_min_depths = (4, 8, 16, 32, 64)
    # common.rehearsal: the paper's two smaller widths at depths 4, 8, 16, 2 seeds (the exact
    # estimator beside the linearised one; the contrast at its depths 4 and 16, linearised), the
    # training check at its real width over
    # two depths and three rates on 600 mnist1d signals. The first run measures depths 8 and 16
    # only; the second reads those cells back from workdir/cells and measures L = 4. No TFDS
    # dataset is read (Gaussian inputs; mnist1d generated locally). Memory: the measurement at
    # the largest cell, n = 4096, L = 128.
    config.rehearsal = ml_collections.ConfigDict({
        'dataset': None, 'mock_examples': 0,
        'overrides': (('sweep.widths', (1024, 2048)), ('sweep.depths', (4, 8, 16)),
                      ('sweep.num_seeds', 2), ('contrast.widths', (1024, 2048)),
                      ('contrast.num_seeds', 2), ('num_bootstrap', 20),
                      ('diagnosis_min_depths', (4, 8)), ('training.depths', (4, 8)),
                      ('training.num_lrs', 3), ('training.dataset_kwargs.num_samples', 600)),
        'first_run': (('sweep.depths', (8, 16)), ('diagnosis_min_depths', (8,))),
        'memory': {'step': 'mup_depth.memory:sweep_step'},
    })
  else:
    raise ValueError(f'Unknown variant {variant!r}; use one of {VARIANTS}.')
  config.lock()
  return config
