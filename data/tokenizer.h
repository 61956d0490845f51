// SentencePiece tokenizer with the project's reserved special tokens.
// Loads any SentencePiece .model (e.g. a LLaMA tokenizer); for the synthetic
// data it is trained from the corpus with the SentencePiece C++ trainer.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/base/status.h"

namespace ut::data {

class Tokenizer {
 public:
  // Special tokens reserved in models we train: "<image>", "<pad>", "<s>", "</s>".
  // For a foreign model without "<image>"/"<pad>", Load fails with a message
  // saying so (they must exist as user-defined symbols).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  // Trains a BPE model on `corpus_lines` and writes <model_prefix>.model (and
  // .vocab). BPE, not unigram: on small template corpora unigram splits
  // frequent words into fragments, BPE keeps them whole.
  static absl::Status Train(const std::vector<std::string>& corpus_lines,
                            const std::string& model_prefix, int vocab_size, uint64_t seed);
  ~Tokenizer();

  std::vector<int32_t> Encode(const std::string& text) const;  // no bos/eos
  std::string Decode(const std::vector<int32_t>& ids) const;    // skips special ids
  int vocab_size() const;
  int image_id() const;
  int pad_id() const;
  int bos_id() const;
  int eos_id() const;

 private:
  Tokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ut::data
