#!/usr/bin/env python3
"""Independent PyTorch training of the tiny model on the synthetic data
(issues #2, #3: does the trained model use the images?).

Same model (tests/golden/make_golden.py, float32), same init (bit for bit),
same rows (data/loader.cc), same AdamW / warm-up + cosine / global-norm
clipping as configs/tiny.textproto; batch order comes from a Python RNG with
the loader's recipe (shuffle, sort by length in windows, shuffle batches).
At the end (and every --probe_every steps) it measures what docs/results.md
reports for the engine: test loss, the same loss with every image path
shuffled among the test samples, greedy caption exact-match and VQA accuracy,
plus internals (visual-token spread across images, attention mass of text on
visual tokens, residual RMS, gradient norm per parameter group).

    nice -n 5 python3 tools/diag/torch_train_tiny.py [--steps 300] [--data DIR]
        [--config configs/tiny.textproto] [--save DIR]

Needs torch, numpy, sentencepiece. Never run by tests or CI.
"""

import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_lib as tl  # noqa: E402


def lr_at(step, total, o):
    """core/train/lr_schedule.h (step is 1-based)."""
    lr, min_lr, warm = tl.mg.f32(o["lr"]), tl.mg.f32(o["min_lr"]), int(o["warmup_steps"])
    if warm > 0 and step <= warm:
        return lr * step / warm
    prog = min(1.0, max(0.0, (step - warm) / max(1, total - warm)))
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * prog))


def vqa_majority(train, test):
    """Accuracy of answering each test question with its most frequent train answer
    per question template (the 'ignores the image' baseline)."""
    def key(s):
        q = s["slices"][1]["text"]
        return q.split(" the ")[0] if q.startswith("what") else " ".join(q.split()[:1])
    counts = {}
    for s in train:
        if s["task"] == "vqa":
            counts.setdefault(key(s), {}).setdefault(s["slices"][2]["text"], 0)
            counts[key(s)][s["slices"][2]["text"]] += 1
    hit = n = 0
    for s in test:
        if s["task"] == "vqa":
            c = counts.get(key(s), {})
            hit += bool(c) and max(c, key=c.get) == s["slices"][2]["text"]
            n += 1
    return hit, n


def probe(p, cfg, data, test, full=False):
    base = tl.eval_loss(p, cfg, data, test[:100])
    shuf = tl.eval_loss(p, cfg, data, test[:100], image_override=tl.shuffled_images(test[:100]))
    st = tl.internals(p, tl.make_batch(data, test[:16]), cfg)
    out = {"test_loss": base, "shuffled_loss": shuf, "shuffle_rel": (shuf - base) / base,
           "visual_spread": st["visual_spread"], "visual_rms": st["visual_rms"],
           "attn_on_visual": [round(r["attn_on_visual"], 4) for r in st["layers"]],
           "rms_visual": [round(r["rms_visual"], 4) for r in st["layers"]],
           "rms_text": [round(r["rms_text"], 4) for r in st["layers"]]}
    if full:
        c, n, ex = tl.eval_generation(p, cfg, data, test, "caption")
        out["caption"] = [c, n]
        out["caption_examples"] = ex
        c, n, ex = tl.eval_generation(p, cfg, data, test, "vqa")
        out["vqa"] = [c, n]
        out["vqa_examples"] = ex
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(tl.ROOT, "configs", "tiny.textproto"))
    ap.add_argument("--data", default=os.path.join(tl.ROOT, "runs", "data", "synthetic_tiny"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--probe_every", type=int, default=50)
    ap.add_argument("--log", default="", help="write probes as JSON lines here")
    ap.add_argument("--save", default="", help="save final params (safetensors) here")
    ap.add_argument("--pixel_norm", action="store_true",
                    help="feed (pixel - mean) / std per channel (train-set statistics)")
    ap.add_argument("--mbs", type=int, default=8, help="rows per step (data.micro_batch_size)")
    ap.add_argument("--lr_mult", default="",
                    help="per-group lr multipliers, e.g. vision=0.1,projector=1 (groups: "
                         "vision projector embed decoder lm_head)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = tl.load_cfg(args.config)
    o = cfg["optim"]
    data = tl.Data(args.data)
    train, test = data.samples("train"), data.samples("test")
    if args.pixel_norm:
        import numpy as np
        sample = np.stack([data.image(sl["image"]) for s in train[:500] for sl in s["slices"]
                           if "image" in sl])
        mean = sample.mean((0, 2, 3)).astype(np.float32)[:, None, None]
        std = sample.std((0, 2, 3)).astype(np.float32)[:, None, None]
        print("pixel mean", mean.ravel(), "std", std.ravel())
        raw = data.image
        data.image = lambda rel: (raw(rel) - mean) / std
    p, plist = tl.init_params(cfg, args.seed)
    mult = {k: float(v) for k, v in (kv.split("=") for kv in args.lr_mult.split(",") if kv)}
    groups = {}
    for n, _, d in plist:
        key = (tl.group_of(n), d)
        groups.setdefault(key, []).append(p[n])
    wd = tl.mg.f32(o["weight_decay"])
    opt = torch.optim.AdamW([{"params": ps, "weight_decay": wd if d else 0.0,
                              "mult": mult.get(g, 1.0)} for (g, d), ps in groups.items()],
                            lr=0.0, betas=(tl.mg.f32(o["beta1"]), tl.mg.f32(o["beta2"])),
                            eps=tl.mg.f32(o["eps"]))
    every = [p[n] for n, _, _ in plist]
    clip = tl.mg.f32(o["grad_clip"])
    mbs = args.mbs
    vt = (int(cfg["vision"]["image_size"]) // int(cfg["vision"]["patch_size"])) ** 2
    tl.VISUAL_TOKENS = vt
    log = open(args.log, "w") if args.log else None
    hit, n = vqa_majority(train, test)
    print("VQA per-template majority baseline on test: %.1f%% (%d/%d)" % (100 * hit / n, hit, n))

    def report(step, full=False):
        det = {k: v.detach() for k, v in p.items()}
        r = dict(step=step, **probe(det, cfg, data, test, full))
        print(json.dumps(r), flush=True)
        if log:
            log.write(json.dumps(r) + "\n")
            log.flush()

    report(0)
    epoch, plan, t0 = 0, [], time.time()
    for step in range(1, args.steps + 1):
        if not plan:
            plan = tl.epoch_batches(train, data, mbs, 1234, epoch, vt)
            epoch += 1
        batch = tl.make_batch(data, [train[i] for i in plan.pop(0)])
        lr = lr_at(step, args.steps, o)
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        opt.zero_grad()
        loss, _ = tl.forward(p, batch, cfg)
        loss.backward()
        groups = tl.grad_norms(p)
        norm = float(torch.nn.utils.clip_grad_norm_(every, clip))
        opt.step()
        if step % 10 == 0:
            print("step %d loss %.4f lr %.2e grad %.3f groups %s (%.1f s)" % (
                step, loss.item(), lr, norm,
                " ".join("%s=%.3g" % kv for kv in sorted(groups.items())), time.time() - t0),
                flush=True)
        if step % args.probe_every == 0 and step != args.steps:
            report(step)
    report(args.steps, full=True)
    if args.save:
        from safetensors.torch import save_file
        os.makedirs(args.save, exist_ok=True)
        save_file({k: v.detach().contiguous() for k, v in p.items()},
                  os.path.join(args.save, "model.safetensors"))


if __name__ == "__main__":
    main()
