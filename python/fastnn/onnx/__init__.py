"""ONNX export and import (needs the optional onnx package: pip install "fastnn[onnx]").

``fn.onnx.export(model, path, opset=17)`` writes a Sequential, Functional or subclassed
fastnn model as an ONNX file of standard operators with a dynamic batch axis;
``fn.onnx.load(path)`` reads an ONNX file into a fastnn model (see the two functions).
"""
from __future__ import annotations

__all__ = ["export", "load"]


def export(model, path=None, opset: int = 17):
    """Write `model` as an ONNX file at `path` (a str or os.PathLike; None: do not write)
    and return the ModelProto.

    Every built-in layer has a converter: Dense, Conv1D/2D, pooling (max, average,
    global), BatchNormalization (inference form), LayerNormalization, Embedding and
    PositionalEmbedding, MultiHeadAttention, TransformerEncoder, activations, Dropout
    (identity), Flatten, Reshape, merges, Rescaling, ZeroPadding2D, UpSampling2D, LSTM,
    GRU, SimpleRNN and Bidirectional; the elementwise fastnn.ops and matmul of subclassed
    models. Padding masks become tensors computed from the token ids. The batch axis is
    dynamic ("N"). Raises ValueError listing the layers that have no converter, and for
    the cases not supported yet (a recurrent layer over a padding mask, initial_state
    inputs). opset >= 17 (LayerNormalization)."""
    from ._export import export_model

    if int(opset) < 17:
        raise ValueError(f"fastnn.onnx.export: opset must be >= 17 (LayerNormalization), got {opset}")
    return export_model(model, path, int(opset))


def load(path):
    """Read an ONNX file into a fastnn Functional model (see fastnn.onnx._import).

    Attention blocks (fastnn's own exports, torch's nn.MultiheadAttention and
    nn.TransformerEncoderLayer) become MultiHeadAttention layers; see
    fastnn.onnx._fused and docs/interop.md. Quantized products (fastnn's int8 exports,
    ONNX Runtime's quantize_dynamic output and quantize_static QDQ output) become int8
    Dense/Conv2D layers, as fastnn.quantization makes them; see fastnn.onnx._quant_import.
    Raises ValueError naming the operators or nodes fastnn cannot import."""
    from ._import import load_model

    return load_model(path)
