"""ResMem (Yang et al., 2023): a base model plus k-NN regression on its training residuals.

    from resmem import fit, tune, Memory, ResMem, knn
    from resmem import lm     # over a TransformerLM: LMMemory, build_memory, tune_resmem, ...
"""

from resmem import lm
from resmem.kernels import KnnError, brute_force, knn, knn_sharded, recall
from resmem.lm import LMMemory, LMMemoryError, build_memory
from resmem.memory import (Memory, ResMem, ResMemError, fit, neighbour_weights, normalize,
                           tune)

__all__ = ['KnnError', 'LMMemory', 'LMMemoryError', 'Memory', 'ResMem', 'ResMemError',
           'brute_force', 'build_memory', 'fit', 'knn', 'knn_sharded', 'lm', 'neighbour_weights',
           'normalize', 'recall', 'tune']
