// Internal: the function table of the SentencePiece shim (spm_shim.cc).
//
// Why a shim: Debian's libsentencepiece.so carries its own copy of protobuf
// 3.14 (lite) and exports those symbols, while the rest of the engine links
// the system libprotobuf 3.21 (config protos). Linked into one process the two
// copies interpose each other and the process aborts at start-up ("compiled
// against version 3.14.0 ... installed version 3.21.12") or crashes. So
// libsentencepiece is never linked into our binaries: spm_shim.cc is built as
// a small shared library (linked against libsentencepiece), embedded in
// //data:data as bytes, and dlopen()ed with RTLD_LOCAL | RTLD_DEEPBIND so that
// sentencepiece binds to its own protobuf copy and nobody else sees it.
//
// Both sides are built by the same compiler against the same libstdc++, so
// std::string / std::vector cross the boundary. This header must not include
// absl or sentencepiece headers (sentencepiece_processor.h declares
// absl::string_view as std::string_view, which clashes with Debian's absl).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ut::data::internal {

inline constexpr int kSpmApiVersion = 1;

struct SpmApi {
  int version;
  // A SentencePieceProcessor. Load returns false and fills *error on failure.
  void* (*create)();
  void (*destroy)(void* processor);
  bool (*load)(void* processor, const std::string& serialized_model, std::string* error);
  void (*encode)(const void* processor, const std::string& text, std::vector<int>* ids);
  void (*decode)(const void* processor, const std::vector<int>& ids, std::string* text);
  int (*piece_size)(const void* processor);
  int (*piece_to_id)(const void* processor, const std::string& piece);
  void (*id_to_piece)(const void* processor, int id, std::string* piece);
  float (*score)(const void* processor, int id);
  bool (*is_unknown)(const void* processor, int id);
  int (*unk_id)(const void* processor);
  int (*bos_id)(const void* processor);
  int (*eos_id)(const void* processor);
  // Trains a model from `lines` with trainer flags `args` ("--k=v --k=v"),
  // random seed `seed` and sentencepiece's own log level `min_log_level`
  // (0 info, 1 warning, 2 error). Writes the serialized ModelProto.
  bool (*train)(const std::vector<std::string>& lines, const std::string& args, uint32_t seed,
                int min_log_level, std::string* serialized_model, std::string* error);
};

}  // namespace ut::data::internal

// Exported by the shim library.
extern "C" const ut::data::internal::SpmApi* ut_spm_api();
