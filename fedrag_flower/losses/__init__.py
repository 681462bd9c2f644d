"""The training objectives: one loss per file, and the shared token scoring."""

from fedrag_flower.losses.lsr import LSRLoss, lm_target_distribution
from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.losses.scoring import collate, target_log_probs

__all__ = ["LSRLoss", "RALTLoss", "collate", "lm_target_distribution", "target_log_probs"]
