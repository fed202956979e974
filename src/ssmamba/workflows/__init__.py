"""Workflows: multi-stage jobs built from the layers below, each one function the CLI calls.

``demo`` (pretrain -> fine-tune -> evaluate -> report), ``evaluate`` (a checkpoint on one split, with its report),
``probe`` (linear and kNN probes of a frozen encoder), ``mil_cv`` (MIL cross-validation and evaluation of saved
heads) and ``benchmark`` (leaderboards over seeds).
"""
