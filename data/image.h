// Image files for the data layer: decoding (PNG, JPEG and whatever else
// stb_image reads) to float RGB CHW in [0,1] at S x S, and PNG writing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/base/status.h"

namespace ut::data {

// Checks that `path` can be opened and starts with an image header stb_image
// understands (cheap: reads the header only, not the pixels).
absl::Status CheckImageHeader(const std::string& path);

// Decodes `path` into [3, size, size] floats in [0,1] (CHW), resizing
// bilinearly when the file is not size x size. Gray/alpha images become RGB.
// Errors name the path and stb_image's reason.
absl::StatusOr<std::vector<float>> LoadImageCHW(const std::string& path, int size);

// rgb: [h, w, 3] bytes (HWC) -> [3, size, size] floats in [0,1], bilinear with
// pixel-centre alignment (identity when w == h == size).
std::vector<float> ToCHW(const uint8_t* rgb, int w, int h, int size);

// Writes rgb [h, w, 3] as a PNG; the same pixels always give the same bytes.
absl::Status WritePng(const std::string& path, const uint8_t* rgb, int w, int h);

}  // namespace ut::data
