// safetensors read/write. Layout of a file:
//   [0, 8)            u64 little-endian header length H
//   [8, 8+H)          JSON header (UTF-8, may be space-padded)
//   [8+H, end)        tensor bytes; each tensor's data_offsets are relative to 8+H
#include "core/tensor/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

#include "nlohmann/json.hpp"

namespace ut {
namespace {

using Json = nlohmann::json;

// Header lengths above this are treated as corrupt (the format caps it at 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

const char* SafetensorsDType(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

bool ParseDType(const std::string& s, DType* dtype) {
  if (s == "F32") *dtype = DType::kF32;
  else if (s == "BF16") *dtype = DType::kBF16;
  else if (s == "I32") *dtype = DType::kI32;
  else if (s == "I64") *dtype = DType::kI64;
  else return false;
  return true;
}

void PutU64LE(uint64_t v, char out[8]) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint64_t GetU64LE(const unsigned char in[8]) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

absl::Status Corrupt(const std::string& path, const std::string& what) {
  return absl::DataLossError(
      absl::StrCat("safetensors file ", path, ": ", what, " (the file is truncated or corrupt)"));
}

}  // namespace

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  // Header: ordered_json keeps tensors in the given order (readers do not care).
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const NamedTensor& nt : tensors) {
    CHECK(nt.tensor.defined()) << "WriteSafetensors: undefined tensor " << nt.name;
    CHECK(nt.tensor.device() == Device::kCPU) << "WriteSafetensors: " << nt.name << " not on CPU";
    if (nt.name.empty() || nt.name == "__metadata__" || header.contains(nt.name)) {
      return absl::InvalidArgumentError(absl::StrCat("writing ", path, ": tensor name '", nt.name,
                                                     "' is empty, reserved or duplicated"));
    }
    uint64_t bytes = nt.tensor.nbytes();
    header[nt.name] = {{"dtype", SafetensorsDType(nt.tensor.dtype())},
                       {"shape", nt.tensor.shape()},
                       {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data section to 8 bytes

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open ", path, " for writing: ",
                                                    std::strerror(errno)));
  }
  char len[8];
  PutU64LE(text.size(), len);
  out.write(len, 8);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  for (const NamedTensor& nt : tensors) {
    if (nt.tensor.nbytes() > 0) {
      out.write(static_cast<const char*>(nt.tensor.raw()),
                static_cast<std::streamsize>(nt.tensor.nbytes()));
    }
  }
  out.flush();
  if (!out) {
    return absl::DataLossError(absl::StrCat("writing ", path, " failed (disk full?): ",
                                            std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open safetensors file ", path, ": ",
                                            std::strerror(errno)));
  }
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  if (file_size < 8) {
    return Corrupt(path, absl::StrCat("file is ", file_size, " bytes, shorter than the 8-byte "
                                      "header length"));
  }
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  const uint64_t header_len = GetU64LE(len_bytes);
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    return Corrupt(path, absl::StrCat("bad header length ", header_len, " (file has ",
                                      file_size, " bytes)"));
  }
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  if (!in) return Corrupt(path, "could not read the JSON header");

  Json header = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return Corrupt(path, "JSON header does not parse");
  if (!header.is_object()) return Corrupt(path, "JSON header is not an object");

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  SafetensorsFile result;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [begin, end) of every tensor
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& entry = it.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(path, "__metadata__ is not an object");
      for (auto m = entry.begin(); m != entry.end(); ++m) {
        if (!m.value().is_string()) {
          return Corrupt(path, absl::StrCat("__metadata__ value for '", m.key(),
                                            "' is not a string"));
        }
        result.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor '", name, "'");
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets") || !entry["dtype"].is_string() ||
        !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return Corrupt(path, where + " needs dtype (string), shape (array) and data_offsets "
                                   "([begin, end])");
    }
    DType dtype;
    const std::string dtype_name = entry["dtype"].get<std::string>();
    if (!ParseDType(dtype_name, &dtype)) {
      return Corrupt(path, absl::StrCat(where, " has unknown dtype '", dtype_name,
                                        "' (supported: F32, BF16, I32, I64)"));
    }
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const Json& d : entry["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40)) {
        return Corrupt(path, where + " has a negative, non-integer or huge dimension");
      }
      shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      if (numel > (1ull << 40)) return Corrupt(path, where + " has too many elements");
    }
    const Json& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Corrupt(path, where + " has non-integer data_offsets");
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return Corrupt(path, absl::StrCat(where, " data_offsets [", begin, ", ", end,
                                        ") out of range: data section has ", data_size,
                                        " bytes"));
    }
    const uint64_t expected = numel * DTypeSize(dtype);
    if (end - begin != expected) {
      return Corrupt(path, absl::StrCat(where, " has ", end - begin, " bytes but ", dtype_name,
                                        " x ", Json(shape).dump(), " needs ", expected));
    }
    Tensor t = Tensor::Empty(shape, dtype);
    if (expected > 0) {
      in.seekg(static_cast<std::streamoff>(data_start + begin));
      in.read(static_cast<char*>(t.raw()), static_cast<std::streamsize>(expected));
      if (!in) return Corrupt(path, "could not read the data of " + where);
    }
    ranges.emplace_back(begin, end);
    result.tensors.emplace(name, std::move(t));
  }
  // The tensors must tile the data section exactly: no gaps, no overlaps, no trailing bytes.
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin != covered) {
      return Corrupt(path, absl::StrCat("tensor data overlaps or leaves a gap at byte ", covered));
    }
    covered = end;
  }
  if (covered != data_size) {
    return Corrupt(path, absl::StrCat("tensors cover ", covered, " bytes but the data section has ",
                                      data_size));
  }
  return result;
}

}  // namespace ut
