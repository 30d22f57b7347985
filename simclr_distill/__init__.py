"""simclr_distill: SimCLR-S2 stage 3 (knowledge distillation) and the stages around it."""

__version__ = "0.1.0"
