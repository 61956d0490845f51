#include "core/model/layout.h"

#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/base/rng.h"
#include "glog/logging.h"

namespace ut::model {
namespace {

absl::Status NeedPositive(const char* field, double value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " is ", value, "; it must be > 0"));
}

absl::Status NeedDivisible(const char* field, int value, const char* by_field, int by) {
  if (value % by == 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " (", value, ") must be divisible by ",
                                                 by_field, " (", by, "); change one of them"));
}

// Appends parameters to a Layout, assigning consecutive offsets.
class Builder {
 public:
  explicit Builder(Layout* layout) : layout_(layout) {}
  int64_t Add(const std::string& name, std::vector<int64_t> shape, bool decay) {
    ParamInfo p;
    p.name = name;
    p.numel = 1;
    for (int64_t s : shape) p.numel *= s;
    p.global_shape = shape;
    p.shape = std::move(shape);
    p.offset = layout_->total;
    p.decay = decay;
    layout_->total += p.numel;
    layout_->params.push_back(std::move(p));
    return layout_->params.back().offset;
  }

 private:
  Layout* layout_;
};

}  // namespace

absl::StatusOr<Dims> MakeDims(const unified_train::ModelConfig& config) {
  const auto& v = config.vision();
  const auto& l = config.llm();
  RETURN_IF_ERROR(NeedPositive("model.vision.image_size", v.image_size()));
  RETURN_IF_ERROR(NeedPositive("model.vision.patch_size", v.patch_size()));
  RETURN_IF_ERROR(NeedDivisible("model.vision.image_size", v.image_size(),
                                "model.vision.patch_size", v.patch_size()));
  RETURN_IF_ERROR(NeedPositive("model.vision.width", v.width()));
  RETURN_IF_ERROR(NeedPositive("model.vision.layers", v.layers()));
  RETURN_IF_ERROR(NeedPositive("model.vision.heads", v.heads()));
  RETURN_IF_ERROR(NeedDivisible("model.vision.width", v.width(), "model.vision.heads", v.heads()));
  RETURN_IF_ERROR(NeedPositive("model.vision.mlp", v.mlp()));
  RETURN_IF_ERROR(NeedPositive("model.vision.ln_eps", v.ln_eps()));
  RETURN_IF_ERROR(NeedPositive("model.vision.pixel_std", v.pixel_std()));
  if (!std::isfinite(v.pixel_mean()) || !std::isfinite(v.pixel_std())) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.vision.pixel_mean / pixel_std (", v.pixel_mean(), " / ",
                     v.pixel_std(), ") must be finite"));
  }
  RETURN_IF_ERROR(NeedPositive("model.llm.width", l.width()));
  RETURN_IF_ERROR(NeedPositive("model.llm.layers", l.layers()));
  RETURN_IF_ERROR(NeedPositive("model.llm.heads", l.heads()));
  RETURN_IF_ERROR(NeedPositive("model.llm.kv_heads", l.kv_heads()));
  RETURN_IF_ERROR(NeedDivisible("model.llm.width", l.width(), "model.llm.heads", l.heads()));
  RETURN_IF_ERROR(NeedDivisible("model.llm.heads", l.heads(), "model.llm.kv_heads", l.kv_heads()));
  if ((l.width() / l.heads()) % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.llm.width / model.llm.heads = ", l.width() / l.heads(),
                     " is odd; RoPE needs an even head dim, change llm.width or llm.heads"));
  }
  RETURN_IF_ERROR(NeedPositive("model.llm.ffn", l.ffn()));
  RETURN_IF_ERROR(NeedPositive("model.llm.vocab_size", l.vocab_size()));
  RETURN_IF_ERROR(NeedPositive("model.llm.rope_theta", l.rope_theta()));
  RETURN_IF_ERROR(NeedPositive("model.llm.rms_eps", l.rms_eps()));
  RETURN_IF_ERROR(NeedPositive("model.retrieval_dim", config.retrieval_dim()));
  if (!(config.init_std() >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.init_std is ", config.init_std(), "; it must be >= 0"));
  }
  Dims d;
  d.image_size = v.image_size();
  d.patch = v.patch_size();
  d.patches = (v.image_size() / v.patch_size()) * (v.image_size() / v.patch_size());
  d.patch_dim = 3 * v.patch_size() * v.patch_size();
  d.vwidth = v.width();
  d.vlayers = v.layers();
  d.vheads = v.heads();
  d.vhead_dim = v.width() / v.heads();
  d.vmlp = v.mlp();
  d.ln_eps = v.ln_eps();
  d.pixel_mean = v.pixel_mean();
  d.pixel_std = v.pixel_std();
  d.width = l.width();
  d.layers = l.layers();
  d.heads = l.heads();
  d.kv_heads = l.kv_heads();
  d.head_dim = l.width() / l.heads();
  d.ffn = l.ffn();
  d.vocab = l.vocab_size();
  d.rope_theta = l.rope_theta();
  d.rms_eps = l.rms_eps();
  d.tied = l.tie_embeddings();
  d.retrieval = config.retrieval_dim();
  return d;
}

Layout BuildLayout(const Dims& d) {
  Layout out;
  Builder b(&out);
  const int64_t Wv = d.vwidth, Fv = d.vmlp, C = d.width, F = d.ffn;
  const int64_t HD = int64_t{d.heads} * d.head_dim, KD = int64_t{d.kv_heads} * d.head_dim;

  const std::string vm = "vision_tower.vision_model.";
  VitOffsets& vit = out.vit;
  vit.patch_w = b.Add(vm + "embeddings.patch_embedding.weight", {Wv, 3, d.patch, d.patch}, true);
  vit.patch_b = b.Add(vm + "embeddings.patch_embedding.bias", {Wv}, false);
  vit.pos = b.Add(vm + "embeddings.position_embedding.weight", {d.patches, Wv}, true);
  for (int i = 0; i < d.vlayers; ++i) {
    const std::string p = absl::StrCat(vm, "encoder.layers.", i, ".");
    VitLayerOffsets o;
    o.ln1_w = b.Add(p + "layer_norm1.weight", {Wv}, false);
    o.ln1_b = b.Add(p + "layer_norm1.bias", {Wv}, false);
    o.q_w = b.Add(p + "self_attn.q_proj.weight", {Wv, Wv}, true);
    o.q_b = b.Add(p + "self_attn.q_proj.bias", {Wv}, false);
    o.k_w = b.Add(p + "self_attn.k_proj.weight", {Wv, Wv}, true);
    o.k_b = b.Add(p + "self_attn.k_proj.bias", {Wv}, false);
    o.v_w = b.Add(p + "self_attn.v_proj.weight", {Wv, Wv}, true);
    o.v_b = b.Add(p + "self_attn.v_proj.bias", {Wv}, false);
    o.o_w = b.Add(p + "self_attn.out_proj.weight", {Wv, Wv}, true);
    o.o_b = b.Add(p + "self_attn.out_proj.bias", {Wv}, false);
    o.ln2_w = b.Add(p + "layer_norm2.weight", {Wv}, false);
    o.ln2_b = b.Add(p + "layer_norm2.bias", {Wv}, false);
    o.fc1_w = b.Add(p + "mlp.fc1.weight", {Fv, Wv}, true);
    o.fc1_b = b.Add(p + "mlp.fc1.bias", {Fv}, false);
    o.fc2_w = b.Add(p + "mlp.fc2.weight", {Wv, Fv}, true);
    o.fc2_b = b.Add(p + "mlp.fc2.bias", {Wv}, false);
    vit.layers.push_back(o);
  }
  vit.post_w = b.Add(vm + "post_layernorm.weight", {Wv}, false);
  vit.post_b = b.Add(vm + "post_layernorm.bias", {Wv}, false);

  ProjectorOffsets& pr = out.projector;
  pr.l1_w = b.Add("multi_modal_projector.linear_1.weight", {C, Wv}, true);
  pr.l1_b = b.Add("multi_modal_projector.linear_1.bias", {C}, false);
  pr.l2_w = b.Add("multi_modal_projector.linear_2.weight", {C, C}, true);
  pr.l2_b = b.Add("multi_modal_projector.linear_2.bias", {C}, false);

  DecoderOffsets& dec = out.decoder;
  dec.embed = b.Add("language_model.model.embed_tokens.weight", {d.vocab, C}, true);
  for (int i = 0; i < d.layers; ++i) {
    const std::string p = absl::StrCat("language_model.model.layers.", i, ".");
    DecoderLayerOffsets o;
    o.ln1_w = b.Add(p + "input_layernorm.weight", {C}, false);
    o.q_w = b.Add(p + "self_attn.q_proj.weight", {HD, C}, true);
    o.k_w = b.Add(p + "self_attn.k_proj.weight", {KD, C}, true);
    o.v_w = b.Add(p + "self_attn.v_proj.weight", {KD, C}, true);
    o.o_w = b.Add(p + "self_attn.o_proj.weight", {C, HD}, true);
    o.ln2_w = b.Add(p + "post_attention_layernorm.weight", {C}, false);
    o.gate_w = b.Add(p + "mlp.gate_proj.weight", {F, C}, true);
    o.up_w = b.Add(p + "mlp.up_proj.weight", {F, C}, true);
    o.down_w = b.Add(p + "mlp.down_proj.weight", {C, F}, true);
    dec.layers.push_back(o);
  }
  dec.norm_w = b.Add("language_model.model.norm.weight", {C}, false);
  dec.lm_head = d.tied ? dec.embed : b.Add("language_model.lm_head.weight", {d.vocab, C}, true);

  // Last, so that the init of everything above does not depend on R.
  const int64_t R = d.retrieval;
  RetrievalOffsets& rp = out.retrieval;
  rp.l1_w = b.Add("retrieval_projector.linear_1.weight", {R, C}, true);
  rp.l1_b = b.Add("retrieval_projector.linear_1.bias", {R}, false);
  rp.l2_w = b.Add("retrieval_projector.linear_2.weight", {R, R}, true);
  rp.l2_b = b.Add("retrieval_projector.linear_2.bias", {R}, false);
  return out;
}

absl::StatusOr<Dims> LocalDims(const Dims& global, int tp_rank, int tp_size) {
  if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor-parallel rank ", tp_rank, " of parallel.tp = ", tp_size,
                     " is out of range"));
  }
  struct Field {
    const char* name;
    int* value;
  };
  Dims d = global;
  const Field fields[] = {{"model.llm.heads", &d.heads},        {"model.llm.kv_heads", &d.kv_heads},
                          {"model.llm.ffn", &d.ffn},            {"model.llm.vocab_size", &d.vocab},
                          {"model.vision.heads", &d.vheads},    {"model.vision.mlp", &d.vmlp}};
  for (const Field& f : fields) {
    if (*f.value % tp_size != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(f.name, " (", *f.value, ") is not divisible by parallel.tp (", tp_size,
                       "): choose a TP size that divides it"));
    }
    *f.value /= tp_size;
  }
  d.tp_rank = tp_rank;
  d.tp_size = tp_size;
  d.vocab_start = tp_rank * d.vocab;
  return d;
}

absl::StatusOr<ModelShard> ResolveShard(const Dims& global, const ModelShard& shard) {
  const int L = global.layers;
  if (shard.tp_size < 1 || shard.tp_rank < 0 || shard.tp_rank >= shard.tp_size) {
    return absl::InvalidArgumentError(absl::StrCat("model shard: tp_rank ", shard.tp_rank,
                                                   " of tp_size ", shard.tp_size,
                                                   " is out of range"));
  }
  if (shard.chunks.empty()) {
    return absl::InvalidArgumentError("model shard holds no chunks");
  }
  ModelShard out = shard;
  int prev_end = 0;
  for (size_t k = 0; k < out.chunks.size(); ++k) {
    ModelShard::Chunk& c = out.chunks[k];
    if (c.end == -1) c.end = L;
    if (c.begin < prev_end || c.begin >= c.end || c.end > L || c.pre != (c.begin == 0) ||
        c.post != (c.end == L)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "model shard chunk ", k, " = layers [", c.begin, ",", c.end, ") pre=", c.pre,
          " post=", c.post, " is invalid for model.llm.layers = ", L,
          ": chunks must be non-empty, in order, non-overlapping, pre iff they start at 0 and "
          "post iff they end at the last layer (use PartitionLayers/ShardFor)"));
    }
    prev_end = c.end;
  }
  if (global.tied && !(out.chunks.front().pre && out.chunks.back().post)) {
    return absl::UnimplementedError(
        "model.llm.tie_embeddings needs embed_tokens and lm_head on the same rank; a shard "
        "holding only one of them is not supported yet: untie the embeddings or use pp = 1");
  }
  return out;
}

int TpSplitDim(const std::string& name) {
  if (absl::StartsWith(name, "retrieval_projector.")) return -1;
  if (absl::StartsWith(name, "multi_modal_projector.")) {
    if (absl::StrContains(name, "linear_1.")) return 0;
    return absl::EndsWith(name, "linear_2.weight") ? 1 : -1;
  }
  static const char* const kRows[] = {
      "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight",
      "self_attn.k_proj.bias",   "self_attn.v_proj.weight", "self_attn.v_proj.bias",
      "mlp.fc1.weight",          "mlp.fc1.bias",          "mlp.gate_proj.weight",
      "mlp.up_proj.weight",      "embed_tokens.weight",   "lm_head.weight"};
  static const char* const kCols[] = {"self_attn.out_proj.weight", "self_attn.o_proj.weight",
                                      "mlp.fc2.weight", "mlp.down_proj.weight"};
  for (const char* s : kRows) {
    if (absl::EndsWith(name, s)) return 0;
  }
  for (const char* s : kCols) {
    if (absl::EndsWith(name, s)) return 1;
  }
  return -1;
}

Layout BuildLayout(const Dims& global, const ModelShard& shard) {
  const Layout full = BuildLayout(global);
  const int L = global.layers, T = shard.tp_size;
  // Which chunk-part owns a global offset: -1 pre, L post, else the layer.
  auto owner = [&](int64_t off) {
    if (off <= full.decoder.embed) return -1;  // vision, projector, embed (in this order)
    if (off >= full.decoder.norm_w) return L;
    int l = 0;
    while (l + 1 < L && full.decoder.layers[l + 1].ln1_w <= off) ++l;
    return l;
  };
  auto held = [&](int part) {
    for (const ModelShard::Chunk& c : shard.chunks) {
      if ((part == -1 && c.pre) || (part == L && c.post) || (part >= c.begin && part < c.end)) {
        return true;
      }
    }
    return false;
  };
  Layout out;
  std::unordered_map<int64_t, int64_t> local_of;  // global offset -> local offset
  for (const ParamInfo& g : full.params) {
    if (!held(owner(g.offset))) continue;
    ParamInfo p = g;
    if (T > 1) p.shard_dim = TpSplitDim(g.name);
    if (p.shard_dim >= 0) {
      CHECK_EQ(p.shape[p.shard_dim] % T, 0) << g.name;
      p.shape[p.shard_dim] /= T;
      p.shard_start = p.shape[p.shard_dim] * shard.tp_rank;
      p.numel /= T;
    }
    p.offset = out.total;
    out.total += p.numel;
    local_of[g.offset] = p.offset;
    out.params.push_back(std::move(p));
  }
  // The offset structs, translated (-1 where not held).
  auto tr = [&](int64_t off) {
    auto it = local_of.find(off);
    return it == local_of.end() ? int64_t{-1} : it->second;
  };
  out.vit = full.vit;
  out.vit.patch_w = tr(full.vit.patch_w);
  out.vit.patch_b = tr(full.vit.patch_b);
  out.vit.pos = tr(full.vit.pos);
  out.vit.post_w = tr(full.vit.post_w);
  out.vit.post_b = tr(full.vit.post_b);
  for (VitLayerOffsets& o : out.vit.layers) {
    for (int64_t* f : {&o.ln1_w, &o.ln1_b, &o.q_w, &o.q_b, &o.k_w, &o.k_b, &o.v_w, &o.v_b, &o.o_w,
                       &o.o_b, &o.ln2_w, &o.ln2_b, &o.fc1_w, &o.fc1_b, &o.fc2_w, &o.fc2_b}) {
      *f = tr(*f);
    }
  }
  out.projector = {tr(full.projector.l1_w), tr(full.projector.l1_b), tr(full.projector.l2_w),
                   tr(full.projector.l2_b)};
  out.decoder = full.decoder;
  out.decoder.embed = tr(full.decoder.embed);
  out.decoder.norm_w = tr(full.decoder.norm_w);
  out.decoder.lm_head = tr(full.decoder.lm_head);
  for (DecoderLayerOffsets& o : out.decoder.layers) {
    for (int64_t* f : {&o.ln1_w, &o.q_w, &o.k_w, &o.v_w, &o.o_w, &o.ln2_w, &o.gate_w, &o.up_w,
                       &o.down_w}) {
      *f = tr(*f);
    }
  }
  out.retrieval = {tr(full.retrieval.l1_w), tr(full.retrieval.l1_b), tr(full.retrieval.l2_w),
                   tr(full.retrieval.l2_b)};
  return out;
}

namespace {

// Rows of the slice: for shard_dim 0 one block; for 1 `outer` rows of `cols`
// contiguous floats each, `full_cols` apart in the full tensor.
struct SliceGeometry {
  int64_t outer, cols, full_cols, start;
};

SliceGeometry GeometryOf(const ParamInfo& p) {
  int64_t inner = 1;  // elements per index of shard_dim (product of the later dims)
  for (size_t i = p.shard_dim + 1; i < p.shape.size(); ++i) inner *= p.shape[i];
  if (p.shard_dim <= 0) {
    const int64_t start = p.shard_dim < 0 ? 0 : p.shard_start * inner;
    return {1, p.numel, p.numel, start};
  }
  CHECK_EQ(p.shard_dim, 1) << p.name;
  return {p.shape[0], p.shape[1] * inner, p.global_shape[1] * inner, p.shard_start * inner};
}

}  // namespace

void ExtractSlice(const ParamInfo& p, const float* full, float* local) {
  const SliceGeometry g = GeometryOf(p);
  for (int64_t r = 0; r < g.outer; ++r) {
    std::memcpy(local + r * g.cols, full + r * g.full_cols + g.start, sizeof(float) * g.cols);
  }
}

void InsertSlice(const ParamInfo& p, const float* local, float* full) {
  const SliceGeometry g = GeometryOf(p);
  for (int64_t r = 0; r < g.outer; ++r) {
    std::memcpy(full + r * g.full_cols + g.start, local + r * g.cols, sizeof(float) * g.cols);
  }
}

void InitParams(float* params, const std::vector<ParamInfo>& list, float init_std, uint64_t seed) {
  Rng rng(seed);
  for (const ParamInfo& p : list) {
    float* x = params + p.offset;
    const bool is_bias = p.name.size() >= 5 && p.name.compare(p.name.size() - 5, 5, ".bias") == 0;
    if (p.decay) {
      for (int64_t i = 0; i < p.numel; ++i) x[i] = static_cast<float>(rng.Normal() * init_std);
    } else {
      const float value = is_bias ? 0.0f : 1.0f;
      for (int64_t i = 0; i < p.numel; ++i) x[i] = value;
    }
  }
}

}  // namespace ut::model
