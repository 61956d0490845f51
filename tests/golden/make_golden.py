#!/usr/bin/env python3
"""Golden fixture for the tiny MLLM: an independent PyTorch (float64) model.

Writes tests/golden/tiny_golden.safetensors, read by golden_test.cc. Run from
the repository root:

    python3 tests/golden/make_golden.py

What it does
  * Reads the tiny model/optim config (configs/tiny.textproto over the defaults
    in core/base/config.proto) and stores that text in the fixture, so the C++
    test builds exactly the same model.
  * Recreates the C++ initial parameters bit for bit without storing them:
    ut::Rng (splitmix64 seeding + xoshiro256**, Box-Muller in double) and the
    recipe documented at MLLM::InitParams in core/model/mllm.h.
  * Builds a fixed batch (2 rows, 2 images, padding, ignored targets).
  * Normalises the pixels with the config's model.vision.pixel_mean /
    pixel_std ((x - mean) / std) before the conv patch embedding.
  * Runs the model written with plain torch ops (conv2d patch embedding,
    layer_norm, scaled_dot_product_attention, repeat_interleave GQA, HF
    rotate-half RoPE, masked_scatter of visual tokens, cross_entropy), in
    float64 from the float32 initial values; stores logits, loss and every
    parameter gradient (full when the tensor has < 65536 entries, else 4096
    sampled entries with their indices; sum and sum of squares always).
  * Takes 10 torch.optim.AdamW steps (constant lr, decay only on matrices and
    embeddings, clip_grad_norm_) on the same batch and stores the losses.

Only the model definition below is the reference; nothing is ported from the
C++ sources. Needs torch, numpy, safetensors.
"""

import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "tiny_golden.safetensors")
SEED = 42          # InitParams seed (train.seed default)
FULL_LIMIT = 65536  # tensors with fewer entries are stored in full
SAMPLES = 4096
ADAMW_STEPS = 10
IMAGE_TOKEN, BOS, EOS, PAD = 4, 1, 2, 0

# ---------------------------------------------------------------- config ----


def proto_defaults(path):
    """{message: {field: default string}} from the proto2 file."""
    text = open(path).read()
    out = {}
    for m in re.finditer(r"message (\w+) \{(.*?)\n\}", text, re.S):
        fields = {}
        for f in re.finditer(r"optional\s+\w+\s+(\w+)\s*=\s*\d+\s*\[default\s*=\s*([^\]]+)\]",
                             m.group(2)):
            fields[f.group(1)] = f.group(2).strip()
        out[m.group(1)] = fields
    return out


def textproto_block(text, name):
    """key: value pairs of the first `name { ... }` block (one level of nesting)."""
    m = re.search(r"\b%s\s*\{" % name, text)
    if not m:
        return {}, ""
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    body = text[m.end():i - 1]
    flat = re.sub(r"\w+\s*\{[^{}]*\}", "", body)  # drop nested blocks
    return dict(re.findall(r"(\w+)\s*:\s*([^\s}]+)", flat)), body


def load_config(path=os.path.join(ROOT, "configs", "tiny.textproto")):
    defaults = proto_defaults(os.path.join(ROOT, "core", "base", "config.proto"))
    text = "\n".join(l.split("#")[0] for l in open(path))
    model_kv, model_body = textproto_block(text, "model")
    cfg = {}
    for msg, block, body in [("VisionConfig", "vision", model_body),
                             ("LLMConfig", "llm", model_body),
                             ("OptimConfig", "optim", text)]:
        values = dict(defaults[msg])
        values.update(textproto_block(body, block)[0])
        cfg[block] = values
    model = dict(defaults["ModelConfig"])
    model.update(model_kv)
    cfg["model"] = model
    # The exact config the C++ test will parse (model + optim blocks only).
    v, l, o = cfg["vision"], cfg["llm"], cfg["optim"]
    proto_text = (
        "model {\n  vision { %s }\n  llm { %s }\n  init_std: %s\n}\noptim { %s }\n" %
        (" ".join("%s: %s" % kv for kv in sorted(v.items())),
         " ".join("%s: %s" % kv for kv in sorted(l.items())), model["init_std"],
         " ".join("%s: %s" % kv for kv in sorted(o.items()))))
    return cfg, proto_text


def f32(x):
    """A config float as C++ sees it (float), widened to double."""
    return float(np.float32(float(x)))


# ------------------------------------------------------------------- rng ----

M64 = (1 << 64) - 1


class Rng:
    """ut::Rng (core/base/rng.h): splitmix64 seeding, xoshiro256**."""

    def __init__(self, seed):
        x, s = seed & M64, []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            s.append(z ^ (z >> 31))
        self.s = s

    def normals(self, n, std):
        """n values float32(Normal() * std), Normal by Box-Muller (2 uniforms)."""
        s0, s1, s2, s3 = self.s
        out = np.empty(n, dtype=np.float64)
        log, cos, sqrt = math.log, math.cos, math.sqrt
        scale = 2.0 ** -53
        for i in range(n):
            u = []
            for _ in range(2):
                x = (s1 * 5) & M64
                r = ((((x << 7) | (x >> 57)) & M64) * 9) & M64
                t = (s1 << 17) & M64
                s2 ^= s0
                s3 ^= s1
                s1 ^= s2
                s0 ^= s3
                s2 ^= t
                s3 = ((s3 << 45) | (s3 >> 19)) & M64
                u.append((r >> 11) * scale)
            u1 = u[0] if u[0] >= 1e-300 else 1e-300
            out[i] = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u[1]) * std
        self.s = [s0, s1, s2, s3]
        return out.astype(np.float32)


# ---------------------------------------------------------------- params ----


def param_list(cfg):
    """(name, shape, decay) in the order of core/model/mllm.h."""
    v, l = cfg["vision"], cfg["llm"]
    S, P, Wv, Fv = int(v["image_size"]), int(v["patch_size"]), int(v["width"]), int(v["mlp"])
    NP = (S // P) ** 2
    C, F_, V = int(l["width"]), int(l["ffn"]), int(l["vocab_size"])
    D = C // int(l["heads"])
    HD, KD = int(l["heads"]) * D, int(l["kv_heads"]) * D
    vm = "vision_tower.vision_model."
    out = [(vm + "embeddings.patch_embedding.weight", (Wv, 3, P, P), True),
           (vm + "embeddings.patch_embedding.bias", (Wv,), False),
           (vm + "embeddings.position_embedding.weight", (NP, Wv), True)]
    for i in range(int(v["layers"])):
        p = vm + "encoder.layers.%d." % i
        out += [(p + "layer_norm1.weight", (Wv,), False), (p + "layer_norm1.bias", (Wv,), False)]
        for proj in ["q", "k", "v", "out"]:
            out += [(p + "self_attn.%s_proj.weight" % proj, (Wv, Wv), True),
                    (p + "self_attn.%s_proj.bias" % proj, (Wv,), False)]
        out += [(p + "layer_norm2.weight", (Wv,), False), (p + "layer_norm2.bias", (Wv,), False),
                (p + "mlp.fc1.weight", (Fv, Wv), True), (p + "mlp.fc1.bias", (Fv,), False),
                (p + "mlp.fc2.weight", (Wv, Fv), True), (p + "mlp.fc2.bias", (Wv,), False)]
    out += [(vm + "post_layernorm.weight", (Wv,), False),
            (vm + "post_layernorm.bias", (Wv,), False),
            ("multi_modal_projector.linear_1.weight", (C, Wv), True),
            ("multi_modal_projector.linear_1.bias", (C,), False),
            ("multi_modal_projector.linear_2.weight", (C, C), True),
            ("multi_modal_projector.linear_2.bias", (C,), False),
            ("language_model.model.embed_tokens.weight", (V, C), True)]
    for i in range(int(l["layers"])):
        p = "language_model.model.layers.%d." % i
        out += [(p + "input_layernorm.weight", (C,), False),
                (p + "self_attn.q_proj.weight", (HD, C), True),
                (p + "self_attn.k_proj.weight", (KD, C), True),
                (p + "self_attn.v_proj.weight", (KD, C), True),
                (p + "self_attn.o_proj.weight", (C, HD), True),
                (p + "post_attention_layernorm.weight", (C,), False),
                (p + "mlp.gate_proj.weight", (F_, C), True),
                (p + "mlp.up_proj.weight", (F_, C), True),
                (p + "mlp.down_proj.weight", (C, F_), True)]
    out.append(("language_model.model.norm.weight", (C,), False))
    if l["tie_embeddings"] != "true":
        out.append(("language_model.lm_head.weight", (V, C), True))
    return out


def init_params(plist, init_std, seed):
    """MLLM::InitParams: one Rng, params in order; decay tensors get
    float(Normal() * init_std) in row-major order, biases 0, norm weights 1."""
    rng = Rng(seed)
    out = {}
    for name, shape, decay in plist:
        n = int(np.prod(shape))
        if decay:
            values = rng.normals(n, init_std)
        else:
            values = np.full(n, 0.0 if name.endswith(".bias") else 1.0, dtype=np.float32)
        out[name] = torch.from_numpy(values.reshape(shape))
        print("  init %-70s %s" % (name, shape), file=sys.stderr)
    return out


# ----------------------------------------------------------------- batch ----


def make_batch(cfg):
    """2 rows x T=100, one image per row, 18 padding tokens in row 1, -1 targets
    at image positions, prompt tokens, padding and row ends."""
    v, l = cfg["vision"], cfg["llm"]
    S, NP = int(v["image_size"]), (int(v["image_size"]) // int(v["patch_size"])) ** 2
    V = int(l["vocab_size"])
    gen = np.random.RandomState(2024)
    T, lens = 100, [100, 82]
    starts = [1, 8]  # row 0: bos, image, text; row 1: text, image, text
    tokens = np.full((2, T), PAD, dtype=np.int32)
    targets = np.full((2, T), -1, dtype=np.int32)
    is_image = np.zeros((2, T), dtype=bool)
    for r in range(2):
        tokens[r, :lens[r]] = gen.randint(5, V, size=lens[r])
        tokens[r, starts[r]:starts[r] + NP] = IMAGE_TOKEN
        is_image[r, starts[r]:starts[r] + NP] = True
    tokens[0, 0] = BOS
    tokens[1, lens[1] - 1] = EOS
    for r in range(2):
        for t in range(lens[r] - 1):
            if not is_image[r, t + 1]:
                targets[r, t] = tokens[r, t + 1]
    targets[1, 72:76] = -1  # a prompt span after the image
    images = gen.uniform(0.0, 1.0, size=(2, 3, S, S)).astype(np.float32)
    return dict(tokens=tokens, targets=targets, lens=np.array(lens, dtype=np.int32),
                images=images, image_row=np.array([0, 1], dtype=np.int32),
                image_start=np.array(starts, dtype=np.int32))


# ----------------------------------------------------------------- model ----


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def forward(p, batch, cfg):
    """Mean next-token cross-entropy and logits [B,T,V]."""
    v, l = cfg["vision"], cfg["llm"]
    P, Wv, Hv = int(v["patch_size"]), int(v["width"]), int(v["heads"])
    C, H, Hkv, V = int(l["width"]), int(l["heads"]), int(l["kv_heads"]), int(l["vocab_size"])
    D = C // H
    ln_eps, rms_eps, theta = f32(v["ln_eps"]), f32(l["rms_eps"]), f32(l["rope_theta"])
    vm = "vision_tower.vision_model."

    # Vision tower: conv patch embedding + learned positions, pre-LN blocks.
    dtype = p[vm + "embeddings.patch_embedding.weight"].dtype  # float64 here, float32 in bench/
    images = torch.from_numpy(batch["images"]).to(dtype)
    # Pixel normalisation (model.vision.pixel_mean / pixel_std) before the patch embedding.
    images = (images - f32(v["pixel_mean"])) / f32(v["pixel_std"])
    x = F.conv2d(images, p[vm + "embeddings.patch_embedding.weight"],
                 p[vm + "embeddings.patch_embedding.bias"], stride=P)
    x = x.flatten(2).transpose(1, 2) + p[vm + "embeddings.position_embedding.weight"]
    NI, NP, _ = x.shape
    for i in range(int(v["layers"])):
        pre = vm + "encoder.layers.%d." % i
        lin = lambda t, name: F.linear(t, p[pre + name + ".weight"], p[pre + name + ".bias"])
        ln = lambda t, name: F.layer_norm(t, (Wv,), p[pre + name + ".weight"],
                                          p[pre + name + ".bias"], ln_eps)
        heads = lambda t: t.view(NI, NP, Hv, Wv // Hv).transpose(1, 2)
        h = ln(x, "layer_norm1")
        q, k = heads(lin(h, "self_attn.q_proj")), heads(lin(h, "self_attn.k_proj"))
        vv = heads(lin(h, "self_attn.v_proj"))
        a = F.scaled_dot_product_attention(q, k, vv).transpose(1, 2).reshape(NI, NP, Wv)
        x = x + lin(a, "self_attn.out_proj")
        h = F.gelu(lin(ln(x, "layer_norm2"), "mlp.fc1"), approximate="tanh")
        x = x + lin(h, "mlp.fc2")
    x = F.layer_norm(x, (Wv,), p[vm + "post_layernorm.weight"], p[vm + "post_layernorm.bias"],
                     ln_eps)

    # Projector.
    x = F.gelu(F.linear(x, p["multi_modal_projector.linear_1.weight"],
                        p["multi_modal_projector.linear_1.bias"]), approximate="tanh")
    visual = F.linear(x, p["multi_modal_projector.linear_2.weight"],
                      p["multi_modal_projector.linear_2.bias"])  # [NI,NP,C]

    # Decoder input: token embeddings, image positions replaced (LLaVA style).
    tokens = torch.from_numpy(batch["tokens"]).long()
    B, T = tokens.shape
    emb = F.embedding(tokens, p["language_model.model.embed_tokens.weight"])
    mask = torch.zeros(B, T, dtype=torch.bool)
    for r, s in zip(batch["image_row"], batch["image_start"]):
        mask[r, s:s + NP] = True
    assert list(batch["image_row"]) == sorted(batch["image_row"])  # masked_scatter order
    h = emb.masked_scatter(mask.unsqueeze(-1).expand_as(emb), visual.reshape(-1, C))

    # RoPE tables (HF LLaMA) and the causal + key-padding mask.
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    angles = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    emb_rot = torch.cat((angles, angles), dim=-1)
    cos, sin = emb_rot.cos().to(h.dtype), emb_rot.sin().to(h.dtype)
    lens = torch.from_numpy(batch["lens"]).long()
    keys_ok = torch.arange(T)[None, :] < lens[:, None]  # [B,T]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & keys_ok[:, None, :]
    allowed = allowed[:, None]  # [B,1,T,T]
    full_rows = bool((lens == T).all())

    for i in range(int(l["layers"])):
        q_ = "language_model.model.layers.%d." % i
        a = rms_norm(h, p[q_ + "input_layernorm.weight"], rms_eps)
        q = F.linear(a, p[q_ + "self_attn.q_proj.weight"]).view(B, T, H, D).transpose(1, 2)
        k = F.linear(a, p[q_ + "self_attn.k_proj.weight"]).view(B, T, Hkv, D).transpose(1, 2)
        vv = F.linear(a, p[q_ + "self_attn.v_proj.weight"]).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, dim=1)
        vv = vv.repeat_interleave(H // Hkv, dim=1)
        if full_rows:  # no padding: let PyTorch use its fused causal kernel (bench/)
            o = F.scaled_dot_product_attention(q, k, vv, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, vv, attn_mask=allowed)
        h = h + F.linear(o.transpose(1, 2).reshape(B, T, H * D), p[q_ + "self_attn.o_proj.weight"])
        a = rms_norm(h, p[q_ + "post_attention_layernorm.weight"], rms_eps)
        m = F.silu(F.linear(a, p[q_ + "mlp.gate_proj.weight"])) * F.linear(
            a, p[q_ + "mlp.up_proj.weight"])
        h = h + F.linear(m, p[q_ + "mlp.down_proj.weight"])
    h = rms_norm(h, p["language_model.model.norm.weight"], rms_eps)
    head = p.get("language_model.lm_head.weight", p["language_model.model.embed_tokens.weight"])
    logits = F.linear(h, head)
    targets = torch.from_numpy(batch["targets"]).long()
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-1)
    return loss, logits


# ------------------------------------------------------------------ main ----


def main():
    torch.manual_seed(0)
    cfg, proto_text = load_config()
    plist = param_list(cfg)
    init_std = f32(cfg["model"]["init_std"])
    print("config:\n" + proto_text, file=sys.stderr)
    init = init_params(plist, init_std, SEED)
    params = {n: init[n].double().requires_grad_(True) for n, _, _ in plist}
    batch = make_batch(cfg)

    loss, logits = forward(params, batch, cfg)
    loss.backward()
    print("loss %.10f" % loss.item(), file=sys.stderr)

    out = {}
    for k in ["tokens", "targets", "lens", "images", "image_row", "image_start"]:
        out["batch." + k] = torch.from_numpy(np.ascontiguousarray(batch[k]))
    out["logits"] = logits.detach().float().contiguous()
    out["loss"] = torch.tensor([loss.item()], dtype=torch.float32)
    gen = torch.Generator().manual_seed(7)
    for name, shape, _ in plist:
        g = params[name].grad.detach().reshape(-1)
        out["init_head/" + name] = init[name].reshape(-1)[:8].clone()
        out["grad_stats/" + name] = torch.tensor([g.sum().item(), g.pow(2).sum().item()],
                                                 dtype=torch.float32)
        if g.numel() < FULL_LIMIT:
            out["grad/" + name] = g.float().reshape(shape).contiguous()
        else:
            idx = torch.randperm(g.numel(), generator=gen)[:SAMPLES].sort().values
            out["grad_index/" + name] = idx.int().contiguous()
            out["grad_sample/" + name] = g[idx].float().contiguous()

    # AdamW: decay only on matrices and embeddings, constant lr, global clip.
    o = cfg["optim"]
    decay = [params[n] for n, _, d in plist if d]
    no_decay = [params[n] for n, _, d in plist if not d]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": f32(o["weight_decay"])},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=f32(o["lr"]), betas=(f32(o["beta1"]), f32(o["beta2"])),
                            eps=f32(o["eps"]))
    all_params = [params[n] for n, _, _ in plist]
    losses = []
    for step in range(ADAMW_STEPS):
        opt.zero_grad()
        loss, _ = forward(params, batch, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(all_params, f32(o["grad_clip"]))
        opt.step()
        losses.append(loss.item())
        print("adamw step %d loss %.10f" % (step + 1, loss.item()), file=sys.stderr)
    with torch.no_grad():
        final, _ = forward(params, batch, cfg)
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["adamw_final_loss"] = torch.tensor([final.item()], dtype=torch.float32)

    metadata = {"config": proto_text, "seed": str(SEED), "full_limit": str(FULL_LIMIT),
                "made_by": "tests/golden/make_golden.py"}
    save_file(out, OUT, metadata=metadata)
    print("wrote %s (%.2f MiB, %d tensors)" % (OUT, os.path.getsize(OUT) / 2**20, len(out)),
          file=sys.stderr)


if __name__ == "__main__":
    main()
