"""Datasets with Keras-shaped loaders: ``fastnn.datasets.mnist.load_data()``.

Files are looked for in an explicit ``path``, then ``$FASTNN_DATA/<dataset>``, then the
user cache ``~/.cache/fastnn/<dataset>`` (``$XDG_CACHE_HOME`` respected), and downloaded
into the cache when missing; every file is checked against its sha256.
"""
from . import imdb, mnist
from ._files import ChecksumMismatchError, DatasetNotFoundError, cache_dir, fetch

__all__ = ["mnist", "imdb", "fetch", "cache_dir", "DatasetNotFoundError", "ChecksumMismatchError"]
