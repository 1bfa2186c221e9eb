"""Training every stage shares: the trainer, distillation against a teacher (the loss of each phase, KD
settings along the chain), the teacher's targets (soft targets, augmented rows), KD recovery after a cut,
and quantization-aware training."""
