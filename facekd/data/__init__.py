"""Labeled face sets, splits, synthetic face storage, augmentation and per-network preprocessing."""
