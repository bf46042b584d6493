"""Embedding backbones shared by every learner (Conv4 of Vinyals et al. 2016 / Finn et al. 2017, an MLP, and the text encoders TextCNN, BagOfEmbeddings and TextTransformer)."""

from rnnmeta.nets.batchnorm import (
    QUERY_BN_MODES,
    batch_norm_layers,
    check_query_bn,
    reference_batch_norm,
    require_batch_statistics,
)
from rnnmeta.nets.conv4 import Conv4
from rnnmeta.nets.factory import backbone_features, backbone_spec, default_backbone, resolve_backbone
from rnnmeta.nets.mlp import MLP
from rnnmeta.nets.text import BagOfEmbeddings, TextCNN, TextTransformer, text_mask

__all__ = [
    "QUERY_BN_MODES",
    "BagOfEmbeddings",
    "Conv4",
    "MLP",
    "TextCNN",
    "TextTransformer",
    "backbone_features",
    "backbone_spec",
    "batch_norm_layers",
    "check_query_bn",
    "default_backbone",
    "reference_batch_norm",
    "require_batch_statistics",
    "resolve_backbone",
    "text_mask",
]
