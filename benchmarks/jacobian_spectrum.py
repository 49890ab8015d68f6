"""The Jacobian spectrum of a width-512, depth-50 network for 4 samples: target under 3 s.

Times ``gradlab.engine.jacobian.jacobian_spectrum`` (the forward pass of the samples, the
running (4, 512, 512) float64 product over 49 layers, 4 SVDs) on a tanh MLP with orthogonal
weights at sigma_w = 1, ``--repeats`` times after one warm-up call; prints the fastest and the
median, and the GFLOP/s of the products (2 S L n^3 flops), against the same products as plain
``np.matmul`` calls timed in the same process: the machine's BLAS rate at that moment.

    python benchmarks/jacobian_spectrum.py [--width 512] [--depth 50] [--samples 4] [--repeats 5]
"""

import argparse
import statistics
import time

import numpy as np

from gradlab.engine import MLP
from gradlab.engine.jacobian import jacobian_spectrum


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model = MLP(32, 1, args.depth, args.width, "tanh", init="orthogonal", rng=rng)
    x = rng.normal(size=(args.samples, 32))
    jacobian_spectrum(model, x)  # warm-up: BLAS threads, page faults of the buffers
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        jacobian_spectrum(model, x)
        times.append(time.perf_counter() - start)
    flops = 2 * args.samples * args.depth * args.width**3
    stacked = rng.normal(size=(args.samples * args.width, args.width))  # S n, n
    weight = rng.normal(size=(args.width, args.width))
    matmul = []  # the same products as plain np.matmul calls: what BLAS allows here
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.depth):
            np.matmul(stacked, weight)
        matmul.append(time.perf_counter() - start)
    print(
        f"width {args.width}, depth {args.depth}, {args.samples} samples, {args.repeats} runs: "
        f"min {min(times):.3f} s, median {statistics.median(times):.3f} s "
        f"({flops / min(times) / 1e9:.1f} GFLOP/s in the products at the fastest)"
    )
    print(
        f"the same {args.depth} products as plain np.matmul: min {min(matmul):.3f} s, "
        f"median {statistics.median(matmul):.3f} s ({flops / min(matmul) / 1e9:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
