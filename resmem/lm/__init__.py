"""ResMem over a trained decoder-only LM (common.models.TransformerLM), and k-NN-LM beside it.

    memory = lm.build_memory(model, params, train_ids, context=64, path='/tmp/mem')  # in chunks
    val = lm.lm_outputs(model, params, val_ids, context=64)     # hidden, logits, targets, LM
    test = lm.lm_outputs(model, params, test_ids, context=64)
    nb_val, nb_test = lm.neighbours(memory, val, 32), lm.neighbours(memory, test, 32)
    kernel = lm.readout(params)                                 # (D, V): logits = hidden @ W
    best, grid = lm.tune_resmem(val, nb_val, kernel, ks=(1, 8, 32), sigmas=(0.1, None),
                                temperatures=(1.0, 2.0), floor=0.01)
    bits, correct = lm.resmem_bits(test, nb_test, kernel, floor=0.01, **best)  # per token
    best_knn, _ = lm.tune_knnlm(val, nb_val, ks=(8, 32), sigmas=(0.1,), lambdas=(0.1, 0.3))
    bits_knn, _ = lm.knnlm_bits(test, nb_test, **best_knn)

The key of a training position is the LM's last hidden state there (the final norm's output, the
readout's input), L2-normalised; its residual is the next token's one-hot minus the LM's softmax
at temperature T. ResMem predicts

    f(x) = softmax(g(x) / T) + sum_{j in N_k(x)} w_j(x) (e_{y_j} - softmax(g(x_j) / T)),
    w_j = exp(-||phi(x) - phi(x_j)|| / sigma), normalised over the k neighbours (sigma None:
    uniform).

Storage. A residual is V floats per training token (V = 259 bytes and specials: 1 GB at 1M
tokens). It is never stored: g(x_j) = h_j W with W the LM's readout (no bias) and h_j the hidden
state, which is the key (already stored, D floats) times its norm. So the memory holds the keys
(N, D) float32, the hidden-state norms (N,) and the next-token ids (N,): 8 bytes per token beyond
the keys, the residuals exact (float32, not a rounded softmax), and T is free to tune after the
memory is built. The readout belongs to the LM, which the memory's fingerprint pins.

A valid distribution. f sums to 1 but can go negative (a neighbour whose LM was confident in a
token that did not follow). Bits per byte need probabilities, so f is clipped from below at
`floor` times the base distribution softmax(g(x)/T) and renormalised: the memory may take away at
most (1 - floor) of the LM's probability of a token, never all of it. The clip is a no-op wherever
f >= floor * p, so ResMem with zero residuals returns the LM's distribution exactly.

`scale` (default 1, the paper's ResMem) multiplies the correction: f = p + scale * sum_j w_j r_j.
Below 1 it shrinks the memory's say, as lambda does in k-NN-LM; with scale = lambda the two differ
only by the term lambda * (p - sum_j w_j p_j), the neighbours' own LM predictions taken away.

k-NN-LM (Khandelwal et al., 2020), the best-known relative, on the same keys: p = lambda p_kNN +
(1 - lambda) p_LM with p_kNN(y) = sum_j w_j [y_j = y] (the same distance weights, sigma tuned;
the LM at T = 1).

Memories are built in chunks (fixed-shape batches of windows through one jitted forward pass),
optionally straight into .npy files on disk, and saved with their metadata (the LM's fingerprint,
key width, vocabulary, context). `LMMemory.load(path, mesh=)` lays the keys out over the mesh
from the files, each device reading its own rows: the database never sits in one host array.
The search is `resmem.kernels.knn` (one device) or `kernels.knn_sharded` (over the mesh).

Provenance. `lm_outputs` records the LM's fingerprint and its readout's (`kernel_fingerprint`)
with the arrays, and `neighbours` the memory's; `neighbours`, the ResMem and k-NN-LM scores and
the tuning refuse a memory, neighbours or readout kernel of another LM, naming both fingerprints.

The package, by what each module holds (everything is re-exported here: `from resmem import lm`):
  outputs.py   the LM: fingerprint, readout, forward pass, windows of text, `lm_outputs`
  store.py     the memory: `build_memory`, `LMMemory` (files, layout over a mesh, search, gather)
  predict.py   `neighbours`; the LM, ResMem and k-NN-LM as distributions and per-token scores
  tuning.py    `tune_resmem`, `tune_knnlm`, `best_of` on held-out text
"""

from resmem.lm.outputs import (LMMemoryError, LMOutputs, check_readout_of, check_same_lm,
                               fingerprint, forward, kernel_fingerprint, lm_outputs, model_fields,
                               readout, windows)
from resmem.lm.predict import (Neighbours, knnlm_bits, knnlm_grid, lm_bits, neighbours,
                               resmem_bits, resmem_grid, resmem_probs)
from resmem.lm.store import FORMAT, LMMemory, build_memory, check_k
from resmem.lm.tuning import best_of, tune_knnlm, tune_resmem

__all__ = ['FORMAT', 'LMMemory', 'LMMemoryError', 'LMOutputs', 'Neighbours', 'best_of',
           'build_memory', 'check_k', 'check_readout_of', 'check_same_lm', 'fingerprint',
           'forward', 'kernel_fingerprint', 'knnlm_bits', 'knnlm_grid', 'lm_bits', 'lm_outputs',
           'model_fields', 'neighbours', 'readout', 'resmem_bits', 'resmem_grid', 'resmem_probs',
           'tune_knnlm', 'tune_resmem', 'windows']
