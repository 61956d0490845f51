"""Shared pieces of the grounding diagnostics (issues #2, #3): data, batches,
the PyTorch reference model, checkpoints, evaluation.

Only for diagnosis; the engine and CI never run Python. The model is the
reference of tests/golden/make_golden.py (imported, not copied); rows are
built like data/loader.cc: bos, each image -> 64 <image> tokens, text, eos;
targets[t] = tokens[t+1] where that token is non-prompt text (or eos).
"""

import json
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn.functional as F

VISUAL_TOKENS = 64  # set from the config by the scripts
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "golden"))
import make_golden as mg  # noqa: E402

import sentencepiece as spm  # noqa: E402


# ------------------------------------------------------------------ data ----

def read_png_rgb8(path):
    """[H,W,3] uint8 from an 8-bit RGB, non-interlaced PNG (what stb writes)."""
    import struct
    import zlib
    raw = open(path, "rb").read()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, idat, w = 8, b"", None
    while pos < len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype == 2 and interlace == 0, (path, depth, ctype)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    data = zlib.decompress(idat)
    stride = w * 3
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f = data[y * (stride + 1)]
        line = np.frombuffer(data, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for x in range(stride):
            a = cur[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 0:
                pr = 0
            elif f == 1:
                pr = a
            elif f == 2:
                pr = b
            elif f == 3:
                pr = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + pr) & 255
        out[y] = cur
        prev = cur
    return out.reshape(h, w, 3).astype(np.uint8)


class Data:
    """A synthetic data directory: manifests, tokenizer, decoded images."""

    def __init__(self, data_dir):
        self.dir = data_dir
        self.sp = spm.SentencePieceProcessor(model_file=os.path.join(data_dir, "tokenizer.model"))
        self.bos, self.eos = self.sp.bos_id(), self.sp.eos_id()
        self.image_id, self.pad_id = self.sp.piece_to_id("<image>"), self.sp.piece_to_id("<pad>")
        self._images = {}
        self._tok = {}

    def samples(self, split):
        with open(os.path.join(self.dir, split + ".jsonl")) as f:
            return [json.loads(l) for l in f if l.strip()]

    def image(self, rel):
        """[3,S,S] float32 in [0,1] (CHW), like data/image.cc for S x S files."""
        if rel not in self._images:
            a = read_png_rgb8(os.path.join(self.dir, rel)).astype(np.float32)
            self._images[rel] = np.ascontiguousarray(a.transpose(2, 0, 1) / np.float32(255.0))
        return self._images[rel]

    def encode(self, text):
        if text not in self._tok:
            self._tok[text] = self.sp.encode(text)
        return self._tok[text]

    def decode(self, ids):
        keep = [i for i in ids if i not in (self.bos, self.eos, self.pad_id, self.image_id)]
        return self.sp.decode(keep)


def make_batch(data, samples, visual_tokens=None, seq_len=256, add_eos=True, image_override=None):
    """Batch dict like data/batch.h. image_override: {(sample index, image k): path}."""
    visual_tokens = visual_tokens or VISUAL_TOKENS
    rows = []
    for si, s in enumerate(samples):
        toks, is_t, images = [data.bos], [False], []
        k = 0
        for sl in s["slices"]:
            if "image" in sl:
                path = sl["image"]
                if image_override is not None:
                    path = image_override.get((si, k), path)
                images.append((len(toks), data.image(path)))
                toks += [data.image_id] * visual_tokens
                is_t += [False] * visual_tokens
                k += 1
            else:
                ids = data.encode(sl["text"])
                toks += ids
                is_t += [not sl.get("prompt", False)] * len(ids)
        if add_eos:
            toks.append(data.eos)
            is_t.append(True)
        cut = len(toks)
        if cut > seq_len:
            cut = seq_len
            for start, _ in images:
                if start < cut < start + visual_tokens:
                    cut = start
        toks = toks[:cut]
        images = [(st, im) for st, im in images if st + visual_tokens <= cut]
        tg = [-1] * cut
        for t in range(cut - 1):
            if is_t[t + 1]:
                tg[t] = toks[t + 1]
        rows.append((toks, tg, images))
    B, T = len(rows), max(len(r[0]) for r in rows)
    tokens = np.full((B, T), data.pad_id, np.int32)
    targets = np.full((B, T), -1, np.int32)
    lens, imgs, irow, istart = [], [], [], []
    for b, (toks, tg, images) in enumerate(rows):
        tokens[b, :len(toks)] = toks
        targets[b, :len(tg)] = tg
        lens.append(len(toks))
        for st, im in images:
            imgs.append(im)
            irow.append(b)
            istart.append(st)
    S = samples and imgs[0].shape[-1] if imgs else 32
    return dict(tokens=tokens, targets=targets, lens=np.array(lens, np.int32),
                images=np.stack(imgs) if imgs else np.zeros((0, 3, S, S), np.float32),
                image_row=np.array(irow, np.int32), image_start=np.array(istart, np.int32))


def epoch_batches(samples, data, mbs, seed, epoch, visual_tokens=64):
    """Batches of sample indices, like Loader's plan: shuffle, sort by length in
    windows of 64*mbs, cut, shuffle batch order within each window (a Python
    RNG, so not the same order as the C++ loader, same distribution)."""
    rng = random.Random(seed * 1000003 + epoch)
    order = list(range(len(samples)))
    rng.shuffle(order)

    def length(i):
        n = 2
        for sl in samples[i]["slices"]:
            n += visual_tokens if "image" in sl else len(data.encode(sl["text"]))
        return n

    out = []
    window = 64 * mbs
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=length)
        local = [chunk[i:i + mbs] for i in range(0, len(chunk) - mbs + 1, mbs)]
        rng.shuffle(local)
        out += local
    return out


# ----------------------------------------------------------------- model ----

def load_cfg(path=None):
    cfg, _ = mg.load_config(path or os.path.join(ROOT, "configs", "tiny.textproto"))
    return cfg


def init_params(cfg, seed=42, dtype=torch.float32):
    """Our init, bit for bit (make_golden.init_params), as leaf tensors."""
    plist = mg.param_list(cfg)
    saved = sys.stderr
    sys.stderr = open(os.devnull, "w")
    try:
        init = mg.init_params(plist, mg.f32(cfg["model"]["init_std"]), seed)
    finally:
        sys.stderr.close()
        sys.stderr = saved
    return {n: init[n].to(dtype).clone().requires_grad_(True) for n, _, _ in plist}, plist


def load_checkpoint(path, dtype=torch.float32):
    from safetensors.torch import load_file
    d = load_file(os.path.join(path, "model.safetensors"))
    return {k: v.to(dtype) for k, v in d.items()}


def forward(p, batch, cfg):
    """Mean CE and logits: the reference model of make_golden.py."""
    return mg.forward(p, batch, cfg)


# ---------------------------------------------------------- evaluation ----

@torch.no_grad()
def eval_loss(p, cfg, data, samples, batch_size=8, image_override=None):
    """Token-weighted mean CE over `samples` (like core/train/evaluate.cc)."""
    total, count = 0.0, 0
    for b in range(0, len(samples), batch_size):
        chunk = samples[b:b + batch_size]
        ov = None
        if image_override is not None:
            ov = {(i - b, k): v for (i, k), v in image_override.items() if b <= i < b + batch_size}
        batch = make_batch(data, chunk, image_override=ov)
        n = int((batch["targets"] >= 0).sum())
        loss, _ = forward(p, batch, cfg)
        total += loss.item() * n
        count += n
    return total / count


def shuffled_images(samples, seed=0):
    """{(sample, k): another sample's image path}: every image path permuted."""
    slots = [(i, k, sl["image"]) for i, s in enumerate(samples)
             for k, sl in enumerate([x for x in s["slices"] if "image" in x])]
    paths = [x[2] for x in slots]
    rng = random.Random(seed)
    rng.shuffle(paths)
    return {(i, k): pth for (i, k, _), pth in zip(slots, paths)}


@torch.no_grad()
def greedy(p, cfg, data, sample, max_extra=4):
    """Greedy continuation of the sample's prompt (everything before its last
    non-prompt text slice); returns (generated text, reference)."""
    last = max(i for i, sl in enumerate(sample["slices"])
               if "text" in sl and not sl.get("prompt", False))
    prompt = dict(sample, slices=sample["slices"][:last])
    ref = sample["slices"][last]["text"]
    batch = make_batch(data, [prompt], add_eos=False)
    toks = list(batch["tokens"][0])
    out = []
    for _ in range(len(data.encode(ref)) + max_extra):
        batch["tokens"] = np.array([toks], np.int32)
        batch["targets"] = np.full((1, len(toks)), -1, np.int32)
        batch["targets"][0, 0] = 0  # one counted target keeps cross_entropy finite
        batch["lens"] = np.array([len(toks)], np.int32)
        _, logits = forward(p, batch, cfg)
        nxt = int(logits[0, -1].argmax())
        if nxt == data.eos:
            break
        out.append(nxt)
        toks.append(nxt)
        if not ref.startswith(data.decode(out).strip()):
            break  # exact early stop, like evaluate.cc
    return " ".join(data.decode(out).split()), " ".join(ref.split())


def eval_generation(p, cfg, data, samples, task, limit=100):
    correct = total = 0
    examples = []
    for s in samples:
        if total >= limit:
            break
        if s["task"] != task:
            continue
        got, ref = greedy(p, cfg, data, s)
        correct += got == ref
        total += 1
        if len(examples) < 6:
            examples.append((got, ref))
    return correct, total, examples


# ------------------------------------------------------------ internals ----

@torch.no_grad()
def internals(p, batch, cfg):
    """Per decoder layer: RMS of the residual stream at visual vs text
    positions, and the attention mass that counted text positions (targets
    >= 0) put on visual tokens (mean over heads and positions). Also the
    spread of the visual tokens across images: mean over (patch, channel) of
    the std over images, relative to their RMS (0 = every image alike).
    A re-run of make_golden.forward's decoder with explicit attention."""
    v, l = cfg["vision"], cfg["llm"]
    C, H, Hkv = int(l["width"]), int(l["heads"]), int(l["kv_heads"])
    D = C // H
    rms_eps, theta = mg.f32(l["rms_eps"]), mg.f32(l["rope_theta"])
    NP = (int(v["image_size"]) // int(v["patch_size"])) ** 2
    # Visual tokens: run the reference forward up to the projector by hooking F.linear.
    captured = {}
    orig = F.linear

    def spy(x, w, b=None):
        y = orig(x, w, b)
        if w is p["multi_modal_projector.linear_2.weight"]:
            captured["visual"] = y
        return y
    F.linear = spy
    try:
        mg.forward(p, batch, cfg)
    finally:
        F.linear = orig
    visual = captured["visual"]  # [NI,NP,C]
    out = {}
    vis_rms = visual.pow(2).mean().sqrt().item()
    out["visual_rms"] = vis_rms
    out["visual_spread"] = (visual.std(0).mean().item() / vis_rms) if visual.shape[0] > 1 else 0.0
    tokens = torch.from_numpy(batch["tokens"]).long()
    B, T = tokens.shape
    h = F.embedding(tokens, p["language_model.model.embed_tokens.weight"])
    mask = torch.zeros(B, T, dtype=torch.bool)
    for r, s in zip(batch["image_row"], batch["image_start"]):
        mask[r, s:s + NP] = True
    h = h.masked_scatter(mask.unsqueeze(-1).expand_as(h), visual.reshape(-1, C))
    lens = torch.from_numpy(batch["lens"]).long()
    valid = torch.arange(T)[None, :] < lens[:, None]
    text = valid & ~mask
    counted = torch.from_numpy(batch["targets"]).long() >= 0
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]
    rot = torch.cat((ang, ang), -1)
    cos, sin = rot.cos().to(h.dtype), rot.sin().to(h.dtype)
    allowed = (torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & valid[:, None, :])[:, None]
    layers = []
    for i in range(int(l["layers"])):
        q_ = "language_model.model.layers.%d." % i
        rec = {"rms_visual": h[mask].pow(2).mean().sqrt().item(),
               "rms_text": h[text].pow(2).mean().sqrt().item()}
        a = mg.rms_norm(h, p[q_ + "input_layernorm.weight"], rms_eps)
        q = F.linear(a, p[q_ + "self_attn.q_proj.weight"]).view(B, T, H, D).transpose(1, 2)
        k = F.linear(a, p[q_ + "self_attn.k_proj.weight"]).view(B, T, Hkv, D).transpose(1, 2)
        vv = F.linear(a, p[q_ + "self_attn.v_proj.weight"]).view(B, T, Hkv, D).transpose(1, 2)
        q = q * cos + mg.rotate_half(q) * sin
        k = k * cos + mg.rotate_half(k) * sin
        k = k.repeat_interleave(H // Hkv, 1)
        vv = vv.repeat_interleave(H // Hkv, 1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)  # [B,H,T,T]
        on_vis = (att * mask[:, None, None, :].to(att.dtype)).sum(-1)  # [B,H,T]
        rec["attn_on_visual"] = on_vis.mean(1)[counted].mean().item()
        o = (att @ vv).transpose(1, 2).reshape(B, T, H * D)
        h = h + F.linear(o, p[q_ + "self_attn.o_proj.weight"])
        a = mg.rms_norm(h, p[q_ + "post_attention_layernorm.weight"], rms_eps)
        m = F.silu(F.linear(a, p[q_ + "mlp.gate_proj.weight"])) * F.linear(
            a, p[q_ + "mlp.up_proj.weight"])
        h = h + F.linear(m, p[q_ + "mlp.down_proj.weight"])
        layers.append(rec)
    out["layers"] = layers
    out["rms_final_visual"] = h[mask].pow(2).mean().sqrt().item()
    out["rms_final_text"] = h[text].pow(2).mean().sqrt().item()
    return out


def group_of(name):
    if name.startswith("vision_tower"):
        return "vision"
    if name.startswith("multi_modal_projector"):
        return "projector"
    if "embed_tokens" in name:
        return "embed"
    if "lm_head" in name:
        return "lm_head"
    return "decoder"


def grad_norms(p):
    """Gradient L2 norm per parameter group."""
    acc = {}
    for n, t in p.items():
        if t.grad is not None:
            g = group_of(n)
            acc[g] = acc.get(g, 0.0) + t.grad.double().pow(2).sum().item()
    return {g: math.sqrt(v) for g, v in acc.items()}
