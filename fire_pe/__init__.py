"""FIRE (Li et al., 2023): functional interpolation for relative positions, its ablations, the study.

    from fire_pe import FIRE, build
    from common.models.transformer import TransformerLM
    model = TransformerLM(vocab_size=259, **build('fire', num_heads=4, train_length=64))

The baselines the study compares with (RoPE, ALiBi, Kerple, T5, ...) are the platform's standard
encodings: common.models.positions.
"""

from fire_pe.encodings import ENCODINGS
from fire_pe.encodings import FIRE
from fire_pe.encodings import FIRE_VARIANTS
from fire_pe.encodings import build
from fire_pe.encodings import fire_piecewise
from fire_pe.encodings import random_positions
from fire_pe.encodings import training_positions
