// Helpers for the data tests: temp dirs, fixture images, a small tokenizer.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace ut::data::testing {

// A fresh directory under $TEST_TMPDIR (or /tmp).
std::string MakeTempDir(const std::string& name);
void WriteTextFile(const std::string& path, const std::string& text);
std::string ReadFileBytes(const std::string& path);
// A w x h RGB test pattern: pixel (x, y) = (x * 255 / (w-1), y * 255 / (h-1), 90).
std::vector<uint8_t> Pattern(int w, int h);
void WritePatternPng(const std::string& path, int w, int h);
void WritePatternJpeg(const std::string& path, int w, int h);
// Trains (once per process) a tokenizer on short scene sentences; vocab 96.
const Tokenizer& SmallTokenizer();

}  // namespace ut::data::testing
