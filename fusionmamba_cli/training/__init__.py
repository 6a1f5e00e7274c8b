"""Unsupervised training of FusionMamba (paper section 3.6): losses, data, the training loop."""
