"""Builds the bundled sample catalogues in `data/` from the real survey data kept beside the
project (`../shared/data`, see data/README.md for origin and licences).

    validation/.venv/bin/python validation/make_sample_catalogs.py [--shared ../shared/data] [--out data]

Every output is a Multimodal-Universe-style HDF5 file (first axis = object, MMU dataset names):
  sdss_mgs/sdss_mgs_train.h5  5000 SDSS Main Galaxy Sample galaxies: mag_u..mag_z (extinction
                              corrected model magnitudes), magerr_u..magerr_z, the MLZ colours
                              color_ug..color_iz (+ colorerr_*), Z (spectroscopic)
  legacysurvey/piczl_dr10.h5  50 Legacy Survey DR10 galaxies: FLUX_G/R/I/Z/W1-W4 (observed
                              nanomaggies = dereddened flux x MW transmission), SHAPE_E1/E2,
                              EBV (from the g-band MW transmission), ra, dec, Z (spectroscopic)
  desi/desi_one.h5            1 DESI DR1 spectrum, B/R/Z arms merged on the 0.8 A grid
                              (spectrum_flux/ivar/lambda/mask, 7781 px) + its LS photometry + Z
  gaia/gaia_dr3_cone.h5       50 Gaia DR3 sources: phot_g/bp/rp_mean_flux, parallax, ra, dec
  gaia/gaia_xp_one.h5         1 Gaia DR3 source with its XP coefficients: coeff (1,110) = BP|RP
"""

import argparse
import json
import os

import h5py
import numpy as np
from astropy.io import fits

# Legacy Survey DR9/DR10 extinction coefficient for DECam g (A_g = 3.214 E(B-V)).
R_G = 3.214


def write(path, columns):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in columns.items():
            f.create_dataset(k, data=v)
    print(f"wrote {path}: {len(next(iter(columns.values())))} rows, {len(columns)} datasets")


def mlz_columns(path):
    """An MLZ photometric-redshift text file (19 whitespace-separated columns:
    `zs u g r i z u-g g-r r-i i-z eu eg er ei ez eu-g eg-r er-i ei-z`; the `#` header of the
    SDSS MGS files leaves `eu` out) as catalogue datasets: `Z`, `mag_u`..`mag_z`,
    `magerr_u`..`magerr_z`, and the file's colours `color_ug`, `color_gr`, `color_ri`,
    `color_iz` with their errors `colorerr_ug`..`colorerr_iz`."""
    a = np.loadtxt(path)
    if a.ndim != 2 or a.shape[1] != 19:
        raise ValueError(f"{path}: expected 19 columns (MLZ format), found {a.shape}")
    cols = {"object_id": np.arange(len(a), dtype=np.int64), "Z": a[:, 0].astype(np.float32)}
    for i, b in enumerate("ugriz"):
        cols[f"mag_{b}"] = a[:, 1 + i].astype(np.float32)
        cols[f"magerr_{b}"] = a[:, 10 + i].astype(np.float32)
    for i, c in enumerate(["ug", "gr", "ri", "iz"]):
        cols[f"color_{c}"] = a[:, 6 + i].astype(np.float32)
        cols[f"colorerr_{c}"] = a[:, 15 + i].astype(np.float32)
    return cols


def sdss(shared, out):
    cols = mlz_columns(os.path.join(shared, "sdss_mgs_mlz/SDSS_MGS.train"))
    write(os.path.join(out, "sdss_mgs/sdss_mgs_train.h5"), cols)


def legacysurvey(shared, out):
    d = fits.open(os.path.join(shared, "piczl_legacysurvey_dr10/train_demo_catalog.fits"))[1].data
    cols = {"object_id": np.arange(len(d), dtype=np.int64)}
    for b in ["g", "r", "i", "z", "w1", "w2", "w3", "w4"]:
        cols[f"FLUX_{b.upper()}"] = (d[f"dered_flux_{b}"] * d[f"mw_transmission_{b}"]).astype(np.float32)
    cols["SHAPE_E1"] = d["SHAPE_E1"].astype(np.float32)
    cols["SHAPE_E2"] = d["SHAPE_E2"].astype(np.float32)
    cols["EBV"] = (-2.5 * np.log10(d["mw_transmission_g"]) / R_G).astype(np.float32)
    cols["ra"] = d["RA"].astype(np.float64)
    cols["dec"] = d["DEC"].astype(np.float64)
    cols["Z"] = d["z"].astype(np.float32)
    write(os.path.join(out, "legacysurvey/piczl_dr10.h5"), cols)


def desi(shared, out):
    h = fits.open(os.path.join(shared, "desi_dr1_fastspecfit/coadd-4-80613-thru20210324.fits"))
    lam = np.round((np.arange(7781) * 0.8 + 3600.0), 1)
    num, wsum, bad = np.zeros(7781), np.zeros(7781), np.ones(7781, bool)
    for arm in "BRZ":
        w = h[f"{arm}_WAVELENGTH"].data
        idx = np.rint((w - 3600.0) / 0.8).astype(int)
        f, iv, m = h[f"{arm}_FLUX"].data[0], h[f"{arm}_IVAR"].data[0], h[f"{arm}_MASK"].data[0]
        good = (m == 0) & (iv > 0)
        np.add.at(num, idx[good], (f * iv)[good])
        np.add.at(wsum, idx[good], iv[good])
        bad[idx[good]] = False
    flux = np.where(wsum > 0, num / np.maximum(wsum, 1e-30), 0.0)
    fm = h["FIBERMAP"].data
    z = fits.open(os.path.join(shared, "desi_dr1_fastspecfit/redrock-4-80613-thru20210324.fits"))["REDSHIFTS"].data["Z"]
    cols = {
        "object_id": fm["TARGETID"].astype(np.int64),
        "spectrum_flux": flux[None].astype(np.float32),
        "spectrum_ivar": wsum[None].astype(np.float32),
        "spectrum_lambda": lam[None].astype(np.float32),
        "spectrum_mask": (bad | (wsum < 1e-6))[None],
        "Z": np.asarray(z, np.float32),
        "EBV": fm["EBV"].astype(np.float32),
    }
    for b in ["G", "R", "Z", "W1", "W2"]:
        cols[f"FLUX_{b}"] = fm[f"FLUX_{b}"].astype(np.float32)
    for k in ["SHAPE_R", "SHAPE_E1", "SHAPE_E2"]:
        cols[k] = fm[k].astype(np.float32)
    write(os.path.join(out, "desi/desi_one.h5"), cols)


def gaia(shared, out):
    j = json.load(open(os.path.join(shared, "gaia_dr3_astroquery/gaia_dr3_cone_search_50rows.json")))
    names = [m["name"] for m in j["metadata"]]
    rows = j["data"]
    col = lambda n: np.array([np.nan if r[names.index(n)] is None else r[names.index(n)] for r in rows], dtype=np.float64)
    cols = {"object_id": np.array([r[names.index("source_id")] for r in rows], dtype=np.int64)}
    for n in ["phot_g_mean_flux", "phot_bp_mean_flux", "phot_rp_mean_flux", "parallax"]:
        cols[n] = col(n).astype(np.float32)
    cols["ra"], cols["dec"] = col("ra"), col("dec")
    write(os.path.join(out, "gaia/gaia_dr3_cone.h5"), cols)

    from astropy.table import Table

    t = Table.read(os.path.join(shared, "gaia_dr3_astroquery/XP_CONTINUOUS-Gaia_DR3_5937083312263887616.ecsv"), format="ascii.ecsv")
    coeff = np.concatenate([np.asarray(t["bp_coefficients"][0]), np.asarray(t["rp_coefficients"][0])])[None]
    err = np.concatenate([np.asarray(t["bp_coefficient_errors"][0]), np.asarray(t["rp_coefficient_errors"][0])])[None]
    write(os.path.join(out, "gaia/gaia_xp_one.h5"), {
        "object_id": np.asarray(t["source_id"], np.int64),
        "coeff": coeff.astype(np.float32),
        "coeff_error": err.astype(np.float32),
    })


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join(here, "..", "data"))
    a = ap.parse_args()
    sdss(a.shared, a.out)
    legacysurvey(a.shared, a.out)
    desi(a.shared, a.out)
    gaia(a.shared, a.out)


if __name__ == "__main__":
    main()
