"""Training every stage shares: the trainer, KD settings along the chain, the loss map, KD recovery."""
