"""Tests of check_fixtures.py's token judges on the committed fixtures, with tokens changed by
hand: a change at a quantisation edge (or a sampling decision within the float noise) is
excused, one elsewhere is not. Cheap (no fixture is regenerated); scripts/test.sh runs it.

    validation/.venv/bin/python validation/test_check_fixtures.py
"""

import copy
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_fixtures as cf  # noqa: E402


def arrays(case: str) -> dict:
    return {r: cf.load_arrays(os.path.join(cf.FIX, case, r)) for r in cf.fixture_files(case) if not r.endswith(".json")}


def judge(case: str, new: dict, name: str):
    return next(j for j in cf.judges(case, new) if name in (getattr(j, "tokens", None), getattr(j, "prefix", None)))


def test_fsq() -> None:
    new = arrays("image_codec")
    old = copy.deepcopy(new)
    io, levels = new["io.safetensors"], np.array([7, 5, 5, 5, 5])
    z = io["des_pre_quant"].astype(np.float64)
    dist, half_l = cf.fsq_edge_distance(z, levels)
    b, c, n = np.unravel_index(np.argmin(dist), dist.shape)  # the latent nearest to a rounding edge
    assert dist[b, c, n] <= cf.FLOAT_TOL * cf.scale(io["des_pre_quant"]) * half_l[c]
    bounded = np.tanh(z[b, c, n] + np.arctanh((0.0 if levels[c] % 2 else 0.5) / half_l[c])) * half_l[c]
    step = 1 if bounded - np.floor(bounded) >= 0.5 else -1  # the level across that edge
    basis = np.cumprod([1, 7, 5, 5, 5])
    t, q = io["des_tokens"].copy(), io["des_quantized"].copy()
    t[b, n] += step * basis[c]
    q[b, c, n] += step / (levels[c] // 2)
    old["io.safetensors"].update(des_tokens=t, des_quantized=q)
    j = judge("image_codec", new, "des_tokens")
    excused, problems, _ = j.judge(old, new)
    assert excused.sum() == 1 and not problems, problems
    t[2, 100] += 1  # a token far from any edge
    excused, problems, _ = j.judge(old, new)
    assert excused.sum() == 1 and len(problems) == 1, problems
    q[0, 0, 0] += 0.5  # a quantized value whose token did not change
    assert any("des_quantized" in p for p in j.judge(old, new)[1])


def test_spectrum() -> None:
    new = arrays("spectrum_codec")
    old = copy.deepcopy(new)
    io = new["io.safetensors"]
    pq = io["row1_pre_quant"].copy()
    pq[3, 40] = np.copysign(1e-7, pq[3, 40])  # a latent on the LFQ threshold
    io["row1_pre_quant"] = pq
    t = io["row1_tokens"].copy()
    t[41] ^= 1 << (10 - 1 - 3)
    old["io.safetensors"]["row1_tokens"] = t
    j = judge("spectrum_codec", new, "row1_tokens")
    excused, problems, _ = j.judge(old, new)
    assert excused.sum() == 1 and not problems, problems
    t[100] ^= 1  # a bit whose latent is far from 0
    assert len(j.judge(old, new)[1]) == 1
    t[0] += 1  # the normalisation bucket, far from its edge
    assert len(j.judge(old, new)[1]) == 2


def test_table() -> None:
    new = arrays("scalar_codecs")
    old = copy.deepcopy(new)
    io = new["io.safetensors"]
    z, table = io["tok_flux_g_compressed"], io["tok_flux_g_table"]
    t = io["tok_flux_g_tokens"].copy()
    assert z[0] == table[t[0]]  # the fixture puts row 0 on a table entry
    t[0] += 1
    old["io.safetensors"]["tok_flux_g_tokens"] = t
    j = judge("scalar_codecs", new, "tok_flux_g_tokens")
    excused, problems, _ = j.judge(old, new)
    assert excused.sum() == 1 and not problems, problems
    t[10] += 1
    assert len(j.judge(old, new)[1]) == 1


def test_sampled() -> None:
    new = arrays("generate")
    io, pre = new["io.safetensors"], "case.maskgit_cosine"
    close, margin, steps = io[f"{pre}.close"], io[f"{pre}.close_margin"], io[f"{pre}.steps"]
    eps = cf.FLOAT_TOL * io[f"{pre}.logit_max"][0]
    own = np.array([p >= 0 and steps[r, p] == s for r, s, p in close])  # a position's draw at its reveal step
    k = int(np.argmin(np.where(own, margin, np.inf)))
    r, s, p = close[k]
    assert margin[k] <= eps
    old = copy.deepcopy(new)
    t = io[f"{pre}.tokens"].copy()
    t[r, p] += 1
    later = np.nonzero(steps[r] > s)[0][:5]
    t[r, later] += 1  # what follows in that row
    old["io.safetensors"][f"{pre}.tokens"] = t
    j = judge("generate", new, pre)
    excused, problems, _ = j.judge(old, new)
    assert excused.sum() == 1 + len(later) and not problems, problems
    t[(r + 1) % 3, 5] += 1  # another row, no near decision
    assert len(j.judge(old, new)[1]) == 1


if __name__ == "__main__":
    for name, f in list(globals().items()):
        if name.startswith("test_"):
            f()
            print(f"ok   {name}")
