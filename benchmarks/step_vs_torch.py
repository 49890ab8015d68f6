"""One SGD training step of gradlab's engine against PyTorch CPU on the same network.

The network: ``depth`` hidden Linear+sigmoid layers of ``width`` units (input_dim = width),
a Linear output of 1 unit, MSE loss, plain SGD with lr 0.01, and the Frobenius norm of every
weight gradient computed every step on both sides (gradlab: ``norms.l2_norm``; torch:
``torch.linalg.vector_norm``). Both start from identical weights; before any timing, one
float64 step per cell is checked to agree (loss, every gradient, every parameter after the
step, the gradient norms) to 1e-10 relative, and the script aborts if it does not.

The two sides are timed alternately (interleaved blocks of steps after a warm-up) and the
median ms/step is reported, with torch and numpy's BLAS on the same number of threads (the
machine's core count). Targets: gradlab faster than torch in every cell (ratio < 1),
geometric-mean ratio <= 0.6, and the widest cell (depth 50, width 512, batch 256) at >= 70%
of the GFLOP/s of a plain ``np.matmul`` (batch, width) x (width, width) in the same run.

    pip install -e '.[bench]'
    python benchmarks/step_vs_torch.py [--quick] [--repeats N] [--threads N]
"""

import os
import sys


def _threads_from_argv() -> int:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# BLAS libraries read their thread count when they are loaded: set it before numpy/torch.
THREADS = _threads_from_argv()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import argparse  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gradlab.engine import MLP  # noqa: E402
from gradlab.engine.losses import mse  # noqa: E402
from gradlab.engine.norms import l2_norm  # noqa: E402
from gradlab.engine.optim import SGD  # noqa: E402

LR = 0.01
TOLERANCE = 1e-10
DEPTHS, WIDTHS, BATCHES, DTYPES = (10, 50), (32, 128, 512), (64, 256), ("float64", "float32")
QUICK = [(10, 32, 64), (10, 128, 64), (50, 512, 256)]
WIDEST = (50, 512, 256)
TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class GradlabSide:
    def __init__(self, depth, width, dtype, seed):
        rng = np.random.default_rng(seed)
        self.model = MLP(width, 1, depth, width, "sigmoid", "none", "normal", 1.0, 0.1, dtype, rng)
        self.optimizer = SGD(LR)
        self.weight_names = [n for n in self.model.params if n.endswith(".weight")]
        self.loss = math.nan
        self.norms: list[float] = []
        self.initial = {name: value.copy() for name, value in self.model.params.items()}

    def reset(self):
        self.model.load_params(self.initial)

    def step(self, x, y):
        model = self.model
        self.loss, dout = mse(model.forward(x), y)
        model.backward(dout)
        grads = model.grads
        self.norms = [l2_norm(grads[name]) for name in self.weight_names]
        self.optimizer.step(model.params, grads)


class TorchSide:
    def __init__(self, gradlab_model: MLP, dtype):
        depth, width = gradlab_model.depth, gradlab_model.width
        layers = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, width), torch.nn.Sigmoid()]
        layers.append(torch.nn.Linear(width, 1))
        self.net = torch.nn.Sequential(*layers).to(TORCH_DTYPES[dtype])
        self.linears = [m for m in self.net if isinstance(m, torch.nn.Linear)]
        self.names = [f"layer{i + 1}" for i in range(depth)] + ["output"]
        params = gradlab_model.params
        with torch.no_grad():
            for name, linear in zip(self.names, self.linears, strict=True):
                linear.weight.copy_(torch.from_numpy(params[f"{name}.weight"].T.copy()))
                linear.bias.copy_(torch.from_numpy(params[f"{name}.bias"].copy()))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.weights = [linear.weight for linear in self.linears]
        self.loss = math.nan
        self.norms: list[float] = []
        self.initial = [p.detach().clone() for p in self.net.parameters()]

    def reset(self):
        with torch.no_grad():
            for param, value in zip(self.net.parameters(), self.initial, strict=True):
                param.copy_(value)

    def step(self, x, y):
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        loss.backward()
        norms = [torch.linalg.vector_norm(w.grad) for w in self.weights]
        self.norms = torch.stack(norms).tolist()
        self.optimizer.step()
        self.loss = loss.item()

    def named(self, what):
        """(gradlab name, numpy array in gradlab's layout) for every weight and bias."""
        for name, linear in zip(self.names, self.linears, strict=True):
            weight = linear.weight if what == "param" else linear.weight.grad
            bias = linear.bias if what == "param" else linear.bias.grad
            yield f"{name}.weight", weight.detach().numpy().T
            yield f"{name}.bias", bias.detach().numpy()


def make_data(width, batch, dtype, seed):
    rng = np.random.default_rng(seed + 1)
    x = rng.normal(size=(batch, width)).astype(dtype)
    y = rng.normal(size=(batch, 1)).astype(dtype)
    return x, y, torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def make_pair(depth, width, batch, dtype, seed=0):
    ours = GradlabSide(depth, width, dtype, seed)
    theirs = TorchSide(ours.model, dtype)
    return ours, theirs, make_data(width, batch, dtype, seed)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff if scale == 0.0 else diff / scale


def check_agreement(depth, width, batch):
    """One float64 step on both sides; SystemExit unless everything agrees to TOLERANCE."""
    ours, theirs, (x, y, tx, ty) = make_pair(depth, width, batch, "float64")
    for name, value in theirs.named("param"):
        if relative_error(ours.model.params[name], value) != 0.0:
            sys.exit(f"initial weights differ at {name}")
    ours.step(x, y)
    theirs.step(tx, ty)
    errors = {"loss": relative_error(ours.loss, theirs.loss)}
    errors["weight grad norms"] = relative_error(ours.norms, theirs.norms)
    for name, value in theirs.named("grad"):
        errors[f"grad {name}"] = relative_error(ours.model.grads[name], value)
    for name, value in theirs.named("param"):
        errors[f"param {name}"] = relative_error(ours.model.params[name], value)
    worst = max(errors, key=errors.get)
    if not errors[worst] <= TOLERANCE:  # also catches nan
        sys.exit(
            f"ABORT: depth {depth} width {width} batch {batch} float64: gradlab and torch "
            f"disagree, {worst}: relative error {errors[worst]:.3g} > {TOLERANCE:g}"
        )
    return errors[worst]


def time_block(side, x, y, steps, settle=0.0) -> float:
    """ms/step over ``steps`` steps, after ``settle`` seconds of sleep and one untimed step.

    The sleep lets the other library's idle worker threads stop spinning: OpenBLAS's
    threads busy-wait ~0.1 s after each call, and on 2 cores they take a core from a torch
    block that follows at once (torch ran up to 2x slower then, flattering gradlab)."""
    side.reset()  # lr 0.01 on one repeated batch diverges at width 512: restart each block
    if settle:
        time.sleep(settle)
    side.step(x, y)  # wake this side's threads
    side.reset()
    start = time.perf_counter()
    for _ in range(steps):
        side.step(x, y)
    return (time.perf_counter() - start) / steps * 1e3


def time_cell(depth, width, batch, dtype, repeats, block_seconds, settle):
    """Median ms/step of (gradlab, torch), timed in alternating blocks after a warm-up."""
    ours, theirs, (x, y, tx, ty) = make_pair(depth, width, batch, dtype)
    warm = [time_block(ours, x, y, 3, settle), time_block(theirs, tx, ty, 3, settle)]
    steps = max(1, int(block_seconds * 1e3 / max(warm)))
    times = {"gradlab": [], "torch": []}
    for _ in range(repeats):
        times["gradlab"].append(time_block(ours, x, y, steps, settle))
        times["torch"].append(time_block(theirs, tx, ty, steps, settle))
    if not (math.isfinite(ours.loss) and math.isfinite(theirs.loss)):
        sys.exit(f"ABORT: non-finite loss in the timing of {depth}/{width}/{batch}/{dtype}")
    return statistics.median(times["gradlab"]), statistics.median(times["torch"])


def matmul_gflops(width, batch, dtype, repeats, block_seconds) -> float:
    """GFLOP/s of np.matmul (batch, width) x (width, width) into a preallocated output."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(batch, width)).astype(dtype)
    b = rng.normal(size=(width, width)).astype(dtype)
    out = np.empty((batch, width), dtype=dtype)
    np.matmul(a, b, out=out)
    start = time.perf_counter()
    for _ in range(5):
        np.matmul(a, b, out=out)
    steps = max(1, int(block_seconds / ((time.perf_counter() - start) / 5)))
    rates = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        for _ in range(steps):
            np.matmul(a, b, out=out)
        rates.append(2.0 * batch * width * width * steps / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def blas_info() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "numpy BLAS: (install threadpoolctl to show)"
    pools = [
        f"{p['internal_api']} x{p['num_threads']}"
        + (f" ({p['architecture']} kernels)" if p.get("architecture") else "")
        for p in threadpool_info()
    ]
    return "thread pools: " + ", ".join(pools)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small subset, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed blocks per side")
    parser.add_argument("--threads", type=int, default=THREADS, help="torch and BLAS threads")
    parser.add_argument("--block", type=float, default=None, help="seconds per timed block")
    parser.add_argument(
        "--settle", type=float, default=0.3, help="seconds of sleep before each block"
    )
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    block = args.block or (0.05 if args.quick else 0.2)
    torch.set_num_threads(args.threads)
    shapes = QUICK if args.quick else list(itertools.product(DEPTHS, WIDTHS, BATCHES))
    print(
        f"numpy {np.__version__}, torch {torch.__version__}, {args.threads} threads "
        f"(torch {torch.get_num_threads()}); {blas_info()}"
    )
    variables = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    forced = {v: os.environ[v] for v in variables if v in os.environ}
    if forced:
        print(
            "NOTE: OpenBLAS settings forced by the environment ("
            + ", ".join(f"{k}={v}" for k, v in forced.items())
            + "): numpy runs those kernels, not the ones it detects for this CPU"
        )

    worst = max(check_agreement(*shape) for shape in shapes)
    print(
        f"float64 agreement check passed on {len(shapes)} cells: worst relative error "
        f"{worst:.2e} (loss, gradients, norms, params after one step; limit {TOLERANCE:g})"
    )
    print(
        f"median of {repeats} interleaved blocks of ~{block:g} s per side, each after "
        f"{args.settle:g} s of sleep\n"
    )

    header = f"{'cell (depth/width/batch/dtype)':<32} {'gradlab ms':>11} {'torch ms':>10}"
    header += f" {'ratio':>7}"
    print(header)
    print("-" * len(header))
    results = {}
    for (depth, width, batch), dtype in itertools.product(shapes, DTYPES):
        ours, theirs = time_cell(depth, width, batch, dtype, repeats, block, args.settle)
        results[depth, width, batch, dtype] = ours, theirs
        cell = f"{depth}/{width}/{batch}/{dtype}"
        flag = "" if ours < theirs else "  <- slower"
        print(f"{cell:<32} {ours:11.3f} {theirs:10.3f} {ours / theirs:7.3f}{flag}", flush=True)
    ratios = [ours / theirs for ours, theirs in results.values()]
    geomean = math.exp(statistics.fmean(math.log(r) for r in ratios))
    faster = sum(r < 1.0 for r in ratios)
    print(f"\ngeometric-mean ratio gradlab/torch: {geomean:.3f}  (target <= 0.6)")
    print(f"gradlab faster in {faster}/{len(ratios)} cells  (target: all)")

    depth, width, batch = max(shapes, key=lambda s: s[0] * s[1] * s[1] * s[2])
    if (depth, width, batch) != WIDEST:
        print(f"(widest cell of this subset: depth {depth}, width {width}, batch {batch})")
    flops = 6.0 * batch * width * width * depth
    print(f"\nwidest cell depth {depth} width {width} batch {batch}: {flops / 1e9:.2f} GFLOP/step")
    for dtype in DTYPES:
        ours, theirs = results[depth, width, batch, dtype]
        peak = matmul_gflops(width, batch, dtype, repeats, block)
        rate, torch_rate = flops / ours / 1e6, flops / theirs / 1e6
        print(
            f"  {dtype}: gradlab {rate:6.1f} GFLOP/s = {rate / peak:6.1%} of np.matmul "
            f"{peak:6.1f} GFLOP/s (torch {torch_rate:6.1f})  (target >= 70%)"
        )
    load = os.getloadavg()[0]
    if load > args.threads + 0.5:
        print(f"\nWARNING: load average {load:.1f} > {args.threads} threads: other processes ran")


if __name__ == "__main__":
    main()
