"""Shared helpers for the fixture generators (seeding, re-randomisation, saving).

Every fixture is made from the reference package `polymathic-aion` 0.0.2 with seeded random
weights; nothing is downloaded. Tensors are saved as safetensors (bool as uint8), so the Rust
tests read them with the `safetensors` crate.
"""

import argparse
import json
import os
import random

import numpy as np
import torch
from safetensors.torch import save_file

torch.set_num_threads(1)  # deterministic summation order, and CI has 2 cores anyway

# Set by check_fixtures.py for its second pass over a case whose regenerated tokens differ from
# the committed ones only at quantisation edges: the committed case folder.
PIN = os.environ.get("AION_FIXTURE_PIN")


def out_dir(script: str) -> str:
    """The folder a fixture generator writes to: `--out DIR`, by default the script's own folder."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(script)))
    return ap.parse_args().out


def seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    return g


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Overwrites every parameter and float buffer with seeded noise.

    Several reference layers are zero-initialised by design (SE gate, LoRA up, residual convs),
    which would hide bugs; so: N(0, 1/fan_in) for matrices and conv kernels, 1 + 0.1 N for norm
    weights, 0.1 N for other vectors, and positive running variances for batch norms.
    Non-float buffers (FSQ levels, LFQ masks) and position-embedding buffers are kept.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        if p.dim() >= 2 and not name.endswith("mod_emb") and "grn" not in name:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(fan_in))
        elif p.dim() == 1 and name.endswith("weight"):  # norm / affine scales
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, b in sorted(module.named_buffers(), key=lambda kv: kv[0]):
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))


def random_codec(codec_class, config: dict, seed: int, weight_seed: int):
    """After seeding everything with `seed`: a `codec_class(**config)` with seeded random weights
    (`randomize_` with `weight_seed`), and a numpy generator seeded with `seed`."""
    seed_all(seed)
    rng = np.random.default_rng(seed)
    codec = codec_class(**config)
    randomize_(codec, seed=weight_seed)
    return codec, rng


def pinned(value: torch.Tensor, name: str, file: str = "io.safetensors", row=None) -> torch.Tensor:
    """The tokens (or quantised values) that what follows is computed from.

    Normally `value` itself. In check_fixtures.py's second pass (AION_FIXTURE_PIN = the committed
    case folder) the committed array `name` of `file` (its row `row` if given) instead: where
    float noise moved a latent across a quantisation edge, the values computed downstream of the
    token (decodes, embeddings) are then compared with the committed ones as plain floats.
    """
    if PIN is None:
        return value
    from safetensors.torch import load_file

    committed = load_file(os.path.join(PIN, file))[name]
    if row is not None:
        committed = committed[row]
    committed = committed.reshape(value.shape)
    return committed.to(value.dtype)


def pinning() -> bool:
    """Whether this run is check_fixtures.py's second pass (see `pinned`)."""
    return PIN is not None


def to_saveable(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.detach().cpu().contiguous().clone()


def save_tensors(path: str, tensors: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: to_saveable(v) for k, v in tensors.items()}, path)


def save_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_codec_hub(codec, root: str, name: str, config: dict) -> None:
    """Writes a codec as the Hub does: `root/codecs/<name>/{config.json,model.safetensors}`.

    The scalar codecs' Hub files use the `quantizer.` prefix (the module says `_quantizer.`);
    we write it the Hub way so the loaders are tested on what users will have.
    """
    d = os.path.join(root, "codecs", name)
    state = {k: v for k, v in codec.state_dict().items()}
    if name_is_scalar(codec):
        state = {("quantizer" + k[len("_quantizer"):] if k.startswith("_quantizer") else k): v for k, v in state.items()}
    save_tensors(os.path.join(d, "model.safetensors"), state)
    save_json(os.path.join(d, "config.json"), config)


def name_is_scalar(codec) -> bool:
    from aion.codecs.scalar import BaseScalarIdentityCodec

    return isinstance(codec, BaseScalarIdentityCodec)
