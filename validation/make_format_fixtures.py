"""Catalogue-format fixtures: the same rows as HDF5, Parquet, HATS and FITS, written by the real
tools (h5py, pyarrow, hats-import, astropy) from the project's sample data, for the reader tests
(lib/aion-io/src/catalog.rs tests, tests/cli/formats.rs).

Environment: hats-import brings dask and friends, so this script has its own venv, not the
reference's (validation/.venv, whose requirements.txt it does not touch):

    python3 -m venv validation/.venv-formats
    validation/.venv-formats/bin/pip install -r validation/requirements-formats.txt
    validation/.venv-formats/bin/python validation/make_format_fixtures.py

Writes validation/fixtures/formats/ (about 1.6 MB):

  mm.h5, mm.parquet, mm.fits.gz, mm_hats/
      the 8 rows of validation/fixtures/pipeline/catalog.h5 (images, spectra, object catalogs,
      scalars, Gaia XP coefficients, Z), with a synthetic sky position (ra, dec). To keep the
      files small only row 0 keeps its image; the other rows' pixels are NaN (so their image is
      rejected, identically in every format).
      - mm.h5: Multimodal Universe HDF5 (h5py), as the pipeline fixture;
      - mm.parquet: flat columns, arrays as fixed-size lists (pyarrow);
      - mm.fits.gz: one binary table, arrays as vector columns with TDIM, band names as a string
        array column, gzip-compressed (astropy);
      - mm_hats/: the MMU HATS layout (struct columns image{band, flux},
        spectrum{flux, ivar, lambda, mask}, catalog{X, Y, SHAPE_E1, SHAPE_E2, SHAPE_R}, variable
        lists, object_id as a string) imported by hats-import from a Parquet file of that layout,
        2-row partitions over several HEALPix orders.
  sdss.h5, sdss.parquet, sdss.fits, sdss_hats/
      the first 300 rows of data/sdss_mgs/sdss_mgs_test_split.h5 (magnitudes, colours, Z) with
      synthetic positions (a dense patch and the rest spread over the sky), so that hats-import
      (40-row partitions) makes partitions of several orders; the Parquet file has 64-row row
      groups.
  bad/
      nulls.parquet       FLUX_G, EBV with nulls (rows absent, not rejected)
      ragged.parquet      coeff as variable lists, row 2 one value short
      spec_full.parquet, spec_no_ivar.parquet
                          two files of one catalogue; the second lacks spectrum_ivar
      wrong_vector.fits   spectrum_ivar one value shorter than spectrum_flux
      image_hdu.fits      a DESI-coadd-like file: FIBERMAP table (TARGETID, and B_FLUX_COPY, the
                          same values as a vector column) and image HDUs B_FLUX (3 spectra x 50
                          pixels) and B_WAVELENGTH (1-D)
"""

import argparse
import os
import shutil
import tempfile

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "fixtures", "formats")
KEEP_IMAGES = (0,)


def sky(n, dense, seed):
    """Positions: `dense` rows in a 1-degree patch, the others uniform on the sphere."""
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    ra[:dense] = 150 + rng.uniform(0, 1, dense)
    dec[:dense] = 2 + rng.uniform(0, 1, dense)
    return ra, dec


def load_mm():
    with h5py.File(os.path.join(HERE, "fixtures", "pipeline", "catalog.h5")) as f:
        cols = {k: f[k][:] for k in f}
    n = len(cols["object_id"])
    for r in range(n):
        if r not in KEEP_IMAGES:
            cols["image_array"][r] = np.nan
    cols["ra"], cols["dec"] = sky(n, 4, 16)
    return cols


def load_sdss():
    with h5py.File(os.path.join(REPO, "data", "sdss_mgs", "sdss_mgs_test_split.h5")) as f:
        cols = {k: f[k][:300] for k in f}
    cols["ra"], cols["dec"] = sky(300, 120, 17)
    return cols


def write_h5(cols, path):
    with h5py.File(path, "w") as f:
        for k, v in cols.items():
            f.create_dataset(k, data=v, compression="gzip" if v.ndim > 2 else None)


def fixed_list(v):
    """A numpy array (N, d1, ..., dk) as nested fixed-size lists."""
    flat = v.reshape(-1)
    arr = pa.array(flat.astype(str) if flat.dtype.kind == "S" else flat)
    for d in reversed(v.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, d)
    return arr


def var_list(v):
    """A numpy array (N, d1, ..., dk) as nested variable lists (the MMU HATS layout)."""
    flat = v.reshape(-1)
    arr = pa.array(flat.astype(str) if flat.dtype.kind == "S" else flat)
    for d in reversed(v.shape[1:]):
        m = len(arr) // d
        arr = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * d), arr)
    return arr


def flat_table(cols):
    return pa.table({k: fixed_list(v) if v.ndim > 1 else pa.array(v) for k, v in cols.items()})


def mmu_table(cols):
    """MMU HATS layout: one struct column per modality, variable lists, string object ids."""
    groups = {
        "image": {"band": "image_band", "flux": "image_array"},
        "spectrum": {f: f"spectrum_{f}" for f in ["flux", "ivar", "lambda", "mask"]},
        "catalog": {f: f"catalog_{f}" for f in ["X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R"]},
    }
    out, used = {}, set()
    for g, fields in groups.items():
        out[g] = pa.StructArray.from_arrays([var_list(cols[c]) for c in fields.values()], names=list(fields))
        used.update(fields.values())
    for k, v in cols.items():
        if k in used:
            continue
        if k == "object_id":
            out[k] = pa.array([str(x) for x in v])
        else:
            out[k] = var_list(v) if v.ndim > 1 else pa.array(v)
    return pa.table(out)


def write_fits(cols, path):
    t = Table()
    for k, v in cols.items():
        t[k] = v
    t.write(path, format="fits", overwrite=True)


def import_hats(table, name, threshold, tmp):
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client
    from dask.distributed import Client

    src = os.path.join(tmp, f"{name}_input.parquet")
    pq.write_table(table, src)
    args = ImportArguments(
        output_artifact_name=name,
        input_file_list=[src],
        file_reader="parquet",
        ra_column="ra",
        dec_column="dec",
        pixel_threshold=threshold,
        highest_healpix_order=8,
        output_path=OUT,
        tmp_dir=tmp,
        progress_bar=False,
        should_write_skymap=False,
    )
    with Client(n_workers=1, threads_per_worker=1, processes=False) as client:
        pipeline_with_client(args, client)


def write_bad(mm, sdss):
    bad = os.path.join(OUT, "bad")
    os.makedirs(bad, exist_ok=True)
    flux = pa.array([1.5, None, 3.0, 4.0], pa.float32())
    ebv = pa.array([0.01, 0.02, None, 0.04], pa.float32())
    pq.write_table(pa.table({"object_id": pa.array([10, 11, 12, 13], pa.int64()), "FLUX_G": flux, "EBV": ebv}),
                   os.path.join(bad, "nulls.parquet"))
    coeff = [list(map(float, mm["coeff"][r])) for r in range(4)]
    coeff[2] = coeff[2][:-1]
    pq.write_table(pa.table({"object_id": pa.array(mm["object_id"][:4]), "coeff": pa.array(coeff, pa.list_(pa.float32()))}),
                   os.path.join(bad, "ragged.parquet"))
    spec = {"object_id": mm["object_id"][:2], "FLUX_G": mm["FLUX_G"][:2]}
    spec.update({f"spectrum_{f}": mm[f"spectrum_{f}"][:2, :200] for f in ["flux", "ivar", "lambda", "mask"]})
    pq.write_table(flat_table(spec), os.path.join(bad, "spec_full.parquet"))
    pq.write_table(flat_table({k: v for k, v in spec.items() if k != "spectrum_ivar"}), os.path.join(bad, "spec_no_ivar.parquet"))
    wrong = dict(spec)
    wrong["spectrum_ivar"] = wrong["spectrum_ivar"][:, :199]
    write_fits(wrong, os.path.join(bad, "wrong_vector.fits"))
    # DESI coadd-like: a FIBERMAP table and per-arm images whose first axis is the spectrum.
    rng = np.random.default_rng(18)
    b_flux = rng.normal(1.0, 0.1, (3, 50)).astype(np.float32)
    fibermap = Table({"TARGETID": np.array([7, 8, 9], np.int64), "B_FLUX_COPY": b_flux})
    hdus = [fits.PrimaryHDU(),
            fits.BinTableHDU(fibermap, name="FIBERMAP"),
            fits.ImageHDU(np.linspace(3600, 3640, 50), name="B_WAVELENGTH"),
            fits.ImageHDU(b_flux, name="B_FLUX")]
    fits.HDUList(hdus).writeto(os.path.join(bad, "image_hdu.fits"), overwrite=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    mm, sdss = load_mm(), load_sdss()
    write_h5(mm, os.path.join(OUT, "mm.h5"))
    pq.write_table(flat_table(mm), os.path.join(OUT, "mm.parquet"), compression="zstd")
    write_fits(mm, os.path.join(OUT, "mm.fits.gz"))
    write_h5(sdss, os.path.join(OUT, "sdss.h5"))
    pq.write_table(flat_table(sdss), os.path.join(OUT, "sdss.parquet"), row_group_size=64)
    write_fits(sdss, os.path.join(OUT, "sdss.fits"))
    with tempfile.TemporaryDirectory() as tmp:
        import_hats(mmu_table(mm), "mm_hats", 2, tmp)
        import_hats(flat_table(sdss), "sdss_hats", 40, tmp)
    write_bad(mm, sdss)
    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
