"""ResMem (Yang et al., 2023): a base model plus k-NN regression on its training residuals.

    from resmem import fit, tune, Memory, ResMem, knn
    from resmem import lm     # over a TransformerLM: LMMemory, build_memory, tune_resmem, ...
"""

from resmem import lm
from resmem.kernels import KnnError
from resmem.kernels import brute_force
from resmem.kernels import knn
from resmem.kernels import knn_sharded
from resmem.kernels import recall
from resmem.lm import LMMemory
from resmem.lm import LMMemoryError
from resmem.lm import build_memory
from resmem.memory import Memory
from resmem.memory import ResMem
from resmem.memory import ResMemError
from resmem.memory import fit
from resmem.memory import neighbour_weights
from resmem.memory import normalize
from resmem.memory import tune
