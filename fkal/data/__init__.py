"""Data: the protocol registry, one module per source, and the biased split.

  protocol.py  Schedule, DatasetSpec and ``DATASETS`` (the numbers of each dataset's protocol), ``get_spec``
  sources.py   TensorSource (images in memory), RawData (a dataset as stored), RandomCropFlip
  mnist.py     MNIST (IDX files)           svhn.py   SVHN (.mat files)       cifar.py   CIFAR-10/100 (pickles)
  folder.py    image-folder trees (ImageNet), decoded by torchvision or by DALI on the run's GPU
  caltech.py   Caltech-101 (an image folder, one fixed seeded train / test split, decoded once into memory)
  files.py     what the loaders share: missing-data errors, the md5 check
  split.py     the seeded biased split of one run (Split, make_split, the imbalance rules by name) and ALData
"""
from .protocol import DATASETS, DatasetSpec, Schedule, get_spec, load_raw
from .sources import RandomCropFlip, RawData, TensorSource
from .split import ALData, Split, check_request, make_split

__all__ = ["ALData", "DATASETS", "DatasetSpec", "RandomCropFlip", "RawData", "Schedule", "Split", "TensorSource",
           "check_request", "get_spec", "load_raw", "make_split"]
