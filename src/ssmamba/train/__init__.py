"""Training: MAMIM pretraining (stage 1) and supervised fine-tuning (stage 2).

Each run's set-up (``pretrain.py``, ``finetune.py``) is separate from the per-step engine (``engine.py``) and from
the pieces both share: optimiser groups and schedule (``optim.py``), reproducible data order (``sampling.py``),
checkpoints and resume (``checkpoint.py``) and plots (``plots.py``).
"""
