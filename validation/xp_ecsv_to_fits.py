"""Converts Gaia XP_CONTINUOUS ECSV files (as the Gaia archive's datalink serves them) to FITS
tables the tools read with `--survey gaia`: array columns (bp_coefficients, …), which ECSV
stores as JSON strings and astropy reads as object columns, become fixed-length vector columns.

    validation/.venv/bin/python validation/xp_ecsv_to_fits.py XP.ecsv [XP2.ecsv …]

writes XP.fits beside each input (an existing output is not replaced). Used for
data/raw/gaia/XP_CONTINUOUS-Gaia_DR3_5937083312263887616.fits; docs/surveys.md ("Gaia").
"""

import os
import sys

import numpy as np
from astropy.table import Table


def convert(path):
    out = os.path.splitext(path)[0] + ".fits"
    if os.path.exists(out):
        sys.exit(f"{out} exists; not replaced")
    t = Table.read(path, format="ascii.ecsv")
    for c in t.colnames:
        if t[c].dtype == object:
            t[c] = np.stack([np.asarray(v, dtype=np.float64) for v in t[c]])
    t.write(out)
    print(f"wrote {out}: {len(t)} rows, {len(t.colnames)} columns")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        convert(p)
