"""Times the reference `AION.encode` on a Hub folder, for comparison with the Rust example
`cargo run --release -p aion-model --example bench_encode -- DIR`.

    bench_encode.py DIR [--batch 4] [--threads 2] [--repeat 3]

Inputs: image (576) + DESI spectrum (273) + g flux (1) = 850 tokens per object, seeded random
ids, no masks, all tokens kept (num_encoder_tokens = 850).
"""

import argparse
import time

import torch

from aion.model import AION


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AION.from_pretrained(args.dir).eval()
    g = torch.Generator().manual_seed(0)
    b = args.batch
    tokens = {
        "tok_image": torch.randint(0, 4375, (b, 576), generator=g),
        "tok_spectrum_desi": torch.randint(0, 1024, (b, 273), generator=g),
        "tok_flux_g": torch.randint(0, 1024, (b, 1), generator=g),
    }
    times = []
    with torch.inference_mode():
        for _ in range(args.repeat + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            ctx = model.encode(tokens, num_encoder_tokens=850)
            times.append(f"{time.perf_counter() - t0:.2f} s ({time.process_time() - c0:.2f} s CPU)")
    print(f"torch {torch.__version__}, {args.threads} threads, B={b}, context {tuple(ctx.shape)}: "
          + ", ".join(times))


if __name__ == "__main__":
    main()
