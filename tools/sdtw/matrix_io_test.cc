// The soft_dtw tool's readers and writers (tools/sdtw/matrix_io.h): .npy files
// written by NumPy (tools/sdtw/examples) and by hand here, text variants, and
// every error case, whose message must name the file and the row.
#include "tools/sdtw/matrix_io.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace ut::tools {
namespace {

constexpr char kExamples[] = "tools/sdtw/examples/";

std::string TmpPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = TmpPath(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  EXPECT_TRUE(out.good()) << path;
  return path;
}

// A .npy file made here byte by byte (independent of WriteNpy): magic,
// version, header length (2 bytes in v1, 4 in v2), the header dict, the data.
std::string Npy(const std::string& dict, const std::string& data, int version = 1) {
  std::string header = dict;
  const size_t prefix = version == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(version);
  out += '\0';
  const size_t len_bytes = version == 1 ? 2 : 4;
  for (size_t k = 0; k < len_bytes; ++k) {
    out += static_cast<char>((header.size() >> (8 * k)) & 0xff);
  }
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string Dict(const std::string& descr, const std::string& shape, bool fortran = false) {
  return "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

void ExpectMatrix(const absl::StatusOr<Matrix>& got, int64_t rows, int64_t cols,
                  const std::vector<float>& want) {
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->rows, rows);
  EXPECT_EQ(got->cols, cols);
  EXPECT_EQ(got->values, want);
}

// ---- Files written by NumPy --------------------------------------------------

TEST(MatrixIo, NumpyWrittenFilesMatchTheirTextTwins) {
  const std::string dir = kExamples;
  auto x_npy = ReadNpy(dir + "x.npy");
  auto x_txt = ReadText(dir + "x.txt");
  ASSERT_TRUE(x_npy.ok()) << x_npy.status();
  ASSERT_TRUE(x_txt.ok()) << x_txt.status();
  EXPECT_EQ(x_npy->rows, 6);
  EXPECT_EQ(x_npy->cols, 2);
  EXPECT_FALSE(x_npy->one_d);
  EXPECT_EQ(x_npy->values, x_txt->values);  // float32 -> "%.9g" -> float32 is exact

  auto z_npy = ReadMatrix(dir + "z_1d.npy");  // float64, 1-D
  auto z_txt = ReadMatrix(dir + "z_1d.txt");
  ASSERT_TRUE(z_npy.ok()) << z_npy.status();
  ASSERT_TRUE(z_txt.ok()) << z_txt.status();
  EXPECT_EQ(z_npy->rows, 5);
  EXPECT_EQ(z_npy->cols, 1);
  EXPECT_TRUE(z_npy->one_d);
  EXPECT_FALSE(z_txt->one_d);
  EXPECT_EQ(z_npy->values, z_txt->values);

  auto y = ReadMatrix(dir + "y.csv");
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->rows, 4);
  EXPECT_EQ(y->cols, 2);
}

// ---- .npy made here ----------------------------------------------------------

TEST(MatrixIo, NpyFloat32TwoD) {
  const std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  ExpectMatrix(ReadNpy(WriteFile("f32.npy", Npy(Dict("<f4", "(2, 3)"), Bytes(v)))), 2, 3, v);
}

TEST(MatrixIo, NpyFloat64OneDRoundsToFloat32) {
  const std::vector<double> v = {0.1, -2.5, 1e10};
  auto m = ReadNpy(WriteFile("f64.npy", Npy(Dict("<f8", "(3,)"), Bytes(v))));
  ExpectMatrix(m, 3, 1, {0.1f, -2.5f, 1e10f});
  EXPECT_TRUE(m->one_d);
}

TEST(MatrixIo, NpyVersion2HeaderAndUpperCaseExtension) {
  const std::vector<float> v = {4.0f, 5.0f};
  ExpectMatrix(ReadMatrix(WriteFile("v2.NPY", Npy(Dict("<f4", "(1, 2)"), Bytes(v), 2))), 1, 2, v);
}

// ---- Text ----------------------------------------------------------------------

TEST(MatrixIo, TextSeparatorsCommentsAndBlankLines) {
  const std::string text =
      "\xEF\xBB\xBF# a header comment\n"
      "\n"
      "1, 2.5 ,-3e-2\r\n"
      "  +4\t5\t6   # trailing comment\n"
      "   \n"
      "# another comment\n"
      "7,8,\t9\n";
  ExpectMatrix(ReadText(WriteFile("mixed.csv", text)), 3, 3,
               {1.0f, 2.5f, -0.03f, 4.0f, 5.0f, 6.0f, 7.0f, 8.0f, 9.0f});
}

TEST(MatrixIo, TextOneNumberPerLineIsDimensionOne) {
  ExpectMatrix(ReadMatrix(WriteFile("col.txt", "1\n2\n3")), 3, 1, {1.0f, 2.0f, 3.0f});
}

// ---- Writers -------------------------------------------------------------------

TEST(MatrixIo, WritersRoundTrip) {
  const std::vector<float> v = {0.1f, -1e-20f, 3.4e38f, 7.0f, 1.0f / 3.0f, -0.0f};
  for (const std::string name : {"w.npy", "w.txt", "w.csv"}) {
    const std::string path = TmpPath(name);
    ASSERT_TRUE(WriteMatrix(path, v.data(), 3, 2).ok()) << name;
    auto back = ReadMatrix(path);
    ExpectMatrix(back, 3, 2, v);
    EXPECT_FALSE(back->one_d) << name;
  }
  const std::string path = TmpPath("w1d.npy");
  ASSERT_TRUE(WriteNpy(path, v.data(), 6, 1, /*one_d=*/true).ok());
  auto back = ReadNpy(path);
  ExpectMatrix(back, 6, 1, v);
  EXPECT_TRUE(back->one_d);
  // NumPy's layout: the data starts at a multiple of 64 bytes.
  std::ifstream in(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ((bytes.size() - v.size() * sizeof(float)) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (6,)"), std::string::npos);
}

TEST(MatrixIo, WriteToMissingDirectoryFails) {
  const float v = 1.0f;
  const absl::Status s = WriteMatrix(TmpPath("no/such/dir/E.npy"), &v, 1, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("no/such/dir/E.npy"), std::string::npos) << s;
}

// ---- Errors: each names the file and the row ----------------------------------

struct BadCase {
  std::string name;     // file name (its extension picks the reader)
  std::string content;
  std::vector<std::string> expect;  // substrings of the message besides the path
};

std::vector<BadCase> BadCases() {
  const float nan = std::nanf("");
  const double inf = HUGE_VAL;
  return {
      {"ragged.csv", "1,2,3\n4,5,6\n\n7,8\n", {"line 4", "2 numbers", "first row (line 1) has 3"}},
      {"word.txt", "# c\n1 2\n1 abc\n", {"line 3", "field 2 'abc' is not a number"}},
      {"header.csv", "a,b\n1,2\n", {"line 1", "'a' is not a number", "'#'"}},
      {"nan.txt", "1 2\nnan 3\n", {"line 2", "field 1", "is NaN"}},
      {"inf.csv", "1,-inf\n", {"line 1", "field 2", "is -Inf"}},
      {"big.txt", "1\n2\n1e39\n", {"line 3", "float32 range"}},
      {"huge.txt", "1e999\n", {"line 1", "float32 range"}},
      {"gap.csv", "1,2,3\n4,,6\n", {"line 2", "empty field"}},
      {"lead.csv", ",1\n", {"line 1", "empty field"}},
      {"trail.csv", "1,2,\n", {"line 1", "ends with a comma"}},
      {"empty.txt", "", {"no data rows"}},
      {"comments.txt", "# only\n\n  # comments\n", {"no data rows"}},
      {"nan.npy", Npy(Dict("<f4", "(2, 2)"), Bytes(std::vector<float>{1, 2, nan, 4})),
       {"element [1, 0]", "is NaN"}},
      {"inf1d.npy", Npy(Dict("<f8", "(3,)"), Bytes(std::vector<double>{1, 2, inf})),
       {"element [2]", "is +Inf"}},
      {"big64.npy", Npy(Dict("<f8", "(1, 2)"), Bytes(std::vector<double>{1, -1e300})),
       {"element [0, 1]", "float32 range"}},
      {"int.npy", Npy(Dict("<i4", "(2,)"), Bytes(std::vector<int>{1, 2})),
       {"dtype '<i4' is not supported", "astype(np.float32)"}},
      {"bigendian.npy", Npy(Dict(">f4", "(1,)"), std::string(4, '\0')),
       {"dtype '>f4' is not supported"}},
      {"fortran.npy", Npy(Dict("<f4", "(2, 2)", true), std::string(16, '\0')),
       {"Fortran order", "ascontiguousarray"}},
      {"3d.npy", Npy(Dict("<f4", "(1, 2, 2)"), std::string(16, '\0')),
       {"(1, 2, 2)", "3 dimensions"}},
      {"scalar.npy", Npy(Dict("<f4", "()"), std::string(4, '\0')), {"0 dimensions"}},
      {"zero.npy", Npy(Dict("<f4", "(0, 3)"), ""), {"(0, 3) is empty"}},
      {"short.npy", Npy(Dict("<f4", "(2, 3)"), std::string(20, '\0')),
       {"truncated", "needs 24 data bytes, the file has 20"}},
      {"long.npy", Npy(Dict("<f4", "(1,)"), std::string(8, '\0')), {"trailing bytes"}},
      {"magic.npy", "1 2 3\n", {"not a .npy file"}},
      {"v9.npy", std::string("\x93NUMPY\x09\x00\x00\x00", 10), {"version 9"}},
  };
}

TEST(MatrixIo, EveryErrorNamesFileAndRow) {
  for (const BadCase& c : BadCases()) {
    const std::string path = WriteFile(c.name, c.content);
    const absl::StatusOr<Matrix> got = ReadMatrix(path);
    ASSERT_FALSE(got.ok()) << c.name << " was accepted";
    const std::string msg(got.status().message());
    EXPECT_NE(msg.find(path), std::string::npos) << c.name << ": " << msg;
    for (const std::string& part : c.expect) {
      EXPECT_NE(msg.find(part), std::string::npos) << c.name << ": '" << part << "' not in: "
                                                   << msg;
    }
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.name << ": not one line: " << msg;
  }
}

TEST(MatrixIo, MissingFile) {
  const std::string path = TmpPath("does_not_exist.npy");
  const absl::StatusOr<Matrix> got = ReadMatrix(path);
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.status().message().find("cannot open '" + path + "'"), std::string::npos)
      << got.status();
}

}  // namespace
}  // namespace ut::tools
