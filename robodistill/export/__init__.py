"""Export a trained run's student to an artifact directory (graphs, contract, parity) for the torch-free runtime."""
