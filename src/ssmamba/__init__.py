"""SSMamba: a self-supervised hybrid state-space model for pathology image classification."""

__version__ = "0.1.0"
