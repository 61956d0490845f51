#include "data/image.h"

#include <cmath>

#include "data/test_util.h"
#include "gtest/gtest.h"

namespace ut::data {
namespace {

using testing::MakeTempDir;
using testing::Pattern;

// Expected value of channel c at (x, y) of the test pattern, in [0,1].
float PatternAt(int w, int h, int c, int x, int y) {
  const auto rgb = Pattern(w, h);
  return rgb[(static_cast<size_t>(y) * w + x) * 3 + c] / 255.0f;
}

TEST(ImageTest, PngDecodesExactly) {
  const std::string path = MakeTempDir("png") + "/p.png";
  testing::WritePatternPng(path, 16, 16);
  ASSERT_TRUE(CheckImageHeader(path).ok());
  auto chw = LoadImageCHW(path, 16);
  ASSERT_TRUE(chw.ok()) << chw.status();
  ASSERT_EQ(chw->size(), 3u * 16 * 16);
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 16; ++x) {
        ASSERT_EQ((*chw)[(c * 16 + y) * 16 + x], PatternAt(16, 16, c, x, y)) << c << y << x;
      }
    }
  }
}

TEST(ImageTest, JpegDecodesClosely) {
  const std::string path = MakeTempDir("jpg") + "/p.jpg";
  testing::WritePatternJpeg(path, 16, 16);
  ASSERT_TRUE(CheckImageHeader(path).ok());
  auto chw = LoadImageCHW(path, 16);
  ASSERT_TRUE(chw.ok()) << chw.status();
  double max_err = 0;
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 16; ++y) {
      for (int x = 0; x < 16; ++x) {
        max_err = std::max<double>(
            max_err, std::fabs((*chw)[(c * 16 + y) * 16 + x] - PatternAt(16, 16, c, x, y)));
      }
    }
  }
  EXPECT_LT(max_err, 0.1) << "JPEG quality 95 of a smooth ramp";
}

TEST(ImageTest, ResizeIsBilinear) {
  // 2x2 -> 4x4 with pixel-centre alignment: output x=1 samples source x=0.25.
  const uint8_t rgb[2 * 2 * 3] = {0, 0, 0, 200, 0, 0, 0, 100, 0, 200, 100, 0};
  const std::vector<float> out = ToCHW(rgb, 2, 2, 4);
  ASSERT_EQ(out.size(), 3u * 4 * 4);
  const float r[4] = {0, 50, 150, 200};  // red along x
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) EXPECT_NEAR(out[y * 4 + x] * 255, r[x], 1e-3) << x << "," << y;
  }
  // Downscale 16 -> 8 of the ramp: the mean of the two covered source pixels.
  const auto ramp = Pattern(16, 16);
  const std::vector<float> small = ToCHW(ramp.data(), 16, 16, 8);
  for (int x = 0; x < 8; ++x) {
    const float expect = (ramp[(2 * x) * 3] + ramp[(2 * x + 1) * 3]) / 2.0f / 255.0f;
    EXPECT_NEAR(small[x], expect, 1e-6) << x;
  }
}

TEST(ImageTest, LoadResizesToTheRequestedSize) {
  const std::string path = MakeTempDir("resize") + "/p.png";
  testing::WritePatternPng(path, 20, 10);
  auto chw = LoadImageCHW(path, 8);
  ASSERT_TRUE(chw.ok()) << chw.status();
  EXPECT_EQ(chw->size(), 3u * 8 * 8);
  for (float v : *chw) {
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, 1.0f);
  }
}

TEST(ImageTest, CorruptAndMissingFilesNameThePath) {
  const std::string dir = MakeTempDir("corrupt");
  testing::WriteTextFile(dir + "/bad.png", "definitely not a png");
  for (const std::string& path : {dir + "/bad.png", dir + "/missing.png"}) {
    const absl::Status header = CheckImageHeader(path);
    ASSERT_FALSE(header.ok());
    EXPECT_NE(header.message().find(path), std::string::npos) << header;
    auto decoded = LoadImageCHW(path, 8);
    ASSERT_FALSE(decoded.ok());
    EXPECT_NE(decoded.status().message().find(path), std::string::npos);
  }
  // Intact header, truncated pixel data: the header check passes, decoding fails.
  testing::WritePatternPng(dir + "/full.png", 32, 32);
  const std::string bytes = testing::ReadFileBytes(dir + "/full.png");
  testing::WriteTextFile(dir + "/cut.png", bytes.substr(0, 60));
  EXPECT_TRUE(CheckImageHeader(dir + "/cut.png").ok());
  EXPECT_FALSE(LoadImageCHW(dir + "/cut.png", 32).ok());
}

TEST(ImageTest, WritePngRoundTrips) {
  const std::string path = MakeTempDir("write") + "/w.png";
  const auto rgb = Pattern(8, 8);
  ASSERT_TRUE(WritePng(path, rgb.data(), 8, 8).ok());
  auto chw = LoadImageCHW(path, 8);
  ASSERT_TRUE(chw.ok());
  EXPECT_EQ((*chw)[7], PatternAt(8, 8, 0, 7, 0));
  EXPECT_FALSE(WritePng("/nonexistent/dir/w.png", rgb.data(), 8, 8).ok());
}

}  // namespace
}  // namespace ut::data
