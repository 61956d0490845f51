#include "core/tensor/safetensors.h"

#include <cstring>
#include <fstream>
#include <iterator>

#include "gtest/gtest.h"

namespace ut {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

// A file with one tensor of each dtype and a scalar; returns its path.
std::string WriteSample(const std::string& name) {
  Tensor a = Tensor::Empty({2, 3});
  for (int i = 0; i < 6; ++i) a.f32()[i] = 0.5f * i - 1.25f;
  Tensor b = Tensor::Empty({4}, DType::kBF16);
  for (int i = 0; i < 4; ++i) b.data<uint16_t>()[i] = F32ToBF16(1.5f * i);
  Tensor c = Tensor::Empty({3}, DType::kI32);
  for (int i = 0; i < 3; ++i) c.data<int32_t>()[i] = -7 + i;
  Tensor d = Tensor::Empty({1, 2}, DType::kI64);
  d.data<int64_t>()[0] = int64_t{1} << 40;
  d.data<int64_t>()[1] = -3;
  Tensor s = Tensor::Empty({});
  s.f32()[0] = 42.0f;
  std::string path = TempPath(name);
  absl::Status st = WriteSafetensors(path, {{"w.a", a}, {"b", b}, {"c", c}, {"d", d}, {"s", s}},
                                     {{"format", "pt"}, {"step", "12"}});
  EXPECT_TRUE(st.ok()) << st;
  return path;
}

TEST(Safetensors, RoundTripAllDTypesAndMetadata) {
  std::string path = WriteSample("rt.safetensors");
  auto file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors.size(), 5u);
  EXPECT_EQ(file->metadata.at("format"), "pt");
  EXPECT_EQ(file->metadata.at("step"), "12");
  const Tensor& a = file->tensors.at("w.a");
  ASSERT_EQ(a.shape(), (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a.dtype(), DType::kF32);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(a.f32()[i], 0.5f * i - 1.25f);
  const Tensor& b = file->tensors.at("b");
  ASSERT_EQ(b.dtype(), DType::kBF16);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(BF16ToF32(b.data<uint16_t>()[i]), 1.5f * i);
  const Tensor& c = file->tensors.at("c");
  ASSERT_EQ(c.dtype(), DType::kI32);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c.data<int32_t>()[i], -7 + i);
  const Tensor& d = file->tensors.at("d");
  ASSERT_EQ(d.dtype(), DType::kI64);
  EXPECT_EQ(d.data<int64_t>()[0], int64_t{1} << 40);
  EXPECT_EQ(d.data<int64_t>()[1], -3);
  const Tensor& s = file->tensors.at("s");
  EXPECT_EQ(s.ndim(), 0);
  EXPECT_EQ(s.f32()[0], 42.0f);
}

TEST(Safetensors, HeaderLayoutMatchesFormat) {
  // 8-byte LE length, JSON header padded so the data section starts 8-aligned,
  // data bytes in the order given.
  Tensor a = Tensor::Empty({2});
  a.f32()[0] = 1.0f;
  a.f32()[1] = 2.0f;
  std::string path = TempPath("layout.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", a}}).ok());
  std::string bytes = ReadAll(path);
  uint64_t len = 0;
  for (int i = 0; i < 8; ++i) len |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  EXPECT_EQ(len % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + len + 8);
  std::string header = bytes.substr(8, len);
  EXPECT_NE(header.find("\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"),
            std::string::npos) << header;
  float back[2];
  std::memcpy(back, bytes.data() + 8 + len, 8);
  EXPECT_EQ(back[0], 1.0f);
  EXPECT_EQ(back[1], 2.0f);
}

TEST(Safetensors, ReadsFileWrittenByReferenceImplementation) {
  // testdata/make_safetensors_fixture.py (pip safetensors + torch) wrote it.
  auto file = ReadSafetensors("core/tensor/testdata/py_written.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("source"), "pytorch");
  const Tensor& w = file->tensors.at("model.w");
  ASSERT_EQ(w.shape(), (std::vector<int64_t>{2, 3}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(w.f32()[i], i * 0.25f - 0.5f);
  const Tensor& ids = file->tensors.at("ids");
  ASSERT_EQ(ids.dtype(), DType::kI64);
  EXPECT_EQ(ids.data<int64_t>()[0], 7);
  EXPECT_EQ(ids.data<int64_t>()[1], -1);
  EXPECT_EQ(ids.data<int64_t>()[2], int64_t{1} << 40);
  const Tensor& half = file->tensors.at("half");
  ASSERT_EQ(half.dtype(), DType::kBF16);
  EXPECT_EQ(BF16ToF32(half.data<uint16_t>()[0]), 1.0f);
  EXPECT_EQ(BF16ToF32(half.data<uint16_t>()[1]), -2.5f);
  const Tensor& n = file->tensors.at("n");
  ASSERT_EQ(n.dtype(), DType::kI32);
  EXPECT_EQ(n.data<int32_t>()[1], 4);
}

TEST(Safetensors, DuplicateNameIsAnError) {
  Tensor a = Tensor::Zeros({1});
  absl::Status st = WriteSafetensors(TempPath("dup.safetensors"), {{"x", a}, {"x", a}});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'x'"), std::string::npos) << st;
}

TEST(Safetensors, MissingFileNamesThePath) {
  auto file = ReadSafetensors(TempPath("does_not_exist.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.status().message().find("does_not_exist.safetensors"), std::string::npos);
}

// Reads `bytes` written to a file and expects an error mentioning the path and `what`.
void ExpectCorrupt(const std::string& name, const std::string& bytes, const std::string& what) {
  std::string path = TempPath(name);
  WriteAll(path, bytes);
  auto file = ReadSafetensors(path);
  ASSERT_FALSE(file.ok()) << name << " was accepted";
  std::string msg(file.status().message());
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
}

std::string WithHeader(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) out[i] = char((len >> (8 * i)) & 0xff);
  return out + json + data;
}

TEST(Safetensors, TruncatedFilesAreRejected) {
  std::string good = ReadAll(WriteSample("good.safetensors"));
  ExpectCorrupt("t0.safetensors", "", "shorter than the 8-byte header length");
  ExpectCorrupt("t1.safetensors", good.substr(0, 5), "shorter than the 8-byte header length");
  ExpectCorrupt("t2.safetensors", good.substr(0, 20), "bad header length");
  // Truncated in the data section: every tensor that no longer fits is caught.
  ExpectCorrupt("t3.safetensors", good.substr(0, good.size() - 1), "out of range");
  // One extra byte: data section longer than the tensors.
  ExpectCorrupt("t4.safetensors", good + "x", "cover");
}

TEST(Safetensors, CorruptHeadersAreRejected) {
  std::string f8(8, '\0');
  ExpectCorrupt("c1.safetensors", WithHeader("{not json", ""), "does not parse");
  ExpectCorrupt("c2.safetensors", WithHeader("[1,2]", ""), "not an object");
  ExpectCorrupt("c3.safetensors",
                WithHeader(R"({"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}})", "abcd"),
                "unknown dtype 'F16'");
  ExpectCorrupt("c4.safetensors",
                WithHeader(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", f8),
                "needs 12");
  ExpectCorrupt("c5.safetensors",
                WithHeader(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abc"),
                "out of range");
  ExpectCorrupt("c6.safetensors", WithHeader(R"({"x":{"dtype":"F32","shape":[2]}})", f8),
                "data_offsets");
  ExpectCorrupt("c7.safetensors",
                WithHeader(R"({"x":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", f8),
                "dimension");
  ExpectCorrupt("c8.safetensors",
                WithHeader(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           f8),
                "overlaps");
  ExpectCorrupt("c9.safetensors", WithHeader(R"({"__metadata__":{"a":1}})", ""),
                "not a string");
  // Header length far beyond the file size.
  std::string huge(8, '\xff');
  ExpectCorrupt("c10.safetensors", huge + "{}", "bad header length");
}

}  // namespace
}  // namespace ut
