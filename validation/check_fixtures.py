"""Regenerates every parity fixture into a temporary folder and checks it against the committed one.

    validation/.venv/bin/python validation/check_fixtures.py [CASE ...]

Each `fixtures/<case>/make_fixture.py` is run with `--out TMP/<case>`; then every committed
`.safetensors`, `.json` and `.h5` file of the case is compared with its regenerated twin:
integer and boolean arrays exactly, float arrays to 1e-6 relative (torch's CPU kernels may
round differently on another processor), JSON documents exactly. Prints one line per case and
exits non-zero if anything changed, listing what.
"""

import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")
RTOL, ATOL = 1e-6, 1e-7


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if np.issubdtype(a.dtype, np.floating):
        return bool(np.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, float(np.nanmax(np.abs(a)) if a.size else 0)), equal_nan=True))
    return bool(np.array_equal(a, b))


def compare(old: str, new: str) -> list:
    problems = []
    if not os.path.exists(new):
        return [f"{old}: not regenerated"]
    if old.endswith(".safetensors"):
        a, b = load_file(old), load_file(new)
        if set(a) != set(b):
            problems.append(f"{old}: arrays differ: {sorted(set(a) ^ set(b))}")
        problems += [f"{old}: {k} changed" for k in sorted(set(a) & set(b)) if not same_array(a[k], b[k])]
    elif old.endswith(".json"):
        if json.load(open(old)) != json.load(open(new)):
            problems.append(f"{old}: changed")
    elif old.endswith(".h5"):
        with h5py.File(old, "r") as fa, h5py.File(new, "r") as fb:
            names = []
            fa.visit(lambda n: names.append(n) if isinstance(fa[n], h5py.Dataset) else None)
            for n in names:
                if n not in fb or not same_array(fa[n][()], fb[n][()]):
                    problems.append(f"{old}: dataset {n} changed")
    return problems


def main() -> int:
    cases = sys.argv[1:] or sorted(d for d in os.listdir(FIX) if os.path.exists(os.path.join(FIX, d, "make_fixture.py")))
    failed = 0
    with tempfile.TemporaryDirectory(prefix="aion-fixtures-") as tmp:
        for case in cases:
            src = os.path.join(FIX, case)
            out = os.path.join(tmp, case)
            r = subprocess.run([sys.executable, os.path.join(src, "make_fixture.py"), "--out", out], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {case}: generator failed\n{r.stderr}")
                failed += 1
                continue
            problems = []
            for root, _, files in os.walk(src):
                for f in files:
                    if f.endswith((".safetensors", ".json", ".h5")):
                        old = os.path.join(root, f)
                        problems += compare(old, os.path.join(out, os.path.relpath(old, src)))
            print(("ok   " if not problems else "FAIL ") + case)
            for p in problems:
                print("     " + os.path.relpath(p, HERE) if p.startswith(HERE) else "     " + p)
            failed += bool(problems)
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
