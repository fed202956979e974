"""Workflows: multi-stage jobs built from the training, evaluation and model layers (e.g. ``benchmark``)."""
