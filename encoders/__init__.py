"""Contrastive (SimCLR) encoders and noise-trained base classifiers for randomized smoothing.

The RUSH recipe ("Robust Contrastive Learning via Randomized Smoothing",
arXiv 2207.05127): pre-train an encoder with SimCLR, then train a classifier on it with Gaussian
noise augmentation, and certify it with :mod:`certify`.

Public API::

    import encoders
    model = encoders.load_classifier("digits-sigma0.25")   # or a checkpoint path
    model, metadata = encoders.load_model("models/cifar10/resnet110/noise_0.25/checkpoint.pth.tar")
    encoders.read_metadata("digits-sigma0.25")["sigma"]     # 0.25
    encoders.list_pretrained()                              # ["digits-sigma0.12", ...]
    encoders.pretrained_name("digits", 0.25)                # "digits-sigma0.25"
    from encoders.data import load_dataset, DATASET_NAMES
"""

from encoders.checkpoint import CheckpointError, list_pretrained, pretrained_name, read_metadata
from encoders.data import DATASET_NAMES, DatasetError, load_dataset
from encoders.loading import LoadedModel, load_classifier, load_model

__all__ = [
    "DATASET_NAMES",
    "CheckpointError",
    "DatasetError",
    "LoadedModel",
    "list_pretrained",
    "load_classifier",
    "load_dataset",
    "load_model",
    "pretrained_name",
    "read_metadata",
]
