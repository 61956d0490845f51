// JSONL manifest writing (reading is ReadManifest in loader.h). Format:
// docs/data_format.md.
#pragma once

#include <string>

#include "data/sample.h"

namespace ut::data {

// One manifest line (no trailing newline): keys in the order id, task,
// slices, negatives; floats in their shortest round-trip form. Deterministic.
std::string SampleToJsonLine(const Sample& sample);

}  // namespace ut::data
