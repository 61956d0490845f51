#include "core/base/config.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace ut {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string origin) : origin_(std::move(origin)) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) {
      first_ = absl::StrCat(origin_, ":", line + 1, ":", column + 1, ": ", message);
    }
  }
  void AddWarning(int, int, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string origin_;
  std::string first_;
};

absl::Status Invalid(const std::string& field, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("config field '", field, "': ", what));
}

}  // namespace

absl::StatusOr<Config> ParseConfigText(const std::string& text, const std::string& origin) {
  Config config;
  google::protobuf::TextFormat::Parser parser;
  Collector collector(origin);
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, &config)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid config: ", absl::StripSuffix(collector.first(), "."),
        ". Every field is documented in core/base/config.proto."));
  }
  return config;
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "cannot open config file '", path,
        "': check the path (configs/tiny.textproto and configs/small.textproto ship with the repo)"));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ParseConfigText(ss.str(), path);
}

absl::Status ApplyOverride(Config* config, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "override '", assignment, "' is not of the form path.to.field=value (e.g. train.steps=100)"));
  }
  const std::string path = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  std::vector<std::string> parts = absl::StrSplit(path, '.');
  Message* msg = config;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    const FieldDescriptor* f = msg->GetDescriptor()->FindFieldByName(parts[i]);
    if (f == nullptr || f->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "override '", assignment, "': '", parts[i], "' is not a config section of ",
          msg->GetDescriptor()->full_name(), "; see core/base/config.proto"));
    }
    msg = msg->GetReflection()->MutableMessage(msg, f);
  }
  // Reuse the text-format parser for the scalar so enums, bools and numbers
  // parse exactly as in config files.
  const FieldDescriptor* leaf = msg->GetDescriptor()->FindFieldByName(parts.back());
  if (leaf == nullptr || leaf->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
    return absl::InvalidArgumentError(absl::StrCat(
        "override '", assignment, "': ", msg->GetDescriptor()->full_name(),
        " has no scalar field '", parts.back(), "'; see core/base/config.proto"));
  }
  std::string text = leaf->cpp_type() == FieldDescriptor::CPPTYPE_STRING
                         ? absl::StrCat(leaf->name(), ": \"", value, "\"")
                         : absl::StrCat(leaf->name(), ": ", value);
  google::protobuf::TextFormat::Parser parser;
  parser.AllowPartialMessage(true);
  Collector collector("--" + path);
  parser.RecordErrorsTo(&collector);
  std::unique_ptr<Message> tmp(msg->New());
  if (!parser.ParseFromString(text, tmp.get())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "override '", assignment, "': cannot parse value '", value, "' for ",
        leaf->full_name(), " (", leaf->type_name(), ")"));
  }
  msg->MergeFrom(*tmp);
  return absl::OkStatus();
}

absl::Status ValidateConfig(const Config& c) {
  const auto& v = c.model().vision();
  const auto& l = c.model().llm();
  auto positive = [](const std::string& name, double x) -> absl::Status {
    if (!(x > 0)) return Invalid(name, absl::StrCat("must be > 0, got ", x));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("model.vision.image_size", v.image_size()));
  RETURN_IF_ERROR(positive("model.vision.patch_size", v.patch_size()));
  RETURN_IF_ERROR(positive("model.vision.width", v.width()));
  RETURN_IF_ERROR(positive("model.vision.layers", v.layers()));
  RETURN_IF_ERROR(positive("model.vision.heads", v.heads()));
  RETURN_IF_ERROR(positive("model.vision.mlp", v.mlp()));
  if (!(v.pixel_std() > 0) || !std::isfinite(v.pixel_std())) {
    return Invalid("model.vision.pixel_std",
                   absl::StrCat("must be a finite number > 0 (pixels are divided by it), got ",
                                v.pixel_std(), "; use the training images' pixel std, or 1 for raw"));
  }
  if (!std::isfinite(v.pixel_mean())) {
    return Invalid("model.vision.pixel_mean", absl::StrCat("must be finite, got ", v.pixel_mean()));
  }
  RETURN_IF_ERROR(positive("model.llm.width", l.width()));
  RETURN_IF_ERROR(positive("model.llm.layers", l.layers()));
  RETURN_IF_ERROR(positive("model.llm.heads", l.heads()));
  RETURN_IF_ERROR(positive("model.llm.kv_heads", l.kv_heads()));
  RETURN_IF_ERROR(positive("model.llm.ffn", l.ffn()));
  RETURN_IF_ERROR(positive("model.llm.vocab_size", l.vocab_size()));
  RETURN_IF_ERROR(positive("data.seq_len", c.data().seq_len()));
  RETURN_IF_ERROR(positive("data.micro_batch_size", c.data().micro_batch_size()));
  RETURN_IF_ERROR(positive("train.steps", c.train().steps()));
  RETURN_IF_ERROR(positive("train.grad_accum", c.train().grad_accum()));
  RETURN_IF_ERROR(positive("train.log_every", c.train().log_every()));
  RETURN_IF_ERROR(positive("optim.lr", c.optim().lr()));
  if (v.image_size() % v.patch_size() != 0) {
    return Invalid("model.vision.patch_size",
                   absl::StrCat("image_size ", v.image_size(), " is not a multiple of patch_size ",
                                v.patch_size()));
  }
  if (v.width() % v.heads() != 0) {
    return Invalid("model.vision.heads", absl::StrCat("width ", v.width(),
                                                      " is not divisible by heads ", v.heads()));
  }
  if (l.width() % l.heads() != 0 || (l.width() / l.heads()) % 2 != 0) {
    return Invalid("model.llm.heads",
                   absl::StrCat("width/heads must be an even integer (RoPE), got width ",
                                l.width(), ", heads ", l.heads()));
  }
  if (l.heads() % l.kv_heads() != 0) {
    return Invalid("model.llm.kv_heads", absl::StrCat("heads ", l.heads(),
                                                      " is not divisible by kv_heads ",
                                                      l.kv_heads()));
  }
  const int visual_tokens = (v.image_size() / v.patch_size()) * (v.image_size() / v.patch_size());
  if (c.data().seq_len() <= visual_tokens) {
    return Invalid("data.seq_len", absl::StrCat("must exceed the ", visual_tokens,
                                                " visual tokens of one image"));
  }
  if (c.optim().min_lr() < 0 || c.optim().min_lr() > c.optim().lr()) {
    return Invalid("optim.min_lr", "must be in [0, optim.lr]");
  }
  if (c.optim().beta1() < 0 || c.optim().beta1() >= 1 || c.optim().beta2() < 0 ||
      c.optim().beta2() >= 1) {
    return Invalid("optim.beta1/beta2", "must be in [0, 1)");
  }
  if (c.optim().warmup_steps() < 0) return Invalid("optim.warmup_steps", "must be >= 0");
  if (c.optim().grad_clip() < 0) return Invalid("optim.grad_clip", "must be >= 0 (0 disables)");
  if (c.train().ckpt_every() < 0) return Invalid("train.ckpt_every", "must be >= 0");
  if (c.train().out_dir().empty()) return Invalid("train.out_dir", "must not be empty");
  if (c.data().data_dir().empty()) return Invalid("data.data_dir", "must not be empty");
  return absl::OkStatus();
}

std::string ConfigToText(const Config& config) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(config, &out);
  return out;
}

}  // namespace ut
