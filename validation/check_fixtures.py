"""Regenerates every parity fixture into a temporary folder and checks it against the committed one.

    validation/.venv/bin/python validation/check_fixtures.py [CASE ...]

Each `fixtures/<case>/make_fixture.py` is run with `--out TMP/<case>`; then every committed
`.safetensors`, `.json` and `.h5` file of the case is compared with its regenerated twin. The
comparison holds on any x86-64 processor, not only on the one that made the fixtures: torch's CPU
kernels sum in another order on another processor (docs/validation.md, "Regeneration check"):

* float arrays: |new − old| ≤ FLOAT_TOL × (largest finite |old| of the array), NaN and ±inf in the
  same places;
* JSON documents, integer and boolean arrays: exactly, except the outputs of quantizers and of
  the generation sampler, where float noise can decide a value that sits on an edge. Such a value
  that differs is excused only where the regenerated run's own evidence puts it within the float
  noise ε of its edge, ε = FLOAT_TOL × the largest |value| of the array that evidence comes from:
    - FSQ tokens (image, segmentation map): each differing channel moved one level, and its
      latent's bounded value lies within half_l × ε of a rounding edge;
    - LFQ tokens (spectrum): every flipped bit's latent lies within ε of 0; the normalisation
      token: the log-normalisation lies within ε of the bucket edges it crossed;
    - table quantizers (scalar codecs): the compressed value lies within ε of the table entries
      it crossed;
    - sampled tokens (generation): per row, the first step where anything differs has a recorded
      decision margin (logit units, see generate/make_fixture.py) within FLOAT_TOL × the largest
      |logit| of the run; tokens of that row revealed at later steps follow from it and are
      counted as downstream.
  Arrays that merely record this evidence (decision margins) are not compared.
* if anything was excused, the case is generated a second time with the committed tokens pinned
  (AION_FIXTURE_PIN, see common.pinned): what is computed from tokens (decodes, embeddings) is
  then compared as plain floats.

Prints one line per case with what it excused and why, and exits non-zero if anything changed
beyond that, listing what.
"""

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import h5py
import numpy as np
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "fixtures")

# Float noise bound, relative to an array's largest finite magnitude. validation/fixture_spread.py
# regenerated the fixtures here (AMD EPYC, Zen 5) with torch's AVX2 and unvectorised kernels,
# oneDNN limited to AVX2, MKL on SSE4.2, numpy without AVX-512 and 2 threads (docs/validation.md):
# network outputs moved by at most 1.0e-6 (latents) and 3.9e-6 (decoded images, through sinh), the
# issue measured 8.7e-7 between an Intel Xeon and this EPYC, and the largest spread, 7.6e-6, came
# from torch's unvectorised kernels (processors without AVX2): its normal samples differ in the
# last bits, which the XP reservoirs scale by up to 100 before arcsinh. Margin 4 on that.
SPREAD_MEASURED = 7.64e-6
FLOAT_TOL = 4 * SPREAD_MEASURED


def cases_with_generators() -> list:
    return sorted(d for d in os.listdir(FIX) if os.path.exists(os.path.join(FIX, d, "make_fixture.py")))


def fixture_files(case: str) -> list:
    """The compared files of a case, relative to its folder."""
    src, out = os.path.join(FIX, case), []
    for root, _, files in os.walk(src):
        out += [os.path.relpath(os.path.join(root, f), src) for f in files if f.endswith((".safetensors", ".json", ".h5"))]
    return sorted(out)


def load_arrays(path: str) -> dict:
    """name -> array of a safetensors file, or of every dataset of an HDF5 file."""
    if path.endswith(".safetensors"):
        return load_file(path)
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def scale(a: np.ndarray) -> float:
    """Largest finite magnitude of an array (0 if none)."""
    f = np.abs(a[np.isfinite(a)])
    return float(f.max()) if f.size else 0.0


def relative_spread(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| over the finite elements / largest finite |a|; inf where NaN/±inf differ."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(a[~fa], b[~fb], equal_nan=True):
        return float("inf")
    d = float(np.max(np.abs(a[fa].astype(np.float64) - b[fb].astype(np.float64)), initial=0.0))
    s = scale(a)
    return d / s if s > 0 else (0.0 if d == 0 else float("inf"))


# --------------------------------------------------------------------------------------------
# Judges: which arrays of a file are quantizer or sampler outputs, and when a difference in them
# is float noise at an edge. Each returns (excused: bool mask over the token array, problems,
# notes); `new` / `old` are the case's arrays per file.


def fsq_edge_distance(z: np.ndarray, levels: np.ndarray) -> tuple:
    """FSQ latents [.., D, N] -> (distance of each bounded value tanh(z + shift)·half_l − offset
    from the nearest rounding edge, half_l per channel): the reference's FiniteScalarQuantizer."""
    half_l = (levels - 1) * 1.001 / 2
    offset = np.where(levels % 2 == 1, 0.0, 0.5)
    bounded = np.tanh(z + np.arctanh(offset / half_l)[:, None]) * half_l[:, None] - offset[:, None]
    return np.abs(bounded - np.floor(bounded) - 0.5), half_l


@dataclass
class Fsq:
    """FSQ tokens [B, N] from latents [B, D, N] (levels from the codec's Hub file)."""

    tokens: str
    latent: str
    codec: str  # codec folder relative to fixtures/, holding model.safetensors with the levels
    file: str = "io.safetensors"
    quantized: str = None  # the quantized latents [B, D, N]: may differ where the token is excused
    evidence: str = None  # the file holding the latents, if not `file`

    def names(self):
        return {self.tokens} | ({self.quantized} if self.quantized else set())

    def judge(self, old, new):
        levels = load_file(os.path.join(FIX, self.codec, "model.safetensors"))["_quantizer.levels"].astype(np.int64)
        t_old, t_new = old[self.file][self.tokens], new[self.file][self.tokens]
        latent = new[self.evidence or self.file][self.latent]
        z = latent.astype(np.float64)
        eps = FLOAT_TOL * scale(latent)
        basis = np.cumprod(np.concatenate([[1], levels[:-1]]))
        dist, half_l = fsq_edge_distance(z, levels)
        excused, problems, notes = np.zeros(t_old.shape, bool), [], []
        for b, n in zip(*np.nonzero(t_old != t_new)):
            if t_old[b, n] < 0 or t_new[b, n] < 0:
                problems.append(f"{self.tokens}[{b}, {n}]: {t_old[b, n]} -> {t_new[b, n]} (absent / present)")
                continue
            d_old = (t_old[b, n] // basis) % levels
            d_new = (t_new[b, n] // basis) % levels
            chans = np.nonzero(d_old != d_new)[0]
            ok = all(abs(d_old[c] - d_new[c]) == 1 and dist[b, c, n] <= half_l[c] * eps for c in chans)
            what = ", ".join(f"channel {c} latent {z[b, c, n]:.7g} {dist[b, c, n]:.1e} from an edge" for c in chans)
            if ok:
                excused[b, n] = True
                notes.append(f"{self.tokens}[{b}, {n}] {t_old[b, n]} -> {t_new[b, n]}: {what} (ε {eps:.1e} × half_l)")
            else:
                problems.append(f"{self.tokens}[{b}, {n}]: {t_old[b, n]} -> {t_new[b, n]}, {what}")
        if self.quantized:
            q_old, q_new = old[self.file][self.quantized], new[self.file][self.quantized]
            bad = (q_old != q_new) & ~excused[:, None, :]
            if bad.any():
                problems.append(f"{self.quantized}: {int(bad.sum())} values changed where the token did not")
        return excused, problems, notes


@dataclass
class Spectrum:
    """Spectrum tokens [.., 1 + N]: the normalisation bucket, then LFQ codes of latents [.., D, N]."""

    tokens: str
    latent: str
    norm: str  # log10 normalisation [..]
    file: str = "io.safetensors"
    quantized: str = None  # the quantized normalisation: may differ where its token is excused
    evidence: str = None  # the file holding the latents, if not `file`

    def names(self):
        return {self.tokens} | ({self.quantized} if self.quantized else set())

    def judge(self, old, new):
        buckets = load_file(os.path.join(FIX, "spectrum_codec/hub/codecs/spectrum/model.safetensors"))[
            "normalization_quantizer.buckets"].astype(np.float64)
        t_old, t_new = np.atleast_2d(old[self.file][self.tokens]), np.atleast_2d(new[self.file][self.tokens])
        ev = new[self.evidence or self.file]
        pq = ev[self.latent]
        z = pq.reshape(t_old.shape[0], pq.shape[-2], pq.shape[-1]).astype(np.float64)
        raw = np.atleast_1d(ev[self.norm]).astype(np.float64)
        eps, d = FLOAT_TOL * scale(pq), z.shape[1]
        excused, problems, notes = np.zeros(t_old.shape, bool), [], []
        for r, p in zip(*np.nonzero(t_old != t_new)):
            a, b = int(t_old[r, p]), int(t_new[r, p])
            if a < 0 or b < 0:
                problems.append(f"{self.tokens}[{r}, {p}]: {a} -> {b} (absent / present)")
                continue
            if p == 0:
                crossed = buckets[min(a, b):max(a, b)]
                e = FLOAT_TOL * abs(raw[r])
                ok = bool(np.all(np.abs(crossed - raw[r]) <= e))
                what = f"log-normalisation {raw[r]:.7g}, {np.abs(crossed - raw[r]).max():.1e} from the bucket edge(s) (ε {e:.1e})"
            else:
                chans = [c for c in range(d) if (a ^ b) >> (d - 1 - c) & 1]
                ok = all(abs(z[r, c, p - 1]) <= eps for c in chans)
                what = ", ".join(f"channel {c} latent {z[r, c, p - 1]:.2e}" for c in chans) + f" (LFQ edge 0, ε {eps:.1e})"
            (notes if ok else problems).append(f"{self.tokens}[{r}, {p}] {a} -> {b}: {what}")
            excused[r, p] = ok
        if self.quantized:
            changed = np.atleast_1d(old[self.file][self.quantized] != new[self.file][self.quantized])
            if (changed & ~excused[:, 0]).any():
                problems.append(f"{self.quantized}: changed where the normalisation token did not")
        return excused.reshape(old[self.file][self.tokens].shape), problems, notes


@dataclass
class Table:
    """Tokens of table quantizers (bucketize against sorted entries): [B] or [B, C] with tables
    [1024] or [C, 1024] (channel-wise)."""

    tokens: str
    compressed: str
    table: tuple  # (file relative to fixtures/, array name) or (None, name in self.file)
    file: str = "io.safetensors"
    evidence: str = None  # the file holding the compressed values, if not `file`

    def names(self):
        return {self.tokens}

    def judge(self, old, new):
        path, name = self.table
        table = (load_file(os.path.join(FIX, path)) if path else new[self.file])[name].astype(np.float64)
        t_old, t_new = old[self.file][self.tokens], new[self.file][self.tokens]
        zs = new[self.evidence or self.file][self.compressed]
        z = zs.astype(np.float64).reshape(t_old.shape)
        eps = FLOAT_TOL * scale(zs)
        excused, problems, notes = np.zeros(t_old.shape, bool), [], []
        for idx in zip(*np.nonzero(t_old != t_new)):
            a, b = int(t_old[idx]), int(t_new[idx])
            if a < 0 or b < 0:
                problems.append(f"{self.tokens}{list(idx)}: {a} -> {b} (absent / present)")
                continue
            tab = table if table.ndim == 1 else table[idx[-1]]
            crossed = tab[min(a, b):max(a, b)]
            dist = float(np.abs(crossed - z[idx]).max())
            ok = dist <= eps
            what = f"compressed value {z[idx]:.7g} is {dist:.1e} from the table entries crossed (ε {eps:.1e})"
            (notes if ok else problems).append(f"{self.tokens}{list(idx)} {a} -> {b}: {what}")
            excused[idx] = ok
        return excused, problems, notes


@dataclass
class Sampled:
    """Tokens [R, N] of a generation run `prefix` with their reveal steps and decision records."""

    prefix: str
    tokens: str = None
    steps: str = None  # None: a single step
    file: str = "io.safetensors"

    def __post_init__(self):
        self.tokens = self.tokens or f"{self.prefix}.tokens"

    def names(self):
        return {self.tokens} | ({self.steps} if self.steps else set())

    def records(self):
        """The decision records: evidence, not compared."""
        return {f"{self.prefix}.close", f"{self.prefix}.close_margin", f"{self.prefix}.logit_max"}

    def judge(self, old, new):
        o, n = old[self.file], new[self.file]
        t_old, t_new = o[self.tokens], n[self.tokens]
        s_old = o[self.steps].astype(np.int64) if self.steps else np.zeros(t_old.shape, np.int64)
        s_new = n[self.steps].astype(np.int64) if self.steps else np.zeros(t_new.shape, np.int64)
        eps = FLOAT_TOL * float(n[f"{self.prefix}.logit_max"][0])
        margins = decision_margins(n[f"{self.prefix}.close"], n[f"{self.prefix}.close_margin"])
        return judge_sampled(self.tokens, t_old, t_new, s_old, s_new, margins, eps)


def decision_margins(close: np.ndarray, margin: np.ndarray) -> dict:
    """(row, step, position) -> smallest recorded margin, and (row, step) -> smallest of the step."""
    out = {}
    for (r, s, p), m in zip(close.tolist(), margin.tolist()):
        for key in ((r, s, p), (r, s)):
            out[key] = min(out.get(key, np.inf), m)
    return out


def judge_sampled(what, t_old, t_new, s_old, s_new, margins, eps):
    """Per row, the first step where a token or a reveal step differs must hold a decision within
    eps of flipping: the position's own draw where it was revealed at that step in both runs,
    otherwise (it moved to another step) any decision of that row and step (the MaskGIT
    confidence cut, or another position's draw that changed its confidence). Later steps of the
    row are downstream of that decision."""
    excused, problems, notes = np.zeros(t_old.shape, bool), [], []
    downstream = 0
    for r in np.nonzero(((t_old != t_new) | (s_old != s_new)).any(axis=1))[0]:
        d = np.nonzero((t_old[r] != t_new[r]) | (s_old[r] != s_new[r]))[0]
        first = np.minimum(s_old[r, d], s_new[r, d])
        s = int(first.min())
        row_ok = True
        for p in d[first == s]:
            same_step = s_old[r, p] == s_new[r, p]
            m = margins.get((r, s, int(p)) if same_step else (r, s), np.inf)
            ok = m <= eps
            row_ok &= ok
            why = "its draw" if same_step else "the step's closest decision"
            msg = (f"{what}[{r}, {p}] {t_old[r, p]} -> {t_new[r, p]} (step {s_old[r, p]} -> {s_new[r, p]}): "
                   f"margin of {why} {m:.1e} (ε {eps:.1e})")
            (notes if ok else problems).append(msg)
        if row_ok:
            excused[r, d] = True
            downstream += int((first > s).sum())
    if downstream:
        notes.append(f"{what}: {downstream} later tokens of those rows follow from them (downstream)")
    return excused, problems, notes


IMAGE = "image_codec/hub/codecs/image"
SEGMAP = "segmap_codec/hub/codecs/segmentation_map"
SCALARS = {"tok_ebv": "EBV", "tok_flux_g": "FLUX_G", "tok_xp_bp": "bp_coefficients",
           "tok_xp_rp": "rp_coefficients", "tok_z": "Z"}


def judges(case: str, new: dict) -> list:
    """The token judges of a case (`new`: the regenerated arrays per file)."""
    if case == "image_codec":
        return [Fsq("des_tokens", "des_pre_quant", IMAGE, quantized="des_quantized")] + [
            Fsq(f"{k}_tokens", f"{k}_pre_quant", IMAGE) for k in ("hsc", "subset", "shuffled", "odd")]
    if case == "segmap_codec":
        return [Fsq("tokens", "pre_quant", SEGMAP, quantized="quantized"), Fsq("odd_tokens", "odd_pre_quant", SEGMAP)]
    if case == "spectrum_codec":
        return [Spectrum(f"row{i}_tokens", f"row{i}_pre_quant", f"row{i}_normalization_raw",
                         quantized=f"row{i}_normalization_quantized") for i in range(4)] + [
            Spectrum("row3_reference_garbage_tokens", "row3_reference_garbage_pre_quant",
                     "row3_reference_garbage_normalization_raw")]
    if case == "scalar_codecs":
        return [Table(f"{k}_tokens", f"{k}_compressed", (None, f"{k}_table")) for k in SCALARS]
    if case == "pipeline":
        out = []
        ev = "expected.safetensors"  # the latents; the tokens are in both files
        for file, fmt in ((ev, "tokens.{}"), ("tokens.h5", "{}")):
            out += [
                Fsq(fmt.format("tok_image"), "latent.tok_image", IMAGE, file=file, evidence=ev),
                Spectrum(fmt.format("tok_spectrum_desi"), "latent.tok_spectrum_desi",
                         "latent.tok_spectrum_desi.normalization", file=file, evidence=ev),
                Table(fmt.format("tok_flux_g"), "latent.tok_flux_g",
                      ("scalar_codecs/hub/codecs/FLUX_G/model.safetensors", "quantizer._index_to_val"),
                      file=file, evidence=ev),
                Table(fmt.format("tok_xp_bp"), "latent.tok_xp_bp", ("scalar_codecs/io.safetensors", "tok_xp_bp_table"),
                      file=file, evidence=ev),
            ]
        return out
    if case == "generate":
        io = new["io.safetensors"]
        prefixes = sorted({k.rsplit(".", 1)[0] for k in io if k.endswith(".close")})
        return [Sampled(p, steps=f"{p}.steps" if f"{p}.steps" in io else None,
                        tokens=p if p.startswith("native.") else None) for p in prefixes]
    return []


# --------------------------------------------------------------------------------------------


def compare_case(case: str, out: str) -> tuple:
    """(problems, notes, excused count) of a regenerated case folder against the committed one."""
    src = os.path.join(FIX, case)
    problems, notes = [], []
    old, new = {}, {}
    for rel in fixture_files(case):
        if not os.path.exists(os.path.join(out, rel)):
            problems.append(f"{rel}: not regenerated")
        elif rel.endswith(".json"):
            if json.load(open(os.path.join(src, rel))) != json.load(open(os.path.join(out, rel))):
                problems.append(f"{rel}: changed")
        else:
            old[rel], new[rel] = load_arrays(os.path.join(src, rel)), load_arrays(os.path.join(out, rel))
    judged, skipped, excused = {}, set(), 0
    for j in judges(case, new):
        if j.file not in old:
            continue
        skipped |= {(j.file, e) for e in getattr(j, "records", set)()}
        mask, p, n = j.judge(old, new)
        problems += [f"{j.file}: {x}" for x in p]
        notes += [f"{j.file}: {x}" for x in n]
        excused += int(mask.sum())
        judged.update({(j.file, name): j for name in j.names()})
    for rel in old:
        a, b = old[rel], new[rel]
        if set(a) != set(b):
            problems.append(f"{rel}: arrays differ: {sorted(set(a) ^ set(b))}")
        for k in sorted(set(a) & set(b)):
            if (rel, k) in judged or (rel, k) in skipped:
                continue
            x, y = a[k], b[k]
            if x.shape != y.shape or x.dtype != y.dtype:
                problems.append(f"{rel}: {k} is {y.dtype}{list(y.shape)}, was {x.dtype}{list(x.shape)}")
            elif np.issubdtype(x.dtype, np.floating):
                s = relative_spread(x, y)
                if s > FLOAT_TOL:
                    problems.append(f"{rel}: {k} changed by {s:.1e} of its largest value (tolerance {FLOAT_TOL:.1e})")
            elif not np.array_equal(x, y):
                problems.append(f"{rel}: {k}: {int(np.sum(x != y))} of {x.size} values changed")
    return problems, notes, excused


def generate(case: str, out: str, pin: bool = False) -> str:
    """Runs the case's generator into `out`; returns its stderr on failure."""
    env = dict(os.environ)
    env.pop("AION_FIXTURE_PIN", None)
    if pin:
        env["AION_FIXTURE_PIN"] = os.path.join(FIX, case)
    r = subprocess.run([sys.executable, os.path.join(FIX, case, "make_fixture.py"), "--out", out],
                       capture_output=True, text=True, env=env)
    return None if r.returncode == 0 else r.stderr


def main() -> int:
    cases = sys.argv[1:] or cases_with_generators()
    failed = 0
    print(f"float tolerance: {FLOAT_TOL:.1e} of each array's largest value")
    with tempfile.TemporaryDirectory(prefix="aion-fixtures-") as tmp:
        for case in cases:
            out = os.path.join(tmp, case)
            err = generate(case, out)
            if err:
                print(f"FAIL {case}: generator failed\n{err}")
                failed += 1
                continue
            problems, notes, excused = compare_case(case, out)
            second = ""
            if excused and not problems:
                err = generate(case, out + ".pinned", pin=True)
                if err:
                    problems.append(f"generator failed with the committed tokens pinned\n{err}")
                else:
                    p2, _, _ = compare_case(case, out + ".pinned")
                    problems += [f"(committed tokens pinned) {x}" for x in p2]
                    second = "; values computed from the committed tokens unchanged"
            summary = f" ({excused} values excused as float noise at an edge{second})" if excused else ""
            print(("ok   " if not problems else "FAIL ") + case + summary)
            for n in notes:
                print("     excused: " + n)
            for p in problems:
                print("     " + p)
            failed += bool(problems)
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
