"""Reads aion-export outputs back with the tools astronomers use and compares them with the HDF5
results they came from (tests/cli/export.rs runs it).

    check_export.py --results R.h5 --catalog CAT.parquet --columns ra dec z_spec=Z
                    [--parquet X.parquet] [--fits X.fits] [--hats DIR --hats-input DIR] [--lsdb]

- Parquet (pyarrow): every column whose field metadata names an HDF5 dataset holds that
  dataset's values (same dtype and shape, NaN where NaN), its `unit` and `description` are the
  dataset's `units` and `label`; catalogue columns equal the catalogue's (CAT.parquet, read with
  pyarrow, joined by object_id) as float64 / int64.
- FITS (astropy): the same through astropy.table (TDIM shapes, TUNITn = units, unsigned masks
  read as uint64), the primary header's CREATOR, each column's grids (posterior bin edges and
  centres, wavelengths) as image HDUs '<column>.<key>' and its bit names in the METADATA table.
- HATS (pyarrow): the same partition files as the input, with the same rows each, and the same
  values; with --lsdb, LSDB opens the export, finds the input's partitions, and a cross-match
  with the input catalogue pairs every object with itself.

Exits non-zero with a message on the first difference.
"""

import argparse
import glob
import json
import os
import sys

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def fail(msg):
    print(f"check_export: {msg}", file=sys.stderr)
    sys.exit(1)


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))
    return bool(np.all(a == b))


def to_numpy(col):
    """A pyarrow column (possibly nested fixed-size lists) as an (N, *shape) array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    shape = [len(arr)]
    while pa.types.is_fixed_size_list(arr.type):
        shape.append(arr.type.list_size)
        arr = arr.flatten()
    return arr.to_numpy(zero_copy_only=False).reshape(shape)


def results_datasets(path):
    f = h5py.File(path, "r")
    n = f["object_id"].shape[0]
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.shape[:1] == (n,):
            out[name] = obj

    f.visititems(visit)
    return f, out


def catalogue_by_id(path, columns):
    t = pq.read_table(path)
    ids = t["object_id"].to_numpy()
    order = {int(i): k for k, i in enumerate(ids)}
    return order, {src: t[src].to_numpy(zero_copy_only=False) for _, src in columns}


def check_table(what, get, names, units_of, f, datasets, ids, cat, columns):
    """`get(name)` → (N, *shape) array; `units_of(name)` → (unit, description) or None."""
    seen = 0
    for name in names:
        path = name if name in datasets else None
        if path is None:
            cands = [d for d in datasets if d.replace("/", "_") == name]
            path = cands[0] if cands else None
        if path is None:
            continue
        ds = datasets[path]
        got = get(name)
        want = ds[()]
        if got.dtype != want.dtype:
            fail(f"{what}: {name}: dtype {got.dtype}, HDF5 {path} has {want.dtype}")
        if not same(got, want):
            fail(f"{what}: {name}: values differ from HDF5 {path}")
        meta = units_of(name)
        if meta is not None and (meta[0] or "units" in ds.attrs):
            unit, desc = meta
            if unit != ds.attrs.get("units"):
                fail(f"{what}: {name}: unit {unit!r}, HDF5 units {ds.attrs.get('units')!r}")
            if desc is not None and desc != ds.attrs.get("label"):
                fail(f"{what}: {name}: description {desc!r}, label {ds.attrs.get('label')!r}")
        seen += 1
    if seen == 0:
        fail(f"{what}: no column of the results")
    order, values = cat
    rows = [order[int(i)] for i in ids]
    for new, src in columns:
        got = get(new)
        want = values[src][rows]
        want = want.astype(np.float64) if want.dtype.kind == "f" else want
        if got.dtype != want.dtype or not same(got, want):
            fail(f"{what}: catalogue column {new} ({src}) differs from the catalogue's")
    return seen


def check_parquet(path, f, datasets, cat, columns, table=None):
    if table is None:
        if b"aion-hpc" not in (pq.read_metadata(path).metadata or {}):
            fail(f"{path}: no aion-hpc provenance key")
        table = pq.read_table(path)
    t = table

    def units(name):
        m = t.schema.field(name).metadata or {}
        if b"hdf5_dataset" not in m:
            return None
        u = m.get(b"unit")
        d = m.get(b"description")
        return (u.decode() if u is not None else None, d.decode() if d is not None else None)

    ids = to_numpy(t["object_id"])
    return check_table(path, lambda n: to_numpy(t[n]), t.column_names, units, f, datasets,
                       ids, cat, columns)


def check_fits(path, f, datasets, cat, columns):
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(path) as hdul:
        creator = hdul[0].header.get("CREATOR", "")
        if not creator.startswith("aion-hpc"):
            fail(f"{path}: CREATOR = {creator!r}")
        json.loads(hdul[0].header["AIONPROV"])
        hdr = hdul[1].header
        tunit = {hdr[f"TTYPE{i}"]: hdr.get(f"TUNIT{i}", "") for i in range(1, hdr["TFIELDS"] + 1)}
    t = Table.read(path, hdu=1)

    def get(name):
        c = t[name]
        a = np.ma.filled(c, np.nan) if c.dtype.kind == "f" else np.asarray(c)
        return a.astype(a.dtype.newbyteorder("="))  # FITS is big-endian

    def units(name):
        return (tunit[name], None)

    ids = np.asarray(t["object_id"])
    seen = check_table(path, get, t.colnames, units, f, datasets, ids, cat, columns)
    check_fits_metadata(path, t.colnames, f, datasets)
    return seen


GRID_ATTRS = ("wavelength", "bin_edges", "bin_centres")


def check_fits_metadata(path, names, f, datasets):
    """A column's grids (HDF5 attributes naming a grid dataset) are image HDUs
    '<column>.<attr>' with the grid's values; its bit names are a row of the METADATA table."""
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(path) as hdul:
        images = {h.name.lower(): np.asarray(h.data) for h in hdul[1:] if h.is_image}
        meta = {}
        if "METADATA" in hdul:
            for r in Table.read(hdul["METADATA"]):
                meta[(str(r["FIELD"]), str(r["KEY"]))] = str(r["VALUE"])
    grids = bits = 0
    for name in names:
        cands = [d for d in datasets if d.replace("/", "_") == name]
        if not cands:
            continue
        ds = datasets[cands[0]]
        for attr in GRID_ATTRS:
            if attr not in ds.attrs:
                continue
            want = f[ds.attrs[attr]][()]
            got = images.get(f"{name}.{attr}".lower())
            if got is None or not same(got.astype(np.float64), want.astype(np.float64)):
                fail(f"{path}: no image HDU '{name}.{attr}' holding HDF5 {ds.attrs[attr]}")
            grids += 1
        if "bit_names" in ds.attrs:
            want = [str(b.decode() if isinstance(b, bytes) else b) for b in ds.attrs["bit_names"]]
            got = meta.get((name, "bit_names"))
            if got is None or json.loads(got) != want:
                fail(f"{path}: METADATA has no bit_names of '{name}' equal to HDF5's")
            bits += 1
    print(f"check_export: FITS {path}: {grids} grid(s), {bits} bit-name list(s) found")
    return grids, bits


def partitions(root):
    """Partition files in (Norder, Npix) order: the catalogue's row order."""
    files = glob.glob(os.path.join(root, "dataset", "Norder=*", "Dir=*", "*"))

    def key(rel):
        parts = dict(p.split("=", 1) for p in rel.split(os.sep) if "=" in p)
        return int(parts["Norder"]), int(parts["Npix"].split(".")[0]), rel

    return sorted((os.path.relpath(p, root) for p in files), key=key)


def check_hats(path, source, f, datasets, cat, columns, use_lsdb):
    mine, theirs = partitions(path), partitions(source)
    if mine != theirs:
        fail(f"{path}: partitions {mine} differ from the input's {theirs}")
    for rel in mine:
        a = pq.read_metadata(os.path.join(path, rel)).num_rows
        b = pq.read_metadata(os.path.join(source, rel)).num_rows
        if a != b:
            fail(f"{path}/{rel}: {a} rows, the input partition has {b}")
    pq.read_schema(os.path.join(path, "dataset", "_common_metadata"))
    parts = [pq.read_table(os.path.join(path, rel)) for rel in mine]
    whole = pa.concat_tables(parts)
    # Rows in partition order are the results' rows in order.
    ids = to_numpy(whole["object_id"])
    if not same(ids, f["object_id"][()]):
        fail(f"{path}: object ids are not the results' in row order")
    for rel in mine + [os.path.join("dataset", "_common_metadata")]:
        if b"aion-hpc" not in (pq.read_metadata(os.path.join(path, rel)).metadata or {}):
            fail(f"{path}/{rel}: no aion-hpc provenance key")
    n = check_parquet(path, f, datasets, cat, columns, table=whole)
    if use_lsdb:
        import lsdb

        exp = lsdb.open_catalog(path)
        inp = lsdb.open_catalog(source)
        if sorted(exp.get_healpix_pixels()) != sorted(inp.get_healpix_pixels()):
            fail(f"{path}: LSDB sees other partitions than the input's")
        df = exp.compute()
        if len(df) != len(ids) or set(df["object_id"]) != set(int(i) for i in ids):
            fail(f"{path}: LSDB reads {len(df)} rows, not the results' {len(ids)}")
        m = exp.crossmatch(inp, radius_arcsec=0.01, suffixes=("_exp", "_in")).compute()
        if len(m) != len(ids) or not np.all(m["object_id_exp"].to_numpy() ==
                                            m["object_id_in"].to_numpy()):
            fail(f"{path}: the cross-match with the input does not pair every object with itself")
        print(f"check_export: LSDB: {path}: {len(df)} rows, {len(m)} self-matches")
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True)
    ap.add_argument("--catalog", required=True, help="the catalogue as one Parquet file")
    ap.add_argument("--columns", nargs="*", default=[])
    ap.add_argument("--parquet")
    ap.add_argument("--fits")
    ap.add_argument("--hats")
    ap.add_argument("--hats-input")
    ap.add_argument("--lsdb", action="store_true")
    a = ap.parse_args()
    columns = [tuple(c.split("=", 1)) if "=" in c else (c, c) for c in a.columns]
    f, datasets = results_datasets(a.results)
    cat = catalogue_by_id(a.catalog, columns)
    if a.parquet:
        n = check_parquet(a.parquet, f, datasets, cat, columns)
        print(f"check_export: pyarrow: {a.parquet}: {n} result columns + {len(columns)} catalogue")
    if a.fits:
        n = check_fits(a.fits, f, datasets, cat, columns)
        print(f"check_export: astropy: {a.fits}: {n} result columns + {len(columns)} catalogue")
    if a.hats:
        n = check_hats(a.hats, a.hats_input, f, datasets, cat, columns, a.lsdb)
        print(f"check_export: pyarrow: {a.hats}: {n} result columns + {len(columns)} catalogue")


if __name__ == "__main__":
    main()
