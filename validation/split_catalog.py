"""Writes one part (train / val / test) of an aion-finetune run's split as its own catalogue, so
that the held-out objects can be run through the other tools (the README's demo predicts the
redshifts of the bundled model's test galaxies, which it never saw in training).

    validation/.venv/bin/python validation/split_catalog.py \
        --run data/models/sdss-photoz-tiny --catalog data/sdss_mgs/sdss_mgs_train.h5 \
        --part test --out data/sdss_mgs/sdss_mgs_test_split.h5

Every dataset of the catalogue is copied with the rows of `<run>/split.json`'s part, in
ascending row order (object ids included, so outputs can be matched to the full catalogue).
"""

import argparse
import json

import h5py
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="aion-finetune output directory (split.json)")
    ap.add_argument("--catalog", required=True, help="the run's catalogue (one file)")
    ap.add_argument("--part", default="test", choices=["train", "val", "test"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    with open(f"{a.run}/split.json") as f:
        rows = np.sort(np.asarray(json.load(f)[a.part], dtype=np.int64))
    with h5py.File(a.catalog, "r") as src, h5py.File(a.out, "w") as dst:
        for name, ds in src.items():
            if not isinstance(ds, h5py.Dataset):
                continue
            if ds.shape[0] <= rows.max():
                raise SystemExit(f"{a.catalog}: dataset {name} has {ds.shape[0]} rows, split needs {rows.max() + 1}")
            dst.create_dataset(name, data=ds[...][rows])
        dst.attrs["source"] = f"{a.catalog}, rows of the '{a.part}' part of {a.run}/split.json"
    print(f"wrote {a.out}: {len(rows)} rows ({a.part} part of {a.run})")


if __name__ == "__main__":
    main()
