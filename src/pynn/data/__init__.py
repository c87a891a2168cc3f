"""Embedded datasets: pynn.data.load(name), pynn.data.DATASETS."""
from .datasets import DATASETS, info, load, load_digits

__all__ = ["DATASETS", "info", "load", "load_digits"]
