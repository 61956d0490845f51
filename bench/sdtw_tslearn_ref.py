#!/usr/bin/env python3
"""tslearn reference timing for bench/sdtw_bench (soft-DTW + gradients).

Reads the pairs the C++ benchmark wrote (raw little-endian float32: for each
pair x [n,d] then y [m,d]), runs tslearn's soft-DTW with the squared Euclidean
cost, its gradient E, and the gradients w.r.t. x and y (Jacobian products),
over `--threads` worker processes (each single-threaded, JIT warmed up before
timing; with --repeats R each number is the fastest of R runs), and prints one line:
  seconds=<wall> cpu_seconds=<CPU time of the pair computations> value_sum=<sum of values>
  cost_cpu=<CPU s of the cost matrices> dp_cpu=<CPU s of soft-DTW value + E from the costs>
  jac_cpu=<CPU s of the gradients to x and y from E>
If tslearn is missing it prints:  seconds=n/a
"""
import argparse
import os
import sys
import time


def _init_worker():
    # One core per worker: no nested BLAS / numba threads.
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    _run_pair((_warm_x, _warm_x, 1.0))  # compile the numba kernels before timing


_warm_x = None


def _run_pair(args):
    import numpy as np
    from tslearn.metrics import SoftDTW, SquaredEuclidean
    x, y, gamma = args
    cpu0 = time.process_time()
    dist = SquaredEuclidean(x, y)
    D = dist.compute()
    cpu1 = time.process_time()
    sdtw = SoftDTW(D, gamma=gamma)
    value = sdtw.compute()
    E = sdtw.grad()
    cpu2 = time.process_time()
    gx = dist.jacobian_product(E)
    gy = SquaredEuclidean(y, x).jacobian_product(np.ascontiguousarray(E.T))
    cpu3 = time.process_time()
    return float(value), cpu3 - cpu0, cpu1 - cpu0, cpu2 - cpu1, cpu3 - cpu2


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--pairs", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--m", type=int, required=True)
    p.add_argument("--d", type=int, required=True)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1,
                   help="run all pairs this many times and report the fastest run (CPU time)")
    a = p.parse_args()
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    try:
        import numpy as np
        import tslearn.metrics  # noqa: F401
    except ImportError:
        print("seconds=n/a")
        return
    data = np.fromfile(a.input, dtype="<f4").astype(np.float64)
    per_pair = (a.n + a.m) * a.d
    assert data.size == a.pairs * per_pair, "input size does not match --pairs/--n/--m/--d"
    jobs = []
    for b in range(a.pairs):
        chunk = data[b * per_pair:(b + 1) * per_pair]
        x = chunk[: a.n * a.d].reshape(a.n, a.d)
        y = chunk[a.n * a.d:].reshape(a.m, a.d)
        jobs.append((x, y, a.gamma))
    global _warm_x
    _warm_x = np.random.default_rng(0).standard_normal((4, a.d))
    runs = []  # (wall seconds, per-pair results) of each repeat
    if a.threads <= 1:
        _init_worker()
        for _ in range(max(1, a.repeats)):
            t0 = time.perf_counter()
            results = [_run_pair(j) for j in jobs]
            runs.append((time.perf_counter() - t0, results))
    else:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(a.threads, initializer=_init_worker) as pool:
            pool.map(_run_pair, [(_warm_x, _warm_x, 1.0)] * a.threads)  # all workers warm
            for _ in range(max(1, a.repeats)):
                t0 = time.perf_counter()
                results = pool.map(_run_pair, jobs, chunksize=1)
                runs.append((time.perf_counter() - t0, results))
    # Each quantity from its fastest repeat (values are the same in every one).
    def best(k):
        return min(sum(x[k] for x in res) for _, res in runs)
    print("seconds=%.6f cpu_seconds=%.6f value_sum=%.9g cost_cpu=%.6f dp_cpu=%.6f jac_cpu=%.6f"
          % (min(r[0] for r in runs), best(1), sum(x[0] for x in runs[0][1]), best(2), best(3),
             best(4)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
