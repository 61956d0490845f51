// One interleaved training sample, as read from a JSONL manifest
// (docs/data_format.md). A sample is an ordered list of slices; each slice is
// text or one image.
#pragma once

#include <string>
#include <vector>

namespace ut::data {

struct Slice {
  enum class Kind { kText, kImage };
  Kind kind = Kind::kText;
  std::string text;        // kText: the text of the slice
  std::string image_path;  // kImage: path relative to the manifest's directory
  // true: the slice is a prompt (its text tokens are not next-token targets).
  bool prompt = false;
  // Optional teacher feature [uni-modal part ; cross-modal part], each part
  // L2-normalised; empty if absent. teacher_split = length of the first part
  // (0 = single-part feature).
  std::vector<float> teacher;
  int teacher_split = 0;
};

struct Sample {
  std::string id;    // unique sample id
  std::string task;  // "caption", "vqa", "story", "hard_negative", ... (free text)
  std::vector<Slice> slices;
  // Hard negatives for evaluation (e.g. attribute/relation swaps of a caption).
  std::vector<std::string> negatives;
};

}  // namespace ut::data
