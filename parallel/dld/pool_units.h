// One rank's share of an L_d pool, flattened to plain arrays (no batch or
// model types), as the distributed L_d (parallel/dld/dist_ld.h) gathers it.
// core/train/discriminative_loss.h fills it from micro-batches (FlattenPool).
//
//   S slices (the rows of the rank's slice embeddings r [S,R]), each with a
//   teacher feature of D values and a modality; U units, each the slice
//   sequence of one prefix cut of one sample; a sample key per unit, equal
//   for units of the same sample (M^l = 1 between them), unique across the
//   pool (core/train uses micro << 32 | sample with the GLOBAL micro index).
#pragma once

#include <cstdint>
#include <vector>

namespace ut::dld {

struct PoolUnits {
  int teacher_dim = 0;             // D (0 when there are no units)
  int teacher_split = 0;           // part-1 size of two-part features; 0 = one part
  std::vector<float> teacher;      // [S,D]; rows of slices no unit uses may be 0
  std::vector<int32_t> modality;   // [S] 1 = image slice, 0 = text slice
  std::vector<int32_t> unit_length;   // [U] slices per unit (k >= 1)
  std::vector<int32_t> unit_slices;   // [sum k] slice indices in [0,S), unit by unit
  std::vector<int64_t> unit_sample;   // [U] sample key

  int num_slices() const { return static_cast<int>(modality.size()); }
  int num_units() const { return static_cast<int>(unit_length.size()); }
};

// Sample key of (global micro-batch index, sample index within it).
inline int64_t SampleKey(int micro, int sample) {
  return (static_cast<int64_t>(micro) << 32) | static_cast<uint32_t>(sample);
}

}  // namespace ut::dld
