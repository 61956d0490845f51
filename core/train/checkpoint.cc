#include "core/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/tensor/safetensors.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace ut::train {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kFormat[] = "unified_train checkpoint v1";
constexpr char kModelFile[] = "model.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "state.json";
constexpr char kCompleteFile[] = "COMPLETE";

// fsync a file or directory by path.
absl::Status Sync(const std::string& path, bool is_dir) {
  int fd = ::open(path.c_str(), is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", path, " to fsync: ",
                                            std::strerror(errno)));
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("fsync of ", path, " failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) {
    return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  out.close();
  return Sync(path, /*is_dir=*/false);
}

// Parses "step_000100" (and nothing else) into 100.
bool ParseCheckpointName(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.rfind("step_", 0) != 0) return false;
  const std::string digits = name.substr(5);
  if (!std::all_of(digits.begin(), digits.end(), ::isdigit) || digits.size() > 15) return false;
  *step = std::stoll(digits);
  return true;
}

std::vector<NamedTensor> ModelTensors(const ModelBuffers& b) {
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : *b.params) {
    out.push_back({p.name, Tensor::Wrap(b.weights + p.offset, p.shape)});
  }
  return out;
}

std::vector<NamedTensor> OptimizerTensors(const ModelBuffers& b) {
  std::vector<NamedTensor> out;
  for (const ParamInfo& p : *b.params) {
    out.push_back({p.name + ".exp_avg", Tensor::Wrap(b.exp_avg + p.offset, p.shape)});
    out.push_back({p.name + ".exp_avg_sq", Tensor::Wrap(b.exp_avg_sq + p.offset, p.shape)});
  }
  return out;
}

std::string StateJson(const TrainState& s) {
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["step"] = s.step;
  j["data_position"] = {{"epoch", s.data_epoch}, {"index", s.data_index}};
  j["rng_state"] = s.rng_state;
  j["tokens_seen"] = s.tokens_seen;
  j["param_count"] = s.param_count;
  j["config"] = s.config_text;
  return j.dump(2) + "\n";
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

constexpr char kWhatToDo[] =
    "this checkpoint cannot be resumed: delete its directory to resume from an older one, or "
    "start a new --out_dir";

absl::Status BadFile(const std::string& path, const std::string& what) {
  return absl::DataLossError(absl::StrCat("checkpoint file ", path, ": ", what,
                                          " (corrupt, or written for another model); ",
                                          kWhatToDo));
}

// ReadSafetensors with the checkpoint's advice appended to its errors.
absl::StatusOr<SafetensorsFile> ReadCheckpointTensors(const std::string& path) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  if (!file.ok()) {
    return absl::Status(file.status().code(),
                        absl::StrCat(file.status().message(), "; ", kWhatToDo));
  }
  return file;
}

// Checks that `file` holds exactly `expected` (name -> shape) as f32.
absl::Status CheckTensors(const std::string& path, const SafetensorsFile& file,
                          const std::vector<std::pair<std::string, std::vector<int64_t>>>& expected) {
  for (const auto& [name, shape] : expected) {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) return BadFile(path, absl::StrCat("missing tensor '", name, "'"));
    if (it->second.dtype() != DType::kF32) {
      return BadFile(path, absl::StrCat("tensor '", name, "' is ", DTypeName(it->second.dtype()),
                                        ", expected f32"));
    }
    if (it->second.shape() != shape) {
      return BadFile(path, absl::StrCat("tensor '", name, "' has shape ",
                                        ShapeText(it->second.shape()), ", the model expects ",
                                        ShapeText(shape)));
    }
  }
  if (file.tensors.size() != expected.size()) {
    for (const auto& [name, tensor] : file.tensors) {
      bool known = std::any_of(expected.begin(), expected.end(),
                               [&](const auto& e) { return e.first == name; });
      if (!known) return BadFile(path, absl::StrCat("unexpected tensor '", name, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainState> ReadState(const std::string& path) {
  std::ifstream in(path);
  if (!in) return BadFile(path, "cannot be opened");
  std::stringstream ss;
  ss << in.rdbuf();
  Json j = Json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadFile(path, "is not valid JSON (truncated?)");
  TrainState s;
  try {
    if (j.at("format").get<std::string>() != kFormat) {
      return BadFile(path, absl::StrCat("unknown format '", j.at("format").get<std::string>(),
                                        "', expected '", kFormat, "'"));
    }
    s.step = j.at("step").get<int64_t>();
    s.data_epoch = j.at("data_position").at("epoch").get<int64_t>();
    s.data_index = j.at("data_position").at("index").get<int64_t>();
    s.rng_state = j.at("rng_state").get<std::array<uint64_t, 4>>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    s.param_count = j.at("param_count").get<int64_t>();
    s.config_text = j.at("config").get<std::string>();
  } catch (const Json::exception& e) {
    return BadFile(path, absl::StrCat("missing or mistyped field: ", e.what()));
  }
  if (s.step < 0 || s.data_epoch < 0 || s.data_index < 0) {
    return BadFile(path, "negative step or data position");
  }
  return s;
}

}  // namespace

std::string CheckpointName(int64_t step) { return absl::StrFormat("step_%06d", step); }

std::vector<std::string> ListCheckpoints(const std::string& out_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    int64_t step;
    if (!entry.is_directory() || !ParseCheckpointName(entry.path().filename().string(), &step)) {
      continue;
    }
    if (!fs::exists(entry.path() / kCompleteFile)) {
      LOG(WARNING) << "ignoring incomplete checkpoint " << entry.path().string()
                   << " (no COMPLETE marker; the run stopped while writing it)";
      continue;
    }
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

absl::StatusOr<std::string> LatestCheckpoint(const std::string& out_dir) {
  std::vector<std::string> all = ListCheckpoints(out_dir);
  if (all.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no complete checkpoint in ", (fs::path(out_dir) / "checkpoints").string(),
        "; drop --resume to start a new run, or point --out_dir at the run to resume"));
  }
  return all.back();
}

absl::StatusOr<std::string> SaveCheckpoint(const std::string& out_dir, const ModelBuffers& b,
                                           const TrainState& state, int keep) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  const fs::path final_dir = root / CheckpointName(state.step);
  const fs::path tmp_dir = root / (CheckpointName(state.step) + ".tmp");
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", root.string(), ": ",
                                                    ec.message()));
  }
  fs::remove_all(tmp_dir, ec);  // leftover from a crash
  fs::create_directory(tmp_dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp_dir.string(), ": ",
                                                    ec.message()));
  }
  const std::string model_path = (tmp_dir / kModelFile).string();
  const std::string optim_path = (tmp_dir / kOptimizerFile).string();
  const std::map<std::string, std::string> meta = {{"format", "pt"},
                                                   {"step", std::to_string(state.step)}};
  RETURN_IF_ERROR(WriteSafetensors(model_path, ModelTensors(b), meta));
  RETURN_IF_ERROR(Sync(model_path, false));
  RETURN_IF_ERROR(WriteSafetensors(optim_path, OptimizerTensors(b), meta));
  RETURN_IF_ERROR(Sync(optim_path, false));
  RETURN_IF_ERROR(WriteTextFile((tmp_dir / kStateFile).string(), StateJson(state)));
  RETURN_IF_ERROR(Sync(tmp_dir.string(), true));

  // An incomplete directory of the same step (a crash after rename) is replaced.
  fs::remove_all(final_dir, ec);
  fs::rename(tmp_dir, final_dir, ec);
  if (ec) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp_dir.string(), " to ",
                                            final_dir.string(), ": ", ec.message()));
  }
  RETURN_IF_ERROR(Sync(root.string(), true));
  RETURN_IF_ERROR(WriteTextFile((final_dir / kCompleteFile).string(), "complete\n"));
  RETURN_IF_ERROR(Sync(final_dir.string(), true));

  // Retention: the newest `keep` complete checkpoints stay; stale .tmp dirs go.
  std::vector<std::string> complete = ListCheckpoints(out_dir);
  if (keep > 0 && static_cast<int>(complete.size()) > keep) {
    for (size_t i = 0; i + keep < complete.size(); ++i) fs::remove_all(complete[i], ec);
  }
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.substr(name.size() - 4) == ".tmp") fs::remove_all(entry.path(), ec);
  }
  return final_dir.string();
}

absl::Status LoadCheckpoint(const std::string& dir, const ModelBuffers& b, TrainState* state) {
  const fs::path root(dir);
  if (!fs::exists(root / kCompleteFile)) {
    return BadFile((root / kCompleteFile).string(), "is missing (checkpoint was not finished)");
  }
  const std::string state_path = (root / kStateFile).string();
  ASSIGN_OR_RETURN(TrainState loaded, ReadState(state_path));
  if (loaded.param_count != b.total) {
    return BadFile(state_path, absl::StrCat("param_count is ", loaded.param_count,
                                            " but the configured model has ", b.total,
                                            " parameters (different model config?)"));
  }
  const std::string model_path = (root / kModelFile).string();
  ASSIGN_OR_RETURN(SafetensorsFile model, ReadCheckpointTensors(model_path));
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  for (const ParamInfo& p : *b.params) expected.emplace_back(p.name, p.shape);
  RETURN_IF_ERROR(CheckTensors(model_path, model, expected));

  const std::string optim_path = (root / kOptimizerFile).string();
  ASSIGN_OR_RETURN(SafetensorsFile optim, ReadCheckpointTensors(optim_path));
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected_optim;
  for (const ParamInfo& p : *b.params) {
    expected_optim.emplace_back(p.name + ".exp_avg", p.shape);
    expected_optim.emplace_back(p.name + ".exp_avg_sq", p.shape);
  }
  RETURN_IF_ERROR(CheckTensors(optim_path, optim, expected_optim));

  // Everything is valid: copy.
  for (const ParamInfo& p : *b.params) {
    const size_t bytes = p.numel * sizeof(float);
    std::memcpy(b.weights + p.offset, model.tensors.at(p.name).raw(), bytes);
    std::memcpy(b.exp_avg + p.offset, optim.tensors.at(p.name + ".exp_avg").raw(), bytes);
    std::memcpy(b.exp_avg_sq + p.offset, optim.tensors.at(p.name + ".exp_avg_sq").raw(), bytes);
  }
  *state = std::move(loaded);
  return absl::OkStatus();
}

}  // namespace ut::train
