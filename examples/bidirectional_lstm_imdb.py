"""Bidirectional LSTM on IMDB movie-review sentiment (the Keras example "Bidirectional
LSTM on IMDB"), with only the imports changed: two stacked Bidirectional(LSTM(64))
layers over 128-d word embeddings of the 20,000 most frequent words, reviews cut or
padded to 200 words.

    FASTNN_DATA=../shared/data python examples/bidirectional_lstm_imdb.py
"""
import numpy as np

import fastnn as keras
from fastnn import layers

max_features = 20000  # Only consider the top 20k words
maxlen = 200  # Only consider the first 200 words of each movie review


def build_model():
    # Input for variable-length sequences of integers
    inputs = keras.Input(shape=(maxlen,), dtype="int32")
    # Embed each integer in a 128-dimensional vector
    x = layers.Embedding(max_features, 128)(inputs)
    # Add 2 bidirectional LSTMs
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(64))(x)
    # Add a classifier
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def main(epochs=2, batch_size=32):
    model = build_model()
    model.summary()
    (x_train, y_train), (x_val, y_val) = keras.datasets.imdb.load_data(num_words=max_features)
    print(len(x_train), "Training sequences")
    print(len(x_val), "Validation sequences")
    # Use pad_sequence to standardize sequence length:
    # this will truncate sequences longer than 200 words and zero-pad sequences shorter than 200 words.
    x_train = keras.utils.pad_sequences(x_train, maxlen=maxlen)
    x_val = keras.utils.pad_sequences(x_val, maxlen=maxlen)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
              validation_data=(x_val, y_val))
    return model


if __name__ == "__main__":
    main()
