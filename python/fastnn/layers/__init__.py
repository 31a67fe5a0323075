"""Layers (Keras names). Each maps a batch (N, ...) to a batch; see base.Layer."""
from .base import Layer, register
from .conv import Conv2D
from .conv1d import Conv1D, Convolution1D
from .pooling1d_local import AveragePooling1D, AvgPool1D, MaxPool1D, MaxPooling1D
from .dropout_spatial import SpatialDropout1D, SpatialDropout2D
from .merge import (Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract, add, average,
                    concatenate, maximum, minimum, multiply, subtract)
from .pooling_global_max import (GlobalMaxPool1D, GlobalMaxPool2D, GlobalMaxPooling1D,
                                 GlobalMaxPooling2D)
from .reshaping import Rescaling, UpSampling2D, ZeroPadding2D
from .core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Reshape
from .attention import MultiHeadAttention, TransformerEncoder
from .embedding import Embedding, PositionalEmbedding
from .normalization import BatchNormalization
from .normalization_layer import LayerNormalization
from .pooling1d import GlobalAveragePooling1D, GlobalAvgPool1D
from .recurrent import GRU, LSTM, SimpleRNN
from .bidirectional import Bidirectional
from .pooling import (AveragePooling2D, AvgPool2D, GlobalAveragePooling2D, GlobalAvgPool2D,
                      MaxPool2D, MaxPooling2D)

__all__ = ["Layer", "register", "Activation", "Dense", "Dropout", "Flatten", "Input",
           "InputLayer", "Reshape", "Conv2D", "MaxPooling2D", "AveragePooling2D",
           "GlobalAveragePooling2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D",
           "BatchNormalization", "Embedding", "PositionalEmbedding", "LayerNormalization",
           "MultiHeadAttention", "TransformerEncoder", "GlobalAveragePooling1D",
           "GlobalAvgPool1D", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
           "Concatenate", "add", "subtract", "multiply", "average", "maximum", "minimum",
           "concatenate", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPool1D",
           "GlobalMaxPool2D", "Rescaling", "ZeroPadding2D", "UpSampling2D", "SpatialDropout1D",
           "SpatialDropout2D", "LSTM", "GRU", "SimpleRNN", "Bidirectional",
           "Conv1D", "Convolution1D", "MaxPooling1D", "AveragePooling1D", "MaxPool1D", "AvgPool1D"]
