"""Writes a released-size `SpectrumCodec` with seeded random weights in the Hub layout, for
timing (`lib/aion-model/examples/spectrum_encode_bench.rs`), and times the reference encode on
the same synthetic batch.

Usage: spectrum_full_random.py OUT_DIR [batch]   (writes OUT_DIR/{config.json,model.safetensors},
about 130 MB; the config is the spec's inferred released one: defaults + latent_channels 768,
embedding_dim 10)
"""

import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import randomize_, save_json, save_tensors  # noqa: E402

from aion.codecs import SpectrumCodec  # noqa: E402
from aion.modalities import Spectrum  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    torch.set_num_threads(os.cpu_count() or 1)
    config = {"latent_channels": 768, "embedding_dim": 10, "dim": 10, "codebook_size": 1024}
    codec = SpectrumCodec(**config).eval()
    randomize_(codec, 1)
    save_tensors(os.path.join(out, "model.safetensors"), codec.state_dict())
    save_json(os.path.join(out, "config.json"), config)

    n = 7781
    wl = torch.tensor(3600.0 + 0.8 * np.arange(n), dtype=torch.float32)
    flux = torch.stack([2.0 + (b + 1.0) * torch.sin(torch.arange(n, dtype=torch.float32) * 0.01)
                        for b in range(batch)])
    spec = Spectrum(flux=flux, ivar=torch.full((batch, n), 4.0), mask=torch.zeros(batch, n, dtype=torch.bool),
                    wavelength=wl.repeat(batch, 1))
    with torch.no_grad():
        tokens = codec.encode(spec)
        for b, row in enumerate(tokens.tolist()):
            weighted = sum((i + 1) * v for i, v in enumerate(row))
            print(f"row {b}: first tokens {row[:6]}, Σ (i+1)·token = {weighted}")
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            codec.encode(spec)
            print(f"reference encode B={batch} ({torch.get_num_threads()} threads): "
                  f"wall {time.perf_counter() - t:.3f} s, cpu {time.process_time() - c:.3f} s")


if __name__ == "__main__":
    main()
