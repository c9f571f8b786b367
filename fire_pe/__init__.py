"""FIRE (Li et al., 2023): functional interpolation for relative positions, its ablations, the study.

    from fire_pe import FIRE, build
    from common.models.transformer import TransformerLM
    model = TransformerLM(vocab_size=259, **build('fire', num_heads=4, train_length=64))

The baselines the study compares with (RoPE, ALiBi, Kerple, T5, ...) are the platform's standard
encodings: common.models.positions.
"""

from fire_pe.encodings import (ENCODINGS, FIRE, FIRE_VARIANTS, build, fire_piecewise,
                               random_positions, training_positions)

__all__ = ['ENCODINGS', 'FIRE', 'FIRE_VARIANTS', 'build', 'fire_piecewise', 'random_positions',
           'training_positions']
