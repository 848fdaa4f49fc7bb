"""Builds a base-size AION transformer with seeded random weights and saves it in the Hub layout.

    make_base_model.py --out DIR [--seed N] [--keys /work/shared/aion-state-dict-keys.txt]

Architecture: D 768, 12 + 12 blocks, 12 heads, SwiGLU (act SiLU, gated MLP), qk-norm, no biases
(the presumed released base configuration, aion-spec §3.1); domains_in = domains_out = every
modality of the reference's MODALITY_INFO except tok_segmap (39, as in
aion-state-dict-keys.txt). About 312 M parameters; DIR/model.safetensors is about 1.2 GB and is
not meant to be committed.

The weights are drawn in one vectorised pass per tensor (N(0, 1/fan_in) for matrices, 1 + 0.1 N
for norm weights, 0.1 N for other vectors); position tables and LayerNorm bias buffers keep their
constructor values. With --keys, the state-dict names and shapes are compared with the
`### AION base-like` section of that file and the differences printed.

Use it for the Rust test that loads a full-size model:
    AION_BASE_MODEL_DIR=DIR cargo test -p aion-model --test parity base_model -- --nocapture
"""

import argparse
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import seed_all  # noqa: E402

from aion.fourm.modality_info import MODALITY_INFO  # noqa: E402
from aion.model import AION  # noqa: E402

DOMAINS = [k for k in MODALITY_INFO if k != "tok_segmap"]
CONFIG = {
    "domains_in": DOMAINS,
    "domains_out": DOMAINS,
    "dim": 768,
    "encoder_depth": 12,
    "decoder_depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": False,
    "proj_bias": False,
    "mlp_bias": False,
    "norm_bias": False,
    "act_layer": "SiLU",
    "gated_mlp": True,
    "qk_norm": True,
}


@torch.no_grad()
def randomize_fast_(model: torch.nn.Module, g: torch.Generator) -> None:
    for name, p in model.named_parameters():
        if p.dim() >= 2 and not name.endswith("mod_emb"):
            p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
        elif p.dim() == 1 and name.endswith("weight"):
            p.normal_(1.0, 0.1, generator=g)
        else:
            p.normal_(0.0, 0.1, generator=g)


def read_reference_keys(path: str) -> dict:
    """`name -> shape` of the `### AION` section of aion-state-dict-keys.txt."""
    keys, inside = {}, False
    with open(path) as f:
        for line in f:
            if line.startswith("###"):
                inside = line.startswith("### AION")
                continue
            if inside and line.strip():
                name, shape = line.split("\t")[:2]
                keys[name] = tuple(int(v) for v in re.findall(r"\d+", shape))
    return keys


def compare(label: str, ours: dict, ref: dict) -> None:
    missing = sorted(set(ref) - set(ours))
    extra = sorted(set(ours) - set(ref))
    shape = sorted(k for k in set(ours) & set(ref) if tuple(ours[k]) != ref[k])
    print(f"{label}: {len(ours)} entries vs {len(ref)} in the reference list; "
          f"{len(missing)} only in the list, {len(extra)} only here, {len(shape)} with another shape")
    for k in missing[:20]:
        print(f"  only in the list: {k} {ref[k]}")
    for k in extra[:20]:
        print(f"  only here: {k} {tuple(ours[k])}")
    for k in shape[:20]:
        print(f"  shape: {k} here {tuple(ours[k])}, list {ref[k]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20251127)
    ap.add_argument("--keys", help="aion-state-dict-keys.txt to compare the state dict with")
    args = ap.parse_args()

    t0 = time.time()
    g = seed_all(args.seed)
    model = AION(CONFIG).eval()
    randomize_fast_(model, g)
    n = sum(p.numel() for p in model.parameters())
    print(f"built and randomised {n:,} parameters in {time.time() - t0:.1f} s")

    t0 = time.time()
    model.save_pretrained(args.out)
    readme = os.path.join(args.out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    print(f"saved {args.out} ({size / 1e9:.2f} GB) in {time.time() - t0:.1f} s")

    if args.keys:
        from safetensors import safe_open

        ref = read_reference_keys(args.keys)
        state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        compare("state_dict()", state, ref)
        with safe_open(os.path.join(args.out, "model.safetensors"), "pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        compare("model.safetensors", stored, ref)


if __name__ == "__main__":
    main()
