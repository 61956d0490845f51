// A micro-batch as the model consumes it: token rows with every image
// placeholder already expanded to that image's visual tokens.
//
// Row layout example (image of 4 visual tokens, "<img>" = image token id):
//   tokens : bos <img> <img> <img> <img> a red circle eos pad pad
//   targets:  -1   -1    -1    -1   a    red circle eos -1  -1  -1
//   (targets[t] is the token to predict at position t, i.e. tokens[t+1] when
//    that is a text target; -1 = ignored: image positions, padding, prompts)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ut::data {

// Where one slice of a sample sits in the batch (used by the discriminative
// loss and by evaluation).
struct SliceSpan {
  int row = 0;          // batch row
  int start = 0;        // first token position in the row
  int end = 0;          // one past the last token position
  bool is_image = false;
  int sample = 0;       // index into Batch::sample_ids
  std::vector<float> teacher;  // teacher feature (may be empty)
  int teacher_split = 0;
};

struct Batch {
  int B = 0;                      // rows
  int T = 0;                      // tokens per row (padded to the longest row)
  std::vector<int32_t> tokens;    // [B*T]
  std::vector<int32_t> targets;   // [B*T], -1 = ignored
  std::vector<int32_t> lens;      // [B] valid (unpadded) length of each row
  // Images: [num_images, 3, S, S] float RGB in [0,1], CHW.
  int num_images = 0;
  int image_size = 0;             // S
  std::vector<float> images;
  std::vector<int32_t> image_row;    // [num_images] row of image i
  std::vector<int32_t> image_start;  // [num_images] first token position of image i
  // Sample bookkeeping.
  std::vector<std::string> sample_ids;  // one per sample in the batch
  std::vector<SliceSpan> slices;        // every slice of every sample, in order
  int64_t truncated = 0;  // samples cut to seq_len while building this batch
};

}  // namespace ut::data
