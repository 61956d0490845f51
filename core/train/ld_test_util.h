// Shared by the L_d tests (discriminative_loss_test, pool_test): a small
// batch with sliced samples and two-part teacher features, the objective, and
// a Richardson-extrapolated directional derivative for gradient checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/base/config.h"
#include "core/base/rng.h"
#include "core/model/test_util.h"
#include "data/batch.h"

namespace ut::train::testing {

using unified_train::ObjectiveConfig;

inline constexpr ObjectiveConfig::Mode kModes[] = {ObjectiveConfig::PAPER,
                                                   ObjectiveConfig::SEQUENCE};
inline const char* ModeName(ObjectiveConfig::Mode m) {
  return m == ObjectiveConfig::PAPER ? "PAPER" : "SEQUENCE";
}

// A two-part teacher feature [uni (3) ; cross (3)], each part L2-normalised.
inline std::vector<float> Teacher(Rng& rng) {
  std::vector<float> t(6);
  for (int part = 0; part < 2; ++part) {
    double n2 = 0;
    for (int i = 0; i < 3; ++i) {
      t[part * 3 + i] = static_cast<float>(rng.Normal());
      n2 += double{t[part * 3 + i]} * t[part * 3 + i];
    }
    for (int i = 0; i < 3; ++i) t[part * 3 + i] /= static_cast<float>(std::sqrt(n2));
  }
  return t;
}

inline void AddSlice(data::Batch* b, int row, int start, int end, bool image, Rng& rng) {
  data::SliceSpan s;
  s.row = row;
  s.start = start;
  s.end = end;
  s.is_image = image;
  s.sample = row;
  s.teacher = Teacher(rng);
  s.teacher_split = 3;
  b->slices.push_back(s);
}

// Three samples (one per row), three slices each, for SmallConfig (4 visual
// tokens); batch_seed draws tokens and images, teacher_seed the features:
//   row 0: bos | image [1,5) | text [5,8) | text [8,12)
//   row 1: text [0,3) | image [3,7) | text [7,9) | pad
//   row 2: text [0,3) | text [3,6) | image [6,10) | pad
inline data::Batch SlicedBatch(const unified_train::ModelConfig& c, uint64_t batch_seed,
                               uint64_t teacher_seed) {
  data::Batch b = model::testing::MakeBatch(batch_seed, 12, {12, 9, 10},
                                            {{0, 1}, {1, 3}, {2, 6}}, 4,
                                            c.vision().image_size(), c.llm().vocab_size());
  b.sample_ids = {"s0", "s1", "s2"};
  Rng rng(teacher_seed);
  AddSlice(&b, 0, 1, 5, true, rng);
  AddSlice(&b, 0, 5, 8, false, rng);
  AddSlice(&b, 0, 8, 12, false, rng);
  AddSlice(&b, 1, 0, 3, false, rng);
  AddSlice(&b, 1, 3, 7, true, rng);
  AddSlice(&b, 1, 7, 9, false, rng);
  AddSlice(&b, 2, 0, 3, false, rng);
  AddSlice(&b, 2, 3, 6, false, rng);
  AddSlice(&b, 2, 6, 10, true, rng);
  return b;
}

inline ObjectiveConfig MakeObjective(ObjectiveConfig::Mode mode, int cuts) {
  ObjectiveConfig o;
  o.set_alpha(1.0f);
  o.set_delta(1.0f);
  o.set_cuts_per_sample(cuts);
  o.set_mode(mode);
  return o;
}

// d loss / d(params[index] along dir) by central differences with Richardson
// extrapolation, (4 D(h/2) - D(h)) / 3, which cancels the O(h^2) error.
// params[index] is restored after each evaluation.
inline double DirectionalDerivative(float* params, const std::function<double()>& loss,
                                    const std::vector<int64_t>& index,
                                    const std::vector<float>& dir, float h = 2e-2f) {
  auto central = [&](float step) {
    std::vector<float> saved(index.size());
    for (size_t i = 0; i < index.size(); ++i) saved[i] = params[index[i]];
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i] + step * dir[i];
    const double up = loss();
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i] - step * dir[i];
    const double down = loss();
    for (size_t i = 0; i < index.size(); ++i) params[index[i]] = saved[i];
    return (up - down) / (2.0 * step);
  };
  return (4.0 * central(h / 2) - central(h)) / 3.0;
}

}  // namespace ut::train::testing
