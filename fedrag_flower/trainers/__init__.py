"""Trainers: the same code runs in the library and in each Flower site."""

from fedrag_flower.trainers.result import TrainResult

__all__ = ["TrainResult"]
