"""Data: readers, few-shot splits and preprocessing."""

from sabma.data.fashion_mnist import load_fashion_mnist
from sabma.data.idx import read_idx
from sabma.data.preprocess import preprocess_images
from sabma.data.splits import FewShotSplit, few_shot_split

__all__ = ["FewShotSplit", "few_shot_split", "load_fashion_mnist", "preprocess_images", "read_idx"]
