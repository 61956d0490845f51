// Test helpers for sharded models: copy a whole model's parameters into a
// shard, compare a shard's gradients slice by slice, run a chain of pipeline
// chunks (possibly spread over several MLLM objects) by hand.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/model/layout.h"
#include "core/model/mllm.h"
#include "gtest/gtest.h"

namespace ut::model::testing {

// part's parameters = the slices of full's.
inline void CopyParamsFrom(MLLM& full, MLLM* part) {
  for (const ParamInfo& p : part->params()) {
    const ParamInfo* g = full.FindParam(p.name);
    ASSERT_NE(g, nullptr) << p.name;
    ExtractSlice(p, full.param_data() + g->offset, part->param_data() + p.offset);
  }
}

// Every local tensor's gradient against the slice of full's gradient. rel == 0:
// bitwise equal. Else, per tensor: max |got - want| <= rel * scale, scale =
// the tensor's largest |want|, at least 1e-3 of the model's gradient RMS.
// (Relative to the tensor, not per element: an entry that cancels to rounding
// noise, e.g. the ViT k_proj bias whose exact gradient is 0, has no relative
// precision; a wrong f/g gives errors of order 1.)
inline void ExpectGradsMatch(MLLM& full, MLLM& part, double rel, const std::string& what) {
  double sumsq = 0;
  for (int64_t i = 0; i < full.num_params(); ++i) sumsq += double{full.grad_data()[i]} * full.grad_data()[i];
  const double floor = 1e-3 * std::sqrt(sumsq / full.num_params());
  ASSERT_GT(floor, 0) << what << ": the reference has no gradient";
  int checked = 0;
  for (const ParamInfo& p : part.params()) {
    const ParamInfo* g = full.FindParam(p.name);
    ASSERT_NE(g, nullptr) << p.name;
    std::vector<float> want(p.numel);
    ExtractSlice(p, full.grad_data() + g->offset, want.data());
    const float* got = part.grad_data() + p.offset;
    double maxdiff = 0, scale = floor;
    int64_t worst = 0;
    for (int64_t i = 0; i < p.numel; ++i) {
      const double d = std::fabs(double{got[i]} - want[i]);
      if (!(d <= maxdiff)) {  // NaN counts as the worst
        maxdiff = std::isnan(d) ? INFINITY : d;
        worst = i;
      }
      scale = std::max(scale, double{std::fabs(want[i])});
    }
    if (rel == 0) {
      EXPECT_EQ(maxdiff, 0) << what << ": " << p.name << "[" << worst << "] = " << got[worst]
                            << ", want " << want[worst];
    } else {
      EXPECT_LE(maxdiff, rel * scale) << what << ": " << p.name << "[" << worst << "] = "
                                      << got[worst] << ", want " << want[worst] << " (tensor scale "
                                      << scale << ")";
    }
    ++checked;
  }
  EXPECT_GT(checked, 0) << what;
}

// One chunk of a pipeline: chunk `c` of model `m`.
struct Piece {
  MLLM* m;
  int c;
};

// Forward of one micro-batch through the chain (model order) in `slot`; then
// writes `hook` (if non-empty) as the final-hidden gradient. Returns the loss.
inline float ChainForward(const std::vector<Piece>& chain, int slot, const data::Batch& b,
                          const std::vector<float>& hook = {}) {
  const float* in = nullptr;
  float loss = 0;
  for (size_t i = 0; i < chain.size(); ++i) {
    loss = chain[i].m->ChunkForward(chain[i].c, slot, b, in);
    if (i + 1 < chain.size()) in = chain[i].m->chunk_output(chain[i].c, slot);
  }
  if (!hook.empty()) {
    float* h = chain.back().m->mutable_final_hidden_grad();
    std::copy(hook.begin(), hook.end(), h);
  }
  return loss;
}

inline void ChainBackward(const std::vector<Piece>& chain, int slot, float loss_scale) {
  const float* dout = nullptr;
  for (size_t i = chain.size(); i-- > 0;) {
    chain[i].m->ChunkBackward(chain[i].c, slot, dout, loss_scale);
    if (i > 0) dout = chain[i].m->chunk_input_grad(chain[i].c, slot);
  }
}

}  // namespace ut::model::testing
