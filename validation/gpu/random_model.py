"""A base-size AION with random weights, in the Hub layout, from torch alone (no polymathic-aion).

    python3 validation/gpu/random_model.py --out DIR [--seed N]
    validation/.venv/bin/python validation/gpu/random_model.py --write-spec

The GPU machines have torch and safetensors but not the reference package, and the model (1.5 GB)
cannot travel there; so `model_spec.json` (committed, made with --write-spec from the reference)
lists every tensor of each component's state dict (name, shape, dtype, how to draw it) and its
config.json, and this script draws the weights there in a few seconds:

  transformer      validation/make_base_model.py's configuration (D 768, 12 + 12 blocks, SwiGLU,
                   qk-norm, no biases, 39 modalities): `DIR/config.json`, `DIR/model.safetensors`
  codecs/image     the released MagViT configuration of validation/bench_embed.py (hidden 512)
  codecs/FLUX_*    LogScalarCodec tables for the four Legacy Survey fluxes

Draws (as make_base_model.py and bench_embed.py): N(0, 1/fan_in) for matrices and kernels,
N(1, 0.1) for 1-D weights, N(0, 0.1) for other parameters; float buffers (position tables,
LayerNorm bias buffers) N(0, 0.02); integer buffers (FSQ levels) keep their values; scalar codec
reservoirs N(1, 1.5²) with the table their sorted quantiles. Not the reference's initialisation
and not its released weights: a model with the released shapes, for speed and device-agreement
checks only.
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = os.path.join(HERE, "model_spec.json")
DTYPES = {"float32": torch.float32, "int32": torch.int32, "int64": torch.int64}


def write_spec() -> None:
    import sys

    sys.path.insert(0, os.path.dirname(HERE))
    from bench_embed import FLUXES, IMAGE_CFG  # noqa: E402
    from make_base_model import CONFIG  # noqa: E402

    from aion.codecs import ImageCodec  # noqa: E402
    from aion.model import AION  # noqa: E402

    def tensors(module, rename=lambda k: k):
        params = dict(module.named_parameters())
        out = []
        for name, t in module.state_dict().items():
            dtype = str(t.dtype).removeprefix("torch.")
            if name in params:
                p = params[name]
                draw = ("fan_in" if p.dim() >= 2 and not name.endswith("mod_emb") else
                        "one" if p.dim() == 1 and name.endswith("weight") else "small")
            elif t.is_floating_point():
                draw = "buffer"
            else:
                draw = t.flatten().tolist()
            out.append([rename(name), list(t.shape), dtype, draw])
        return out

    spec = {"": {"config": CONFIG, "tensors": tensors(AION(CONFIG))},
            "codecs/image": {"config": IMAGE_CFG, "tensors": tensors(ImageCodec(**IMAGE_CFG))}}
    for name in FLUXES:
        spec[f"codecs/{name}"] = {
            "config": {"modality": name, "codebook_size": 1024, "reservoir_size": 4000, "min_log_value": -3},
            "tensors": [["quantizer._reservoir", [4000], "float32", "reservoir"],
                        ["quantizer._index_to_val", [1024], "float32", "quantiles"]]}
    with open(SPEC, "w") as f:
        json.dump(spec, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"wrote {SPEC}: {sum(len(c['tensors']) for c in spec.values())} tensors")


@torch.no_grad()
def build(out: str, seed: int) -> None:
    spec = json.load(open(SPEC))
    g = torch.Generator().manual_seed(seed)
    for folder, comp in sorted(spec.items()):
        state, reservoir = {}, None
        for name, shape, dtype, draw in comp["tensors"]:
            if isinstance(draw, list):
                t = torch.tensor(draw, dtype=DTYPES[dtype]).reshape(shape)
            elif draw == "reservoir":
                reservoir = torch.randn(shape, generator=g) * 1.5 + 1.0
                t = reservoir
            elif draw == "quantiles":
                t = torch.quantile(reservoir, torch.linspace(0, 1, shape[0]))
            else:
                t = torch.randn(shape, generator=g)
                if draw == "fan_in":
                    t /= max(1, t[0].numel()) ** 0.5
                elif draw == "one":
                    t = 1.0 + 0.1 * t
                else:
                    t *= 0.02 if draw == "buffer" else 0.1
            state[name] = t.contiguous()
        d = os.path.join(out, folder)
        os.makedirs(d, exist_ok=True)
        save_file(state, os.path.join(d, "model.safetensors"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(comp["config"], f, indent=2, sort_keys=True)
        n = sum(t.numel() for t in state.values())
        print(f"{folder or 'transformer'}: {n:,} values")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=20251127)
    ap.add_argument("--write-spec", action="store_true")
    a = ap.parse_args()
    if a.write_spec:
        write_spec()
    elif a.out:
        build(a.out, a.seed)
    else:
        ap.error("--out DIR or --write-spec")


if __name__ == "__main__":
    main()
