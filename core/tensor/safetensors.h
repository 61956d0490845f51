// safetensors files (the Hugging Face format): 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {str: str}}, then the raw little-endian tensor bytes.
// Used for checkpoints (weights by HF name) and for golden test fixtures.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/base/status.h"
#include "core/tensor/tensor.h"

namespace ut {

struct NamedTensor {
  std::string name;
  Tensor tensor;  // CPU; f32, bf16, i32 or i64
};

// Writes `path` exactly (no temp file: the checkpoint manager handles
// atomicity). Tensors are written in the given order.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;  // owned copies
  std::map<std::string, std::string> metadata;
};

// Reads and validates a whole file. A truncated or corrupt file gives an error
// naming the file and what is wrong (bad header length, JSON error, offsets
// out of range, size mismatch with dtype x shape, unknown dtype).
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

}  // namespace ut
