"""The encoder's architecture: layer maps and shapes, physical removal of heads and neurons, checkpoints, base models."""
