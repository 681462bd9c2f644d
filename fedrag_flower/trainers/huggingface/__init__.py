"""Trainers for Hugging Face generators and sentence-transformers retrievers."""

from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR, LSRTrainingArgs
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT, RALTTrainingArgs

__all__ = [
    "HuggingFaceTrainerForLSR",
    "HuggingFaceTrainerForRALT",
    "LSRTrainingArgs",
    "RALTTrainingArgs",
]
