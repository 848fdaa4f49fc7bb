#!/usr/bin/env python3
"""Compare two runs of the CLI suite file by file: are the outputs bit-identical?

    AION_CLI_KEEP=/tmp/keep cargo test --test cli      # before a change; then mv /tmp/keep before
    AION_CLI_KEEP=/tmp/keep cargo test --test cli      # after it;        then mv /tmp/keep after
    python validation/compare_outputs.py before after [--repos CHECKOUT_BEFORE CHECKOUT_AFTER]...

File paths are recorded in the outputs: both runs use the same AION_CLI_KEEP path, or name the
two with --repos; with --repos, the two checkouts' paths (the test fixtures' folder is recorded
too) count as one (--repos may be given several times). Every
HDF5 dataset is compared byte for byte (values, dtype, shape; NaNs equal to NaNs at the same
places), every attribute too, except those that record when, where and how fast a run went (see
VOLATILE). JSON files are compared the same way; any other file byte for byte, FITS files by
their data and header cards (less the date cards). Exit status 1 if anything differs.
"""

import json
import re
import sys
from pathlib import Path

import h5py
import numpy as np

# Attribute / JSON keys whose values differ from run to run by nature: clocks, hosts, process
# ids, timings (`stages`), Slurm job ids, the version string of the build (git commit, dirty
# flag), and the resume key, a hash of the input files' identities (size, modification time,
# edges): the CLI tests write their input catalogues afresh in every run (HDF5 files record
# their objects' times).
VOLATILE_WORDS = {
    "time", "date", "seconds", "second", "elapsed", "wall", "host", "hostname", "pid", "started",
    "finished", "version", "commit", "stages", "job", "resume", "edges", "hash",
    "estsize",
}


def volatile(key):
    """A key (attribute or JSON member; never a dataset) whose value is of the run, not the data."""
    return any(w in VOLATILE_WORDS for w in re.split(r"[_\W]+", key.lower()))


REPOS = []  # (before, after) checkout paths, both written as "<repo>" before comparing text


def text(s):
    s = s.decode() if isinstance(s, bytes) else s
    for before, after in REPOS:
        s = s.replace(after, "<repo>").replace(before, "<repo>")
    return s


def same_value(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        return np.array_equal(a.view(f"u{a.dtype.itemsize}"), b.view(f"u{b.dtype.itemsize}"))
    return np.array_equal(a, b)


def compare_json(a, b, where, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if volatile(k):
                continue
            if k not in a or k not in b:
                out.append(f"{where}.{k}: only in {'after' if k in b else 'before'}")
            else:
                compare_json(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            compare_json(x, y, f"{where}[{i}]", out)
    elif isinstance(a, str) and isinstance(b, str) and a.startswith("{") and b.startswith("{"):
        try:
            compare_json(json.loads(a), json.loads(b), where, out)
        except json.JSONDecodeError:
            if text(a) != text(b):
                out.append(f"{where}: {a[:80]!r} != {b[:80]!r}")
    elif isinstance(a, str) and isinstance(b, str):
        if text(a) != text(b):
            out.append(f"{where}: {a[:80]!r} != {b[:80]!r}")
    elif a != b:
        out.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")


def compare_attrs(x, y, where, out):
    for k in sorted(set(x.attrs) | set(y.attrs)):
        if volatile(k):
            continue
        if k not in x.attrs or k not in y.attrs:
            out.append(f"{where}@{k}: only in {'after' if k in y.attrs else 'before'}")
            continue
        a, b = x.attrs[k], y.attrs[k]
        if isinstance(a, (bytes, str)) and isinstance(b, (bytes, str)):
            a, b = text(a), text(b)
            if a.startswith("{"):
                compare_json(json.loads(a), json.loads(b), f"{where}@{k}", out)
            elif a != b:
                out.append(f"{where}@{k}: {a[:80]!r} != {b[:80]!r}")
        elif not same_value(a, b):
            out.append(f"{where}@{k}: differs")


def compare_h5(pa, pb, out):
    with h5py.File(pa, "r") as fa, h5py.File(pb, "r") as fb:
        names_a, names_b = [], []
        fa.visit(names_a.append)
        fb.visit(names_b.append)
        if sorted(names_a) != sorted(names_b):
            out.append(f"objects differ: {sorted(set(names_a) ^ set(names_b))[:10]}")
            return
        compare_attrs(fa, fb, "/", out)
        for n in sorted(names_a):
            x, y = fa[n], fb[n]
            compare_attrs(x, y, n, out)
            if isinstance(x, h5py.Dataset):
                va, vb = x[()], y[()]
                if x.dtype.kind in "OS" and y.dtype.kind in "OS":
                    va = [text(v) for v in np.ravel(va)]
                    vb = [text(v) for v in np.ravel(vb)]
                    if va != vb:
                        out.append(f"{n}: strings differ")
                elif not same_value(va, vb):
                    out.append(f"{n}: values differ")


def compare_fits(pa, pb, out):
    from astropy.io import fits

    with fits.open(pa) as ha, fits.open(pb) as hb:
        if len(ha) != len(hb):
            out.append(f"HDU count {len(ha)} != {len(hb)}")
            return
        for i, (x, y) in enumerate(zip(ha, hb)):
            for card in set(x.header) | set(y.header):
                if volatile(card):
                    continue
                a, b = x.header.get(card), y.header.get(card)
                if isinstance(a, str) and isinstance(b, str) and a.startswith("{"):
                    compare_json(json.loads(a), json.loads(b), f"HDU {i} {card}", out)
                elif isinstance(a, str) and isinstance(b, str):
                    if text(a) != text(b):
                        out.append(f"HDU {i} {card}: {a[:80]!r} != {b[:80]!r}")
                elif a != b:
                    out.append(f"HDU {i} {card}: {a!r} != {b!r}")
            if x.data is not None and not np.array_equal(np.asarray(x.data), np.asarray(y.data)):
                out.append(f"HDU {i}: data differ")


def compare_parquet(pa, pb, out):
    """Parquet: the table (schema, values) and the key-value metadata, JSON values as JSON."""
    import pyarrow.parquet as pq

    sa, sb = pq.read_schema(pa), pq.read_schema(pb)
    ma, mb = sa.metadata or {}, sb.metadata or {}
    for k in sorted(set(ma) | set(mb)):
        a, b = ma.get(k, b""), mb.get(k, b"")
        try:
            compare_json(json.loads(a), json.loads(b), f"metadata {k.decode()}", out)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if text(a) != text(b):
                out.append(f"metadata {k!r} differs")
    if not sa.remove_metadata().equals(sb.remove_metadata()):
        out.append("schema differs")
    elif pq.ParquetFile(pa).metadata.num_rows or pq.ParquetFile(pb).metadata.num_rows:
        ta, tb = pq.read_table(pa), pq.read_table(pb)
        if not ta.replace_schema_metadata(None).equals(tb.replace_schema_metadata(None)):
            out.append("table values differ")


def compare_text(pa, pb, out):
    """Text files (HATS `properties`): line by line, less lines naming a volatile key."""
    la = pa.read_text(errors="replace").splitlines()
    lb = pb.read_text(errors="replace").splitlines()
    keep = lambda ls: [text(l) for l in ls if not volatile(l.split("=")[0].strip())]
    if keep(la) != keep(lb):
        out.append("text differs")


def main():
    args = sys.argv[1:]
    while "--repos" in args:
        i = args.index("--repos")
        if len(args) < i + 3:
            sys.exit("--repos takes two paths: the one in the run before, the one in the run after")
        REPOS.append((args[i + 1], args[i + 2]))
        del args[i : i + 3]
    if len(args) != 2 or any(a.startswith("-") for a in args):
        sys.exit(__doc__)
    before, after = Path(args[0]), Path(args[1])
    files = sorted(p.relative_to(before) for p in before.rglob("*") if p.is_file())
    after_files = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    bad = 0
    counts = {"same": 0, "differ": 0, "missing": 0}
    for rel in files:
        pa, pb = before / rel, after / rel
        if rel not in after_files:
            print(f"MISSING after: {rel}")
            counts["missing"] += 1
            continue
        out = []
        try:
            if pa.read_bytes() == pb.read_bytes():
                pass
            elif REPOS and text(pa.read_bytes().decode("latin-1")) == text(
                pb.read_bytes().decode("latin-1")
            ):
                pass  # differs only by the checkout's path
            elif rel.suffix in (".h5", ".hdf5") or pa.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n":
                compare_h5(pa, pb, out)
            elif rel.suffix == ".json":
                compare_json(json.loads(pa.read_text()), json.loads(pb.read_text()), "", out)
            elif rel.suffix in (".fits", ".fit"):
                compare_fits(pa, pb, out)
            elif rel.suffix == ".parquet" or rel.name == "_common_metadata":
                compare_parquet(pa, pb, out)
            elif rel.name == "properties":
                compare_text(pa, pb, out)
            elif rel.suffix in (".log", ".txt", ".out", ".err", ".secs") or rel.name == "log":
                pass  # logs and timings carry clocks and pids
            else:
                out.append("bytes differ")
        except Exception as e:  # an unreadable half-written file from a kill test, say
            if pa.read_bytes() != pb.read_bytes():
                out.append(f"cannot compare ({type(e).__name__}: {e})")
        if out:
            counts["differ"] += 1
            print(f"DIFFER {rel}:")
            for line in out[:8]:
                print(f"    {line}")
        else:
            counts["same"] += 1
    extra = sorted(after_files - set(files))
    for rel in extra:
        print(f"ONLY after: {rel}")
    print(f"{len(files)} files before, {len(after_files)} after: {counts}, {len(extra)} only after")
    bad = counts["differ"] + counts["missing"] + len(extra)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
