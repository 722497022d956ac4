"""Pure functions on models and tensors: sparsity and description length, locality, AGOP / patch-AGOP, (C)NFA."""
