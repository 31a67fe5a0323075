"""Saving helpers with Keras' names: load_model, and register_keras_serializable for
custom layers, models and losses (so a saved file can name their class)."""
from __future__ import annotations

from .layers.base import register
from .models import load_model


def register_keras_serializable(package: str = "Custom", name: str | None = None):
    """Class decorator: ``@fastnn.saving.register_keras_serializable()``. The class is
    saved under ``package>name`` (name defaults to the class name) and found again by
    load_model; its get_config() must return its constructor arguments."""
    def deco(cls):
        return register(cls, name=f"{package}>{name or cls.__name__}")
    return deco


__all__ = ["load_model", "register_keras_serializable"]
