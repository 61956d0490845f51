#include "data/test_util.h"

#include <stb/stb_image_write.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <unistd.h>

#include "glog/logging.h"

#include "gtest/gtest.h"

namespace ut::data::testing {

std::string MakeTempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  static int counter = 0;
  const std::string dir = std::string(base != nullptr ? base : "/tmp") + "/" + name + "_" +
                          std::to_string(getpid()) + "_" + std::to_string(counter++);
  mkdir(dir.c_str(), 0755);
  return dir;
}

void WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> Pattern(int w, int h) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(w > 1 ? x * 255 / (w - 1) : 0);
      p[1] = static_cast<uint8_t>(h > 1 ? y * 255 / (h - 1) : 0);
      p[2] = 90;
    }
  }
  return rgb;
}

void WritePatternPng(const std::string& path, int w, int h) {
  const auto rgb = Pattern(w, h);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, 3, rgb.data(), w * 3)) << path;
}

void WritePatternJpeg(const std::string& path, int w, int h) {
  const auto rgb = Pattern(w, h);
  ASSERT_TRUE(stbi_write_jpg(path.c_str(), w, h, 3, rgb.data(), 95)) << path;
}

const Tokenizer& SmallTokenizer() {
  static const Tokenizer* tokenizer = [] {
    std::vector<std::string> corpus;
    const char* colors[] = {"red", "green", "blue", "yellow"};
    const char* shapes[] = {"circle", "square", "triangle"};
    for (int i = 0; i < 300; ++i) {
      corpus.push_back(std::string("a ") + colors[i % 4] + " " + shapes[(i / 4) % 3] +
                       (i % 2 ? " left of a small " : " above a ") + colors[(i / 12) % 4] + " " +
                       shapes[(i / 48) % 3]);
      corpus.push_back(std::string("what color is the ") + shapes[i % 3] + " ?");
    }
    const std::string prefix = MakeTempDir("small_tokenizer") + "/tok";
    absl::Status trained = Tokenizer::Train(corpus, prefix, 96, 1);
    CHECK(trained.ok()) << trained;
    auto loaded = Tokenizer::Load(prefix + ".model");
    CHECK(loaded.ok()) << loaded.status();
    return loaded->release();
  }();
  return *tokenizer;
}

}  // namespace ut::data::testing
