#include "tools/sdtw/matrix_io.h"

#include <bit>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "core/base/logging.h"

namespace ut::tools {
namespace {

static_assert(std::endian::native == std::endian::little, "the .npy code assumes little-endian");

constexpr char kNpyMagic[] = "\x93NUMPY";  // 6 bytes
constexpr char kFiniteHint[] = "inputs must be finite numbers within the float32 range";

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open '", path, "': ", std::strerror(errno),
                                            "; check the path (relative paths are relative to "
                                            "the directory you ran the command in)"));
  }
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  return bytes.str();
}

std::string_view TrimLeft(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view Trim(std::string_view s) {
  s = TrimLeft(s);
  while (!s.empty() && absl::ascii_isspace(s.back())) s.remove_suffix(1);
  return s;
}

// A token as it may be shown in a message: at most 24 printable characters.
std::string Shown(std::string_view token) {
  std::string out;
  for (char c : token.substr(0, 24)) out += absl::ascii_isprint(c) ? c : '?';
  if (token.size() > 24) out += "...";
  return out;
}

// Rounds one value to float32; "" when fine, else what is wrong with it.
std::string ToFloat(double v, float* out) {
  if (std::isnan(v)) return "is NaN";
  if (std::isinf(v)) return v > 0 ? "is +Inf" : "is -Inf";
  if (std::fabs(v) > std::numeric_limits<float>::max()) {
    return absl::StrCat("= ", v, " is beyond the float32 range (|v| <= 3.4e38)");
  }
  *out = static_cast<float>(v);
  return "";
}

// ---- .npy header ------------------------------------------------------------

// The value text after 'key': in a header dict such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }.
std::string_view DictValue(std::string_view header, std::string_view key) {
  for (const char quote : {'\'', '"'}) {
    const std::string quoted = std::string(1, quote) + std::string(key) + quote;
    size_t at = header.find(quoted);
    if (at == std::string_view::npos) continue;
    at = header.find(':', at + quoted.size());
    if (at == std::string_view::npos) return {};
    std::string_view rest = TrimLeft(header.substr(at + 1));
    size_t end = 0;
    if (!rest.empty() && (rest[0] == '\'' || rest[0] == '"')) {  // a string
      end = rest.find(rest[0], 1);
      return end == std::string_view::npos ? std::string_view{} : rest.substr(1, end - 1);
    }
    if (!rest.empty() && rest[0] == '(') {  // a tuple
      end = rest.find(')');
      return end == std::string_view::npos ? std::string_view{} : rest.substr(0, end + 1);
    }
    end = rest.find_first_of(",}");
    return Trim(rest.substr(0, end));
  }
  return {};
}

// "(3, 4)" / "(5,)" / "()" -> dims.
bool ParseShape(std::string_view tuple, std::vector<int64_t>* dims) {
  if (tuple.size() < 2 || tuple.front() != '(' || tuple.back() != ')') return false;
  tuple = tuple.substr(1, tuple.size() - 2);
  while (!tuple.empty()) {
    const size_t comma = tuple.find(',');
    std::string_view item = Trim(tuple.substr(0, comma));
    tuple = comma == std::string_view::npos ? std::string_view{} : tuple.substr(comma + 1);
    if (item.empty()) {
      if (!Trim(tuple).empty()) return false;  // "(,3)"
      break;
    }
    if (item.back() == 'L') item.remove_suffix(1);  // Python 2 longs
    int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || ptr != item.data() + item.size() || v < 0) return false;
    dims->push_back(v);
  }
  return true;
}

std::string ShapeText(const std::vector<int64_t>& dims) {
  return absl::StrCat("(", absl::StrJoin(dims, ", "), dims.size() == 1 ? ",)" : ")");
}

}  // namespace

bool IsNpyPath(const std::string& path) {
  return path.size() >= 4 && absl::AsciiStrToLower(path.substr(path.size() - 4)) == ".npy";
}

absl::StatusOr<Matrix> ReadMatrix(const std::string& path) {
  return IsNpyPath(path) ? ReadNpy(path) : ReadText(path);
}

absl::StatusOr<Matrix> ReadNpy(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string bytes, ReadFile(path));
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  // Magic (6), version (2), header length (2 in v1, 4 in v2/v3), header.
  if (bytes.size() < 10 || bytes.compare(0, 6, kNpyMagic, 6) != 0) {
    return bad(
        "not a .npy file (no \\x93NUMPY magic); write it with numpy.save, or give text "
        "input a name not ending in .npy");
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) {
    return bad(absl::StrCat(".npy format version ", major, " is not supported (1, 2 or 3)"));
  }
  const size_t len_bytes = major == 1 ? 2 : 4;
  size_t header_len = 0;
  for (size_t k = 0; k < len_bytes && 8 + k < bytes.size(); ++k) {
    header_len |= static_cast<size_t>(static_cast<unsigned char>(bytes[8 + k])) << (8 * k);
  }
  const size_t data_start = 8 + len_bytes + header_len;
  if (bytes.size() < data_start) return bad("truncated .npy header");
  const std::string_view header(bytes.data() + 8 + len_bytes, header_len);

  const std::string_view descr = DictValue(header, "descr");
  int itemsize = 0;
  if (descr == "<f4") {
    itemsize = 4;
  } else if (descr == "<f8") {
    itemsize = 8;
  } else {
    return bad(absl::StrCat("dtype '", Shown(descr), "' is not supported; save float32 or ",
                            "float64 little-endian, e.g. np.save(path, x.astype(np.float32))"));
  }
  const std::string_view order = DictValue(header, "fortran_order");
  if (order == "True") {
    return bad("array is in Fortran order; save a C-order array: "
               "np.save(path, np.ascontiguousarray(x))");
  }
  if (order != "False") return bad("header has no fortran_order: False/True");
  std::vector<int64_t> dims;
  if (!ParseShape(DictValue(header, "shape"), &dims)) {
    return bad(absl::StrCat("cannot read the shape in the header '", Shown(header), "'"));
  }
  if (dims.size() != 1 && dims.size() != 2) {
    return bad(absl::StrCat("shape ", ShapeText(dims), " has ", dims.size(),
                            " dimensions; need 1-D [n] or 2-D [n, d]"));
  }
  Matrix mat;
  mat.rows = dims[0];
  mat.cols = dims.size() == 2 ? dims[1] : 1;
  mat.one_d = dims.size() == 1;
  if (mat.rows == 0 || mat.cols == 0) {
    return bad(absl::StrCat("shape ", ShapeText(dims), " is empty; need at least one row ",
                            "and one column"));
  }
  const uint64_t have = bytes.size() - data_start;
  if (static_cast<uint64_t>(mat.rows) > (uint64_t{1} << 60) / itemsize / mat.cols) {
    return bad(absl::StrCat("shape ", ShapeText(dims), " is too large"));
  }
  const uint64_t need = static_cast<uint64_t>(mat.rows * mat.cols) * itemsize;
  if (have != need) {
    return bad(absl::StrCat(have < need ? "truncated" : "trailing bytes", ": shape ",
                            ShapeText(dims), " of ", itemsize == 4 ? "float32" : "float64",
                            " needs ", need, " data bytes, the file has ", have,
                            "; rewrite it with numpy.save"));
  }
  mat.values.resize(mat.rows * mat.cols);
  const char* data = bytes.data() + data_start;
  for (int64_t k = 0; k < mat.rows * mat.cols; ++k) {
    double v;
    if (itemsize == 4) {
      float f;
      std::memcpy(&f, data + 4 * k, 4);
      v = f;
    } else {
      std::memcpy(&v, data + 8 * k, 8);
    }
    if (const std::string what = ToFloat(v, &mat.values[k]); !what.empty()) {
      const std::string where = mat.one_d
                                    ? absl::StrCat("[", k, "]")
                                    : absl::StrCat("[", k / mat.cols, ", ", k % mat.cols, "]");
      return bad(absl::StrCat("element ", where, " ", what, "; ", kFiniteHint));
    }
  }
  return mat;
}

absl::StatusOr<Matrix> ReadText(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadFile(path));
  Matrix mat;
  int first_line = 0;  // line of the first data row
  std::string_view rest = text;
  if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);  // UTF-8 BOM
  std::vector<float> row;
  for (int line = 1; !rest.empty() || line == 1; ++line) {
    const size_t eol = rest.find('\n');
    std::string_view s = rest.substr(0, eol);
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
    if (const size_t hash = s.find('#'); hash != std::string_view::npos) s = s.substr(0, hash);
    auto bad = [&](const std::string& what) {
      return absl::InvalidArgumentError(absl::StrCat(path, ", line ", line, ": ", what));
    };
    // Fields: runs of characters other than space, tab, CR and comma. Two
    // commas with only blanks between them (or a comma at either end of the
    // line) leave an empty field, which is an error.
    row.clear();
    bool after_comma = false, any = false;
    size_t k = 0;
    while (k < s.size()) {
      const char c = s[k];
      if (c == ' ' || c == '\t' || c == '\r') {
        ++k;
        continue;
      }
      if (c == ',') {
        if (!any || after_comma) {
          return bad(absl::StrCat("empty field before comma ", row.size() + 1,
                                  "; write one number between every two commas"));
        }
        after_comma = true;
        ++k;
        continue;
      }
      size_t end = s.find_first_of(" \t\r,", k);
      if (end == std::string_view::npos) end = s.size();
      std::string_view token = s.substr(k, end - k);
      std::string_view digits = token;
      if (digits.size() > 1 && digits[0] == '+') digits.remove_prefix(1);
      double v = 0.0;
      const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
      if (ptr != digits.data() + digits.size() ||
          (ec != std::errc() && ec != std::errc::result_out_of_range)) {
        return bad(absl::StrCat("field ", row.size() + 1, " '", Shown(token),
                                "' is not a number; rows hold numbers only (comment out a "
                                "header line with '#')"));
      }
      if (ec == std::errc::result_out_of_range) {  // from_chars leaves v as it was
        v = std::strtod(std::string(digits).c_str(), nullptr);  // +-HUGE_VAL or ~0
      }
      float f = 0.0f;
      if (const std::string what = ToFloat(v, &f); !what.empty()) {
        return bad(absl::StrCat("field ", row.size() + 1, " '", Shown(token), "' ", what, "; ",
                                kFiniteHint));
      }
      row.push_back(f);
      any = true;
      after_comma = false;
      k = end;
    }
    if (after_comma) {
      return bad(absl::StrCat("the line ends with a comma (empty field ", row.size() + 1,
                              "); remove the trailing comma"));
    }
    if (row.empty()) continue;  // blank or comment-only
    if (mat.rows == 0) {
      mat.cols = static_cast<int64_t>(row.size());
      first_line = line;
    } else if (static_cast<int64_t>(row.size()) != mat.cols) {
      return bad(absl::StrCat(row.size(), " numbers, but the first row (line ", first_line,
                              ") has ", mat.cols, "; every row (one slice per line) needs the ",
                              "same number of values"));
    }
    mat.values.insert(mat.values.end(), row.begin(), row.end());
    ++mat.rows;
  }
  if (mat.rows == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": no data rows (empty, or only blank/comment lines); put one slice per line, "
              "numbers separated by spaces, tabs or commas"));
  }
  return mat;
}

// ---- Writers ----------------------------------------------------------------

absl::Status WriteMatrix(const std::string& path, const float* values, int64_t rows,
                         int64_t cols, bool one_d) {
  return IsNpyPath(path) ? WriteNpy(path, values, rows, cols, one_d)
                         : WriteText(path, values, rows, cols);
}

namespace {

absl::Status WriteBytes(const std::string& path, const std::string& head, const char* data,
                        size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (out) {
    out.write(head.data(), head.size());
    out.write(data, size);
    out.close();
  }
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cannot write '", path, "': ", std::strerror(errno),
        "; check that the directory exists and is writable"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteNpy(const std::string& path, const float* values, int64_t rows, int64_t cols,
                      bool one_d) {
  CHECK(!one_d || cols == 1) << "a 1-D .npy needs cols == 1";
  std::string dict = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows,
                                  one_d ? ",), }" : absl::StrCat(", ", cols, "), }"));
  // Version 1.0: magic, 1, 0, uint16 header length; header padded with spaces
  // and ended by '\n' so the data starts at a multiple of 64 bytes.
  const size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict += '\n';
  std::string head(kNpyMagic, 6);
  head += '\x01';
  head += '\x00';
  head += static_cast<char>(dict.size() & 0xff);
  head += static_cast<char>(dict.size() >> 8);
  head += dict;
  return WriteBytes(path, head, reinterpret_cast<const char*>(values),
                    static_cast<size_t>(rows * cols) * sizeof(float));
}

absl::Status WriteText(const std::string& path, const float* values, int64_t rows,
                       int64_t cols) {
  std::string text;
  char buf[32];
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      std::snprintf(buf, sizeof(buf), "%.9g", values[i * cols + j]);
      if (j > 0) text += ' ';
      text += buf;
    }
    text += '\n';
  }
  return WriteBytes(path, text, nullptr, 0);
}

}  // namespace ut::tools
