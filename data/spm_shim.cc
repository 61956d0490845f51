// The SentencePiece shim: a shared library that links libsentencepiece and
// exports one function table (spm_api.h explains why it exists). Only
// sentencepiece and standard headers may be included here.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <vector>

#include "data/spm_api.h"

// Exported by libsentencepiece but not declared in its public headers.
namespace sentencepiece::logging {
void SetMinLogLevel(int level);
}  // namespace sentencepiece::logging

namespace {

using sentencepiece::SentencePieceProcessor;

const SentencePieceProcessor* Proc(const void* p) {
  return static_cast<const SentencePieceProcessor*>(p);
}

// Feeds training sentences from a vector.
class VectorSentences : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentences(const std::vector<std::string>* lines) : lines_(lines) {}
  bool done() const override { return next_ >= lines_->size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return (*lines_)[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>* lines_;
  size_t next_ = 0;
};

void* Create() { return new SentencePieceProcessor(); }
void Destroy(void* p) { delete static_cast<SentencePieceProcessor*>(p); }

bool Load(void* p, const std::string& serialized, std::string* error) {
  const auto status = static_cast<SentencePieceProcessor*>(p)->LoadFromSerializedProto(serialized);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

void Encode(const void* p, const std::string& text, std::vector<int>* ids) {
  ids->clear();
  const auto status = Proc(p)->Encode(text, ids);
  if (!status.ok()) ids->clear();
}

void Decode(const void* p, const std::vector<int>& ids, std::string* text) {
  text->clear();
  const auto status = Proc(p)->Decode(ids, text);
  if (!status.ok()) text->clear();
}

int PieceSize(const void* p) { return Proc(p)->GetPieceSize(); }
int PieceToId(const void* p, const std::string& piece) { return Proc(p)->PieceToId(piece); }
void IdToPiece(const void* p, int id, std::string* piece) { *piece = Proc(p)->IdToPiece(id); }
float Score(const void* p, int id) { return Proc(p)->GetScore(id); }
bool IsUnknown(const void* p, int id) { return Proc(p)->IsUnknown(id); }
int UnkId(const void* p) { return Proc(p)->unk_id(); }
int BosId(const void* p) { return Proc(p)->bos_id(); }
int EosId(const void* p) { return Proc(p)->eos_id(); }

bool Train(const std::vector<std::string>& lines, const std::string& args, uint32_t seed,
           int min_log_level, std::string* serialized_model, std::string* error) {
  sentencepiece::logging::SetMinLogLevel(min_log_level);
  sentencepiece::SetRandomGeneratorSeed(seed);
  VectorSentences sentences(&lines);
  const auto status =
      sentencepiece::SentencePieceTrainer::Train(args, &sentences, serialized_model);
  if (!status.ok()) *error = status.ToString();
  return status.ok();
}

const ut::data::internal::SpmApi kApi = {
    ut::data::internal::kSpmApiVersion,
    Create, Destroy, Load, Encode, Decode, PieceSize, PieceToId, IdToPiece, Score, IsUnknown,
    UnkId, BosId, EosId, Train,
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const ut::data::internal::SpmApi* ut_spm_api() {
  return &kApi;
}
