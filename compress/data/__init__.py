"""Task data: reading tasks, tokenising and batching, augmentation."""
