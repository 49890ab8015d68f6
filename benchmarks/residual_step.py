"""One training step of a residual network against the plain network of the same depth.

Depth 100, width 256, batch 64, tanh, MSE, plain SGD, the gradient norms a probe takes every
step (as in `gradlab run`). A full residual block adds one matrix product forward (act(h) V)
and two backward (dL/dV and dL/da) to the plain layer's three: about 2x the plain step's
matrix work, one extra product per block and direction. A reduced block adds only the sum.
Both networks are timed in alternating blocks after a warm-up (median ms/step).

    python benchmarks/residual_step.py [--depth 100] [--width 256] [--repeats 5]
"""

import argparse
import statistics
import time

import numpy as np

from gradlab.engine import MLP, Probe, ResidualMLP, make_optimizer, mse


def build(kind: str, depth: int, width: int):
    spec = dict(
        input_dim=width, output_dim=1, depth=depth, width=width, activation="tanh",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    if kind == "plain":
        return MLP(**spec)
    return ResidualMLP(**spec, branch=kind, branch_scale=0.1)


def step_time(model, x, y, steps: int) -> float:
    """Seconds per step: forward, backward with a probe, SGD update."""
    optimizer, probe = make_optimizer("sgd", 1e-6), Probe(model)  # small: no divergence
    start = time.perf_counter()
    for _ in range(steps):
        probe.start(layer_stats=False)
        _, dlogits = mse(model.forward(x), y)
        model.backward(dlogits, probe=probe)
        optimizer.step(model.params, model.grads)
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(args.batch, args.width)), rng.normal(size=(args.batch, 1))
    models = {kind: build(kind, args.depth, args.width) for kind in ("plain", "full", "reduced")}
    for model in models.values():
        step_time(model, x, y, 3)  # warm-up
    times = {kind: [] for kind in models}
    for _ in range(args.repeats):
        for kind, model in models.items():
            times[kind].append(step_time(model, x, y, args.steps))
    plain = statistics.median(times["plain"])
    print(f"depth {args.depth}, width {args.width}, batch {args.batch}, tanh, SGD")
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"  {kind:>8}: {1e3 * median:8.2f} ms/step  ({median / plain:.2f}x plain)")


if __name__ == "__main__":
    main()
