"""The IMDB transformer classifier in PyTorch, as fastnn builds it in bench/train_imdb.py
and bench/scaling.py: token + learned position embedding, post-norm
nn.TransformerEncoderLayer blocks (batch_first, layer-norm epsilon 1e-3 as Keras) with a
padding mask for token 0, masked average pooling, Dropout, Linear(20) + ReLU, Dropout,
Linear(2) (logits, for nn.CrossEntropyLoss).
"""
from __future__ import annotations


def build_model(vocab, maxlen, embed_dim, heads, ff_dim, blocks, dropout):
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, embed_dim)
            self.pos = nn.Embedding(maxlen, embed_dim)
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(embed_dim, heads, ff_dim, dropout,
                                           batch_first=True, layer_norm_eps=1e-3)
                for _ in range(blocks))
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, 20), nn.ReLU(),
                                      nn.Dropout(dropout), nn.Linear(20, 2))

        def forward(self, ids):
            pad = ids == 0
            h = self.tok(ids) + self.pos.weight[None, : ids.shape[1]]
            for b in self.blocks:
                h = b(h, src_key_padding_mask=pad)
            keep = (~pad).float()[..., None]
            h = (h * keep).sum(1) / keep.sum(1).clamp(min=1.0)
            return self.head(h)

    return Net()
