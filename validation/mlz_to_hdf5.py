"""Converts an MLZ photometric-redshift text file into an HDF5 catalogue for the aion tools.

    validation/.venv/bin/python validation/mlz_to_hdf5.py SDSS_MGS.train out.h5

Datasets (first axis = object): object_id (row number), Z, mag_u..mag_z, magerr_u..magerr_z,
color_ug, color_gr, color_ri, color_iz and colorerr_ug..colorerr_iz, as float32. These are
the dataset names the SDSS modalities of `configs/finetune/sdss-photoz-tiny.toml` (and the
bundled model `data/models/sdss-photoz-tiny/`) read by default.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_sample_catalogs import mlz_columns, write  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mlz", help="MLZ text file (19 columns)")
    ap.add_argument("out", help="output HDF5 file")
    a = ap.parse_args()
    write(a.out, mlz_columns(a.mlz))


if __name__ == "__main__":
    main()
