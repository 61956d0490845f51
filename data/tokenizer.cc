// Tokenizer: SentencePiece through the dlopen()ed shim (spm_api.h says why).
#include "data/tokenizer.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/str_join.h"
#include "glog/logging.h"
#include "data/spm_api.h"

namespace ut::data {
namespace internal {
// The shim library's bytes (generated from //data:libut_spm_shim.so).
extern const unsigned char kSpmShimBlob[];
extern const unsigned long kSpmShimBlob_size;
}  // namespace internal

namespace {

using internal::SpmApi;

// Sanitizer runtimes refuse RTLD_DEEPBIND. Sanitized builds load the shim
// without it, so they work only if the process does not also link the system
// libprotobuf (e.g. a data-only test binary).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr int kDeepBind = 0;
#else
constexpr int kDeepBind = RTLD_DEEPBIND;
#endif

// Writes the embedded shim to an anonymous file (or a temp file if memfd is
// unavailable) and dlopen()s it with its own symbol scope.
absl::StatusOr<const SpmApi*> OpenShim() {
  std::string path;
  int fd = memfd_create("ut_spm_shim", MFD_CLOEXEC);
  if (fd >= 0) {
    path = "/proc/self/fd/" + std::to_string(fd);
  } else {
    const char* tmp = std::getenv("TMPDIR");
    path = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/ut_spm_shim_XXXXXX";
    fd = mkstemp(path.data());
    if (fd < 0) {
      return absl::InternalError(absl::StrCat("tokenizer: cannot create a temporary file ", path,
                                              " for the sentencepiece shim: ",
                                              std::strerror(errno), "; set TMPDIR to a writable "
                                              "directory"));
    }
  }
  const unsigned char* bytes = internal::kSpmShimBlob;
  size_t left = internal::kSpmShimBlob_size;
  while (left > 0) {
    const ssize_t n = write(fd, bytes, left);
    if (n <= 0) {
      close(fd);
      return absl::InternalError(absl::StrCat("tokenizer: cannot write the sentencepiece shim to ",
                                              path, ": ", std::strerror(errno)));
    }
    bytes += n;
    left -= static_cast<size_t>(n);
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
  if (path.rfind("/proc/self/fd/", 0) != 0) unlink(path.c_str());
  close(fd);  // the mapping keeps the library alive
  if (handle == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "tokenizer: cannot load the sentencepiece shim: ", dlerror(),
        ". It needs libsentencepiece.so.0 and libsentencepiece_train.so.0 "
        "(Debian: apt-get install libsentencepiece0, or put them on LD_LIBRARY_PATH)"));
  }
  using ApiFn = const SpmApi* (*)();
  auto api_fn = reinterpret_cast<ApiFn>(dlsym(handle, "ut_spm_api"));
  if (api_fn == nullptr || api_fn()->version != internal::kSpmApiVersion) {
    return absl::InternalError("tokenizer: the sentencepiece shim has no matching ut_spm_api");
  }
  return api_fn();
}

// Loaded once per process; never unloaded.
absl::StatusOr<const SpmApi*> Spm() {
  static const absl::StatusOr<const SpmApi*>* api = new absl::StatusOr<const SpmApi*>(OpenShim());
  return *api;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("tokenizer: cannot open ", path, ": ",
                                            std::strerror(errno)));
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

absl::Status WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) {
    return absl::PermissionDeniedError(absl::StrCat("tokenizer: cannot write ", path,
                                                    "; check that the directory exists and is "
                                                    "writable"));
  }
  return absl::OkStatus();
}

// Trainer flags. Ids: 0 <unk>, 1 <s>, 2 </s>, then the user-defined symbols
// in order (3 <image>, 4 <pad>, then any fillers), then learned pieces.
std::string TrainerArgs(int vocab_size, int fillers) {
  std::vector<std::string> symbols = {"<image>", "<pad>"};
  for (int i = 0; i < fillers; ++i) symbols.push_back(absl::StrCat("<unused", i, ">"));
  return absl::StrCat(
      "--model_type=bpe --vocab_size=", vocab_size,
      " --character_coverage=1.0 --normalization_rule_name=identity"
      " --user_defined_symbols=", absl::StrJoin(symbols, ","),
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1"
      " --unk_piece=<unk> --bos_piece=<s> --eos_piece=</s>"
      " --num_threads=1 --input_sentence_size=0 --shuffle_input_sentence=false"
      " --hard_vocab_limit=false");
}

}  // namespace

struct Tokenizer::Impl {
  const SpmApi* api = nullptr;
  void* processor = nullptr;
  int image_id = -1, pad_id = -1, bos_id = -1, eos_id = -1, vocab_size = 0;
  ~Impl() {
    if (processor != nullptr) api->destroy(processor);
  }
};

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path) {
  ASSIGN_OR_RETURN(const SpmApi* api, Spm());
  ASSIGN_OR_RETURN(std::string bytes, ReadFile(model_path));
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  Impl& m = *tok->impl_;
  m.api = api;
  m.processor = api->create();
  std::string error;
  if (!api->load(m.processor, bytes, &error)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer: ", model_path,
                                                   " is not a SentencePiece model: ", error));
  }
  m.vocab_size = api->piece_size(m.processor);
  auto special = [&](const char* piece, int* id) -> absl::Status {
    *id = api->piece_to_id(m.processor, piece);
    if (*id < 0 || api->is_unknown(m.processor, *id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer: ", model_path, " has no \"", piece, "\" piece; the engine needs \"<image>\" "
          "and \"<pad>\" as user-defined symbols (models made by Tokenizer::Train have them; "
          "retrain with --user_defined_symbols=<image>,<pad>)"));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(special("<image>", &m.image_id));
  RETURN_IF_ERROR(special("<pad>", &m.pad_id));
  m.bos_id = api->bos_id(m.processor);
  m.eos_id = api->eos_id(m.processor);
  if (m.bos_id < 0 || m.eos_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer: ", model_path, " has no bos or eos piece (bos_id=", m.bos_id,
        ", eos_id=", m.eos_id, "); retrain with --bos_id and --eos_id set"));
  }
  return tok;
}

absl::Status Tokenizer::Train(const std::vector<std::string>& corpus_lines,
                              const std::string& model_prefix, int vocab_size, uint64_t seed) {
  ASSIGN_OR_RETURN(const SpmApi* api, Spm());
  if (corpus_lines.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer: no training text for ", model_prefix, ".model"));
  }
  uint32_t seed32 = static_cast<uint32_t>(seed ^ (seed >> 32));
  if (seed32 == 0xFFFFFFFFu) seed32 = 0x5eed;  // -1 would mean "use std::random_device"
  constexpr int kQuiet = 2;                    // sentencepiece: errors only
  // A small corpus may support fewer pieces than asked for; the model must
  // still have exactly vocab_size ids (the model's embedding is sized by the
  // config), so retrain with unused filler symbols making up the difference.
  std::string model, error;
  int fillers = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    model.clear();
    if (!api->train(corpus_lines, TrainerArgs(vocab_size, fillers), seed32, kQuiet, &model,
                    &error)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokenizer: training ", model_prefix, ".model (vocab ", vocab_size, ") failed: ", error));
    }
    void* proc = api->create();
    std::string load_error;
    const bool loaded = api->load(proc, model, &load_error);
    const int size = loaded ? api->piece_size(proc) : -1;
    api->destroy(proc);
    if (!loaded) return absl::InternalError("tokenizer: trained model does not load: " + load_error);
    if (size == vocab_size) break;
    if (size > vocab_size || attempt == 2) {
      return absl::InternalError(absl::StrCat("tokenizer: trained ", size, " pieces for ",
                                              model_prefix, ".model, wanted ", vocab_size));
    }
    fillers += vocab_size - size;
  }
  RETURN_IF_ERROR(WriteFile(model_prefix + ".model", model));
  // <prefix>.vocab: "piece<TAB>score" per id, like spm_train writes it.
  void* proc = api->create();
  std::string load_error;
  CHECK(api->load(proc, model, &load_error)) << load_error;
  std::ostringstream vocab;
  std::string piece;
  for (int id = 0; id < api->piece_size(proc); ++id) {
    api->id_to_piece(proc, id, &piece);
    vocab << piece << '\t' << api->score(proc, id) << '\n';
  }
  api->destroy(proc);
  return WriteFile(model_prefix + ".vocab", vocab.str());
}

std::vector<int32_t> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  impl_->api->encode(impl_->processor, text, &ids);
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  std::vector<int> kept;
  kept.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= m.vocab_size) continue;
    if (id == m.image_id || id == m.pad_id || id == m.bos_id || id == m.eos_id) continue;
    kept.push_back(id);
  }
  std::string text;
  m.api->decode(m.processor, kept, &text);
  return text;
}

int Tokenizer::vocab_size() const { return impl_->vocab_size; }
int Tokenizer::image_id() const { return impl_->image_id; }
int Tokenizer::pad_id() const { return impl_->pad_id; }
int Tokenizer::bos_id() const { return impl_->bos_id; }
int Tokenizer::eos_id() const { return impl_->eos_id; }

}  // namespace ut::data
