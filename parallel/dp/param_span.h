// What the data-parallel code needs to know about a parameter: where it sits
// in the flat parameter/gradient buffer, whether AdamW decays it, and whether
// it is replicated over TP (dist_design.md "Grad norm").
//
// parallel/ sits below core/model in the package DAG (DESIGN.md section 3), so
// this folder does not include core/model/mllm.h; ToParamSpans converts the
// model's ParamInfo list (any struct with offset, numel, decay) in one call.
#pragma once

#include <cstdint>
#include <vector>

#include "glog/logging.h"

namespace ut::dp {

struct ParamSpan {
  int64_t offset = 0;       // in floats, into the flat buffer
  int64_t numel = 0;
  bool decay = true;        // AdamW weight decay applies
  bool replicated = false;  // the same full tensor on every TP rank
};

// A parameter record that knows its TP sharding (ut::ParamInfo::shard_dim:
// -1 replicated, 0 rows, 1 columns).
template <class P>
concept HasShardDim = requires(const P& p) { p.shard_dim; };

// params: anything with .offset, .numel, .decay (ut::ParamInfo).
// replicated: one flag per param; empty = taken from .shard_dim < 0 when P
// has it (ParamInfo does), else none replicated.
template <class P>
std::vector<ParamSpan> ToParamSpans(const std::vector<P>& params,
                                    const std::vector<bool>& replicated = {}) {
  CHECK(replicated.empty() || replicated.size() == params.size())
      << "replicated has " << replicated.size() << " flags for " << params.size() << " params";
  std::vector<ParamSpan> spans;
  spans.reserve(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    bool is_replicated = false;
    if (!replicated.empty()) {
      is_replicated = replicated[i];
    } else if constexpr (HasShardDim<P>) {
      is_replicated = params[i].shard_dim < 0;
    }
    spans.push_back(ParamSpan{params[i].offset, params[i].numel, params[i].decay, is_replicated});
  }
  return spans;
}

}  // namespace ut::dp
