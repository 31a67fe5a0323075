"""Layers (Keras names). Each maps a batch (N, ...) to a batch; see base.Layer."""
from .base import Layer, register
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape

__all__ = ["Layer", "register", "Activation", "Dense", "Dropout", "Flatten", "Input",
           "InputLayer", "Reshape"]
