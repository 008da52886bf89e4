"""Synthesised training data (FDD): filters that keep a grown data set clean."""
