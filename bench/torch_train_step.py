#!/usr/bin/env python3
"""PyTorch side of bench/train_step_bench: the same training step (forward,
backward, AdamW) of the same model in float32, written with plain torch ops
(the model is tests/golden/make_golden.py's reference `forward`).

    python3 bench/torch_train_step.py --config configs/tiny.textproto \
        --batch 8 --seq 256 --images 2 --threads 2 --iters 5

Prints one JSON line: {"step_s": ..., "tokens_per_s": ..., "torch": version}.
"""

import argparse
import importlib.util
import json
import os
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_reference():
    spec = importlib.util.spec_from_file_location(
        "make_golden", os.path.join(ROOT, "tests", "golden", "make_golden.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def bench_batch(cfg, B, T, images_per_row, seed):
    v, l = cfg["vision"], cfg["llm"]
    S = int(v["image_size"])
    NP = (S // int(v["patch_size"])) ** 2
    V = int(l["vocab_size"])
    gen = np.random.RandomState(seed)
    tokens = gen.randint(5, V, size=(B, T)).astype(np.int32)
    targets = np.roll(tokens, -1, axis=1).astype(np.int32)
    targets[:, -1] = -1
    rows, starts = [], []
    for r in range(B):
        for i in range(images_per_row):
            s = 1 + i * (NP + 16)
            tokens[r, s:s + NP] = 4
            targets[r, max(s - 1, 0):s + NP - 1] = -1
            rows.append(r)
            starts.append(s)
    images = gen.uniform(0, 1, size=(len(rows), 3, S, S)).astype(np.float32)
    return dict(tokens=tokens, targets=targets, lens=np.full(B, T, dtype=np.int32),
                images=images, image_row=np.array(rows, dtype=np.int32),
                image_start=np.array(starts, dtype=np.int32))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ref = load_reference()
    cfg, _ = ref.load_config(os.path.join(ROOT, a.config))
    plist = ref.param_list(cfg)
    torch.manual_seed(0)
    params = {}
    for name, shape, decay in plist:
        t = torch.randn(shape) * 0.02 if decay else (
            torch.zeros(shape) if name.endswith(".bias") else torch.ones(shape))
        params[name] = t.float().requires_grad_(True)
    batch = bench_batch(cfg, a.batch, a.seq, a.images, seed=1)
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = ref.forward(params, batch, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.iters):
        step()
    dt = (time.perf_counter() - t0) / a.iters
    print(json.dumps({"step_s": dt, "tokens_per_s": a.batch * a.seq / dt,
                      "torch": torch.__version__, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
