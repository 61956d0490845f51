#!/usr/bin/env python3
"""Fits the degree-8 polynomial of ExpDouble (ops/cpu/sdtw_internal.h).

exp(r) on |r| <= ln(2)/2 (what is left after the Cody-Waite reduction), fitted
for relative error by iteratively reweighted least squares on Chebyshev nodes
(a Lawson iteration towards the minimax fit), in long double. Prints the
coefficients, constant term first, and the largest relative error of the
polynomial evaluated in float64 Horner order on a dense grid.

    python3 tests/golden/sdtw/fit_exp_poly.py   # numpy only; ~1 s
Output used in the code (2026-11-27): max rel error 7.75e-13.
"""
import numpy as np


def fit(degree, nodes=4000, iterations=60):
    half = np.log(2.0) / 2
    r = (np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes) * half).astype(np.longdouble)
    y = np.exp(r)
    V = np.vander(r, degree + 1, increasing=True)
    w = np.ones_like(r)
    for _ in range(iterations):
        scale = np.sqrt(w) / y  # relative error, reweighted towards the worst nodes
        coef, *_ = np.linalg.lstsq((V * scale[:, None]).astype(np.float64),
                                   (y * scale).astype(np.float64), rcond=None)
        err = np.abs((V @ coef.astype(np.longdouble) - y) / y)
        w = w * np.sqrt(err / err.max()) + 1e-30
        w /= w.sum()
    grid = np.linspace(-half, half, 200001)
    p = np.zeros_like(grid)
    for c in coef[::-1]:
        p = p * grid + c
    worst = float(np.max(np.abs(p / np.exp(grid.astype(np.longdouble)) - 1)))
    return coef, worst


if __name__ == "__main__":
    coef, worst = fit(8)
    print("max rel error", worst)
    for c in coef:
        print(repr(float(c)))
