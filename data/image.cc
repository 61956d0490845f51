#include "data/image.h"

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

// libstb (Debian's libstb-dev, linked with -lstb) already contains the
// implementations; STB_IMAGE_IMPLEMENTATION must not be defined here.

namespace ut::data {
namespace {

absl::StatusOr<std::string> ReadBytes(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open image ", path, ": ",
                                            std::strerror(errno)));
  }
  std::string bytes;
  if (limit == 0) {
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    bytes.resize(limit);
    in.read(bytes.data(), static_cast<std::streamsize>(limit));
    bytes.resize(static_cast<size_t>(in.gcount()));
  }
  return bytes;
}

const stbi_uc* Bytes(const std::string& s) { return reinterpret_cast<const stbi_uc*>(s.data()); }

}  // namespace

absl::Status CheckImageHeader(const std::string& path) {
  // Every format stb_image reads states its size within the first few KiB
  // (JPEG may carry EXIF/ICC segments before SOF; 64 KiB covers usual cases).
  ASSIGN_OR_RETURN(std::string head, ReadBytes(path, 64 << 10));
  int w = 0, h = 0, c = 0;
  if (!stbi_info_from_memory(Bytes(head), static_cast<int>(head.size()), &w, &h, &c) ||
      w <= 0 || h <= 0) {
    return absl::DataLossError(absl::StrCat("image ", path, " is not a readable image (",
                                            stbi_failure_reason(), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> LoadImageCHW(const std::string& path, int size) {
  ASSIGN_OR_RETURN(std::string bytes, ReadBytes(path, 0));
  int w = 0, h = 0, channels = 0;
  stbi_uc* rgb = stbi_load_from_memory(Bytes(bytes), static_cast<int>(bytes.size()), &w, &h,
                                       &channels, 3);
  if (rgb == nullptr) {
    return absl::DataLossError(absl::StrCat("image ", path, " cannot be decoded (",
                                            stbi_failure_reason(), ")"));
  }
  std::vector<float> chw = ToCHW(rgb, w, h, size);
  stbi_image_free(rgb);
  return chw;
}

// rgb [h, w, 3] -> out [3, S, S].
std::vector<float> ToCHW(const uint8_t* rgb, int w, int h, int size) {
  const int S = size;
  std::vector<float> out(3 * static_cast<size_t>(S) * S);
  const float scale_x = static_cast<float>(w) / S, scale_y = static_cast<float>(h) / S;
  for (int y = 0; y < S; ++y) {
    const float sy = std::clamp((y + 0.5f) * scale_y - 0.5f, 0.0f, static_cast<float>(h - 1));
    const int y0 = static_cast<int>(sy), y1 = std::min(y0 + 1, h - 1);
    const float fy = sy - y0;
    for (int x = 0; x < S; ++x) {
      const float sx = std::clamp((x + 0.5f) * scale_x - 0.5f, 0.0f, static_cast<float>(w - 1));
      const int x0 = static_cast<int>(sx), x1 = std::min(x0 + 1, w - 1);
      const float fx = sx - x0;
      for (int c = 0; c < 3; ++c) {
        auto at = [&](int yy, int xx) { return static_cast<float>(rgb[(yy * w + xx) * 3 + c]); };
        const float top = at(y0, x0) + fx * (at(y0, x1) - at(y0, x0));
        const float bottom = at(y1, x0) + fx * (at(y1, x1) - at(y1, x0));
        out[(static_cast<size_t>(c) * S + y) * S + x] = (top + fy * (bottom - top)) / 255.0f;
      }
    }
  }
  return out;
}

absl::Status WritePng(const std::string& path, const uint8_t* rgb, int w, int h) {
  if (!stbi_write_png(path.c_str(), w, h, 3, rgb, w * 3)) {
    return absl::PermissionDeniedError(absl::StrCat("cannot write image ", path,
                                                    "; check that the directory is writable"));
  }
  return absl::OkStatus();
}

}  // namespace ut::data
