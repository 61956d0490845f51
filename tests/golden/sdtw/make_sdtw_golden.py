#!/usr/bin/env python3
"""Golden fixture for soft-DTW and the Global Alignment Kernel (ops/sdtw.h, ops/gak.h).

Writes tests/golden/sdtw/sdtw_golden.json, read by sdtw_golden_test.cc. Run from
the repository root:

    python3 tests/golden/sdtw/make_sdtw_golden.py

References (float64, from float32 inputs; nothing ported from the C++):
  * tslearn: tslearn.metrics.SoftDTW (value, gradient E = dR/dD) and
    SquaredEuclidean.jacobian_product (gradients to the series).
  * PyTorch autograd over a soft-DTW written here cell by cell with
    torch.logsumexp (also used for the Sakoe-Chiba band, the cosine distance,
    the GAK local cost, the normalised kernel and the N x N matrix loss, which
    tslearn does not have). Where both exist they are checked against each
    other before anything is written.
Cases: random cost matrices (several sizes and gammas, with and without a band),
soft-DTW between sequences (squared Euclidean, cosine), the normalised GAK for
one pair with its gradients, and N x N kernel matrices (cosine with a squared
loss and its gradient; the triple kernel, forward only).
Needs numpy, torch, tslearn.
"""

import json
import math
import os

import numpy as np
import torch
from tslearn.metrics import SoftDTW, SquaredEuclidean

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sdtw_golden.json")
torch.set_default_dtype(torch.float64)
RNG = np.random.default_rng(20240611)


def f32(shape, lo=None, hi=None):
    """Random float32 values (returned as float64 arrays holding exact float32s)."""
    if lo is None:
        v = RNG.standard_normal(shape)
    else:
        v = RNG.uniform(lo, hi, shape)
    return v.astype(np.float32).astype(np.float64)


def soft_dtw_torch(C, gamma, band=-1):
    """R[n,m] of cost C [n,m] (torch, float64); cells outside the band stay +inf."""
    n, m = C.shape
    width = band + abs(n - m) if band >= 0 else None
    inf = torch.tensor(math.inf)
    R = [[inf] * (m + 1) for _ in range(n + 1)]
    R[0][0] = torch.tensor(0.0)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if width is not None and abs(i - j) > width:
                continue
            prev = torch.stack([R[i - 1][j - 1], R[i - 1][j], R[i][j - 1]])
            R[i][j] = C[i - 1, j - 1] - gamma * torch.logsumexp(-prev / gamma, 0)
    return R[n][m]


def phi_torch(x, y, distance):
    if distance == "cosine":
        xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        yn = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return 1.0 - xn @ yn.T
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def triple_phi_torch(x, mx, y, my, part1):
    p1 = phi_torch(x[:, :part1], y[:, :part1], "sqeuclid")
    p2 = phi_torch(x[:, part1:], y[:, part1:], "sqeuclid")
    same = torch.tensor(mx)[:, None] == torch.tensor(my)[None, :]
    return torch.where(same, p1, p2)


def gak_cost(phi, sigma):
    t = phi / (2 * sigma * sigma)
    return t + torch.log(2 - torch.exp(-t))


def log_gak_normalised(x, y, distance, delta, mx=None, my=None, part1=0):
    """log K~(x, y); for the triple kernel mx/my are the rows' modalities."""
    n, m = x.shape[0], y.shape[0]
    sigma = delta * math.sqrt((n + m) / 2)

    def r(a, ma, b, mb):
        if distance == "triple":
            phi = triple_phi_torch(a, ma, b, mb, part1)
        else:
            phi = phi_torch(a, b, distance)
        return soft_dtw_torch(gak_cost(phi, sigma), 1.0)

    return -(r(x, mx, y, my) - 0.5 * r(x, mx, x, mx) - 0.5 * r(y, my, y, my))


def close(a, b, tol=1e-9):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b)) <= tol * max(1.0, np.max(np.abs(b)))


def flat(a):
    return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]


def cost_cases():
    cases = []
    for n, m, gamma, band in [(1, 1, 1.0, -1), (2, 7, 0.1, -1), (9, 4, 1.0, -1),
                              (16, 16, 0.01, -1), (16, 16, 10.0, -1), (33, 21, 0.3, -1),
                              (48, 40, 1.0, -1), (12, 12, 0.5, 2), (15, 9, 0.5, 1),
                              (9, 15, 0.2, 0), (20, 20, 1.0, 0)]:
        C = f32((n, m), 0.0, 2.0)
        Ct = torch.tensor(C, requires_grad=True)
        value = soft_dtw_torch(Ct, gamma, band)
        value.backward()
        E = Ct.grad.numpy()
        if band < 0:  # tslearn has no band; check it against the torch reference
            sd = SoftDTW(C, gamma=gamma)
            tv = sd.compute()
            tE = sd.grad()
            assert abs(tv - value.item()) <= 1e-9 * max(1, abs(tv)), (n, m, gamma)
            assert close(tE, E), (n, m, gamma)
            value_ref, E_ref = float(tv), tE
        else:
            value_ref, E_ref = value.item(), E
        cases.append({"name": f"cost {n}x{m} gamma={gamma} band={band}", "n": n, "m": m,
                      "gamma": gamma, "band": band, "cost": flat(C), "value": value_ref,
                      "E": flat(E_ref)})
    return cases


def sequence_cases():
    cases = []
    for n, m, d, gamma, distance in [(6, 9, 3, 1.0, "sqeuclid"), (20, 14, 8, 0.1, "sqeuclid"),
                                     (31, 31, 16, 2.0, "sqeuclid"), (7, 11, 5, 0.5, "cosine"),
                                     (25, 18, 12, 0.05, "cosine")]:
        x, y = f32((n, d)), f32((m, d))
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.tensor(y, requires_grad=True)
        value = soft_dtw_torch(phi_torch(xt, yt, distance), gamma)
        value.backward()
        dx, dy = xt.grad.numpy(), yt.grad.numpy()
        if distance == "sqeuclid":  # tslearn: value, E and the Jacobian products
            D = SquaredEuclidean(x, y)
            sd = SoftDTW(D, gamma=gamma)
            tv = sd.compute()
            E = sd.grad()
            tdx = D.jacobian_product(E)
            tdy = SquaredEuclidean(y, x).jacobian_product(np.ascontiguousarray(E.T))
            assert abs(tv - value.item()) <= 1e-9 * max(1, abs(tv)), (n, m)
            assert close(tdx, dx, 1e-8) and close(tdy, dy, 1e-8), (n, m)
            value_ref, dx, dy = float(tv), tdx, tdy
        else:
            value_ref = value.item()
        cases.append({"name": f"sequence {distance} {n}x{m} d={d} gamma={gamma}",
                      "distance": distance, "n": n, "m": m, "d": d, "gamma": gamma,
                      "x": flat(x), "y": flat(y), "value": value_ref, "dx": flat(dx),
                      "dy": flat(dy)})
    return cases


def gak_pair_cases():
    cases = []
    for n, m, d, distance, delta in [(4, 6, 5, "cosine", 0.5), (9, 5, 8, "cosine", 0.3),
                                     (5, 5, 4, "sqeuclid", 2.0), (12, 7, 6, "sqeuclid", 1.5)]:
        x, y = f32((n, d)), f32((m, d))
        xt = torch.tensor(x, requires_grad=True)
        yt = torch.tensor(y, requires_grad=True)
        k = torch.exp(log_gak_normalised(xt, yt, distance, delta))
        k.backward()
        assert 0 < k.item() <= 1
        cases.append({"name": f"gak {distance} {n}x{m} d={d} delta={delta}",
                      "distance": distance, "n": n, "m": m, "d": d, "delta": delta,
                      "x": flat(x), "y": flat(y), "k": k.item(), "dx": flat(xt.grad.numpy()),
                      "dy": flat(yt.grad.numpy())})
    return cases


def matrix_cases():
    cases = []
    # Cosine on model-side sequences with the squared loss sum (K - T)^2.
    lengths, d, delta = [3, 5, 1, 4, 2], 6, 0.5
    N = len(lengths)
    rows = f32((sum(lengths), d))
    T = f32((N, N), 0.0, 1.0)
    T = (T + T.T) / 2
    np.fill_diagonal(T, 1.0)
    T = T.astype(np.float32).astype(np.float64)
    rt = torch.tensor(rows, requires_grad=True)
    seqs = torch.split(rt, lengths)
    K = [[None] * N for _ in range(N)]
    for u in range(N):
        K[u][u] = torch.tensor(1.0)
        for v in range(u + 1, N):
            K[u][v] = K[v][u] = torch.exp(log_gak_normalised(seqs[u], seqs[v], "cosine", delta))
    Km = torch.stack([torch.stack(r) for r in K])
    loss = ((Km - torch.tensor(T)) ** 2).sum()
    loss.backward()
    cases.append({"name": "matrix cosine squared loss", "distance": "cosine", "delta": delta,
                  "d": d, "lengths": lengths, "rows": flat(rows), "target": flat(T),
                  "K": flat(Km.detach().numpy()), "drows": flat(rt.grad.numpy()),
                  "part1_dim": 0, "modality": []})
    # Triple kernel on two-part teacher features (each part L2-normalised).
    lengths, d1, d2, delta = [2, 4, 3, 1], 4, 3, 0.7
    N = len(lengths)
    total = sum(lengths)
    p1 = f32((total, d1))
    p2 = f32((total, d2))
    p1 /= np.linalg.norm(p1, axis=1, keepdims=True)
    p2 /= np.linalg.norm(p2, axis=1, keepdims=True)
    rows = np.concatenate([p1, p2], axis=1).astype(np.float32).astype(np.float64)
    modality = [int(v) for v in RNG.integers(0, 2, total)]
    starts = np.cumsum([0] + lengths)
    rt = torch.tensor(rows)
    Km = np.eye(N)
    for u in range(N):
        for v in range(u + 1, N):
            a, b = slice(starts[u], starts[u + 1]), slice(starts[v], starts[v + 1])
            Km[u, v] = Km[v, u] = math.exp(log_gak_normalised(
                rt[a], rt[b], "triple", delta, modality[a], modality[b], d1).item())
    cases.append({"name": "matrix triple forward", "distance": "triple", "delta": delta,
                  "d": d1 + d2, "lengths": lengths, "rows": flat(rows), "target": [],
                  "K": flat(Km), "drows": [], "part1_dim": d1, "modality": modality})
    return cases


def main():
    data = {
        "generator": "tests/golden/sdtw/make_sdtw_golden.py (tslearn + torch autograd, float64)",
        "cost_cases": cost_cases(),
        "sequence_cases": sequence_cases(),
        "gak_pair_cases": gak_pair_cases(),
        "matrix_cases": matrix_cases(),
    }
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
