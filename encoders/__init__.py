"""Contrastive (SimCLR) encoders and noise-trained base classifiers for randomized smoothing."""
