"""FIRE (Li et al., 2023): functional interpolation for relative positions, and its baselines.

    from fire_pe import FIRE, build
    from common.models.transformer import TransformerLM
    model = TransformerLM(vocab_size=259, **build('fire', num_heads=4, train_length=64))
"""

from fire_pe.encodings import (ALiBi, ENCODINGS, FIRE, Kerple, LearnedAbsolute, NoPE, RoPE,
                               Sinusoidal, T5Bias, alibi_slopes, build, random_positions,
                               t5_bucket, training_positions)

__all__ = ['ALiBi', 'ENCODINGS', 'FIRE', 'Kerple', 'LearnedAbsolute', 'NoPE', 'RoPE',
           'Sinusoidal', 'T5Bias', 'alibi_slopes', 'build', 'random_positions', 't5_bucket',
           'training_positions']
