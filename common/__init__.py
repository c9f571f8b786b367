"""The shared platform: mesh and sharding, the training loop, checkpoints, data, models, reports."""
