#include "core/model/layout.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "core/base/rng.h"

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
