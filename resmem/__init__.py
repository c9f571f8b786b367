"""ResMem (Yang et al., 2023): a base model plus k-NN regression on its training residuals.

    from resmem import fit, tune, Memory, ResMem, knn
"""

from resmem.kernels import KnnError, brute_force, knn, recall
from resmem.memory import (Memory, ResMem, ResMemError, fit, neighbour_weights, normalize,
                           tune)

__all__ = ['KnnError', 'Memory', 'ResMem', 'ResMemError', 'brute_force', 'fit', 'knn',
           'neighbour_weights', 'normalize', 'recall', 'tune']
