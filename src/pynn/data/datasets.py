"""The datasets shipped in pynn/data/files (see the README there for sources)."""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    file: str
    kind: str          # "tabular", "timeseries" or "images"
    task: str          # "regression" or "classification"
    target: str        # label column
    description: str


DATASETS = {
    d.name: d
    for d in [
        DatasetInfo("diabetes", "diabetes.csv", "tabular", "regression", "progression",
                    "442 patients, 10 clinical features -> disease progression after one year"),
        DatasetInfo("iris", "iris.csv", "tabular", "classification", "species",
                    "150 flowers, 4 measurements -> one of 3 species"),
        DatasetInfo("digits", "digits.csv.gz", "images", "classification", "label",
                    "1797 handwritten digits, 8x8 grey images -> 0-9"),
        DatasetInfo("sunspots", "sunspots.csv", "timeseries", "regression", "sunspots",
                    "yearly mean sunspot number 1700-2008 (309 steps)"),
    ]
}


def _path(info: DatasetInfo):
    return resources.files("pynn.data").joinpath("files", info.file)


def info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(DATASETS))}") from None


def load(name: str):
    """The dataset as a pandas DataFrame (digits: columns pixel_0..pixel_63 and label)."""
    import pandas as pd  # imported here so that `import pynn` needs no pandas

    meta = info(name)
    with resources.as_file(_path(meta)) as p:
        if meta.file.endswith(".gz"):
            with gzip.open(p, "rt") as f:
                raw = np.loadtxt(f, delimiter=",", dtype=np.int64)
            cols = [f"pixel_{i}" for i in range(raw.shape[1] - 1)] + ["label"]
            return pd.DataFrame(raw, columns=cols)
        return pd.read_csv(p)


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 [N, 1, 8, 8] scaled to [0, 1], labels as int64 [N]."""
    df = load("digits")
    x = df.drop(columns="label").to_numpy(np.float32).reshape(-1, 1, 8, 8) / 16.0
    return x, df["label"].to_numpy(np.int64)
