// Reading and writing small float matrices for the soft-DTW command-line tool
// (tools/sdtw/soft_dtw_main.cc, docs/soft_dtw_cli.md).
//
// Formats, chosen by the file name: ".npy" (case-insensitive) is NumPy's
// format, anything else is text.
//   .npy   float32 or float64, little-endian, C order, 1-D [n] (n rows of one
//          number) or 2-D [n,d]; format versions 1, 2 and 3.
//   text   one row per line, numbers separated by spaces, tabs or commas
//          (empty fields between commas are errors); '#' starts a comment to the
//          end of the line; blank and comment-only lines are skipped.
// Values are rounded to float32 (what the engine computes in). NaN, +-Inf and
// values beyond the float32 range are errors. Every error names the file and
// the line (text, 1-based) or element [row, column] (npy, 0-based as in NumPy).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/status.h"

namespace ut::tools {

struct Matrix {
  int64_t rows = 0;
  int64_t cols = 0;
  bool one_d = false;         // read from a 1-D .npy (cols == 1); writers mirror it
  std::vector<float> values;  // [rows, cols], row-major
};

// By extension: ReadNpy for ".npy", ReadText otherwise.
absl::StatusOr<Matrix> ReadMatrix(const std::string& path);
absl::StatusOr<Matrix> ReadNpy(const std::string& path);
absl::StatusOr<Matrix> ReadText(const std::string& path);

// values [rows, cols] -> path. ".npy": float32 (1-D [rows] when one_d, which
// needs cols == 1); otherwise text, one row per line, "%.9g" (float32 values
// round-trip), separated by spaces.
absl::Status WriteMatrix(const std::string& path, const float* values, int64_t rows,
                         int64_t cols, bool one_d = false);
absl::Status WriteNpy(const std::string& path, const float* values, int64_t rows, int64_t cols,
                      bool one_d = false);
absl::Status WriteText(const std::string& path, const float* values, int64_t rows,
                       int64_t cols);

// Whether the path names a .npy file (case-insensitive extension).
bool IsNpyPath(const std::string& path);

}  // namespace ut::tools
