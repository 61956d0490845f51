// JSONL manifests: one sample per line (docs/data_format.md).
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "data/loader.h"
#include "data/manifest.h"

namespace ut::data {
namespace {

using nlohmann::json;
// Writing: keys keep insertion order, floats print as floats.
using OrderedFloatJson = nlohmann::basic_json<nlohmann::ordered_map, std::vector, std::string, bool,
                                              std::int64_t, std::uint64_t, float>;

// Builds "file:line: field F: what" errors.
struct Where {
  const std::string& path;
  int line;
  absl::Status Error(const std::string& field, const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": field \"", field, "\": ",
                                                   what));
  }
};

absl::Status CheckKeys(const json& object, const std::set<std::string>& allowed,
                       const std::string& prefix, const Where& where) {
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (!allowed.count(it.key())) {
      std::string list;
      for (const auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
      return where.Error(prefix + it.key(), "unknown field; allowed here: " + list);
    }
  }
  return absl::OkStatus();
}

absl::Status ParseSlice(const json& js, const std::string& field, const Where& where,
                        Slice* slice) {
  if (!js.is_object()) {
    return where.Error(field, "expected an object {\"text\": ...} or {\"image\": ...}");
  }
  RETURN_IF_ERROR(CheckKeys(js, {"text", "image", "teacher", "teacher_split", "prompt"},
                            field + ".", where));
  const bool has_text = js.contains("text"), has_image = js.contains("image");
  if (has_text == has_image) {
    return where.Error(field, "a slice needs exactly one of \"text\" or \"image\"");
  }
  if (has_text) {
    if (!js["text"].is_string()) return where.Error(field + ".text", "expected a string");
    slice->kind = Slice::Kind::kText;
    slice->text = js["text"].get<std::string>();
  } else {
    if (!js["image"].is_string() || js["image"].get<std::string>().empty()) {
      return where.Error(field + ".image",
                         "expected a non-empty path relative to the manifest's directory");
    }
    slice->kind = Slice::Kind::kImage;
    slice->image_path = js["image"].get<std::string>();
  }
  if (js.contains("prompt")) {
    if (!js["prompt"].is_boolean()) return where.Error(field + ".prompt", "expected true or false");
    slice->prompt = js["prompt"].get<bool>();
  }
  if (js.contains("teacher")) {
    const json& t = js["teacher"];
    if (!t.is_array()) return where.Error(field + ".teacher", "expected an array of numbers");
    for (size_t i = 0; i < t.size(); ++i) {
      if (!t[i].is_number()) {
        return where.Error(absl::StrCat(field, ".teacher[", i, "]"), "expected a number");
      }
      slice->teacher.push_back(t[i].get<float>());
    }
  }
  if (js.contains("teacher_split")) {
    const json& s = js["teacher_split"];
    if (!s.is_number_integer() || s.get<int64_t>() < 0 ||
        s.get<int64_t>() > static_cast<int64_t>(slice->teacher.size())) {
      return where.Error(field + ".teacher_split",
                         absl::StrCat("expected an integer in [0, ", slice->teacher.size(),
                                      "] (the length of the teacher's first part)"));
    }
    slice->teacher_split = s.get<int>();
  }
  return absl::OkStatus();
}

absl::Status ParseSample(const json& js, const Where& where, Sample* sample) {
  if (!js.is_object()) return where.Error("(line)", "expected one JSON object per line");
  RETURN_IF_ERROR(CheckKeys(js, {"id", "task", "slices", "negatives"}, "", where));
  if (!js.contains("id") || !js["id"].is_string() || js["id"].get<std::string>().empty()) {
    return where.Error("id", "missing or not a non-empty string");
  }
  sample->id = js["id"].get<std::string>();
  if (!js.contains("task") || !js["task"].is_string()) {
    return where.Error("task", "missing or not a string (e.g. \"caption\")");
  }
  sample->task = js["task"].get<std::string>();
  if (!js.contains("slices") || !js["slices"].is_array() || js["slices"].empty()) {
    return where.Error("slices", "missing or not a non-empty array of slices");
  }
  const json& slices = js["slices"];
  for (size_t i = 0; i < slices.size(); ++i) {
    Slice slice;
    RETURN_IF_ERROR(ParseSlice(slices[i], absl::StrCat("slices[", i, "]"), where, &slice));
    sample->slices.push_back(std::move(slice));
  }
  if (js.contains("negatives")) {
    const json& n = js["negatives"];
    if (!n.is_array()) return where.Error("negatives", "expected an array of strings");
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].is_string()) {
        return where.Error(absl::StrCat("negatives[", i, "]"), "expected a string");
      }
      sample->negatives.push_back(n[i].get<std::string>());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ReadManifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open manifest ", path, ": ",
                                            std::strerror(errno),
                                            " (see docs/data_format.md for the layout)"));
  }
  std::vector<Sample> samples;
  std::unordered_map<std::string, int> id_line;
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    const Where where{path, line_no};
    json js;
    try {
      js = json::parse(line);
    } catch (const json::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", line_no, ": not valid JSON (", e.what(),
          "); each line must hold one complete JSON object"));
    }
    Sample sample;
    RETURN_IF_ERROR(ParseSample(js, where, &sample));
    auto [it, inserted] = id_line.emplace(sample.id, line_no);
    if (!inserted) {
      return where.Error("id", absl::StrCat("\"", sample.id, "\" already used on line ",
                                            it->second, "; ids must be unique"));
    }
    samples.push_back(std::move(sample));
  }
  if (in.bad()) return absl::DataLossError(absl::StrCat("error reading manifest ", path));
  if (samples.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("manifest ", path, " has no samples"));
  }
  return samples;
}

std::string SampleToJsonLine(const Sample& sample) {
  OrderedFloatJson js;
  js["id"] = sample.id;
  js["task"] = sample.task;
  OrderedFloatJson slices = OrderedFloatJson::array();
  for (const Slice& s : sample.slices) {
    OrderedFloatJson slice;
    if (s.kind == Slice::Kind::kText) {
      slice["text"] = s.text;
    } else {
      slice["image"] = s.image_path;
    }
    if (s.prompt) slice["prompt"] = true;
    if (!s.teacher.empty()) {
      slice["teacher"] = s.teacher;
      slice["teacher_split"] = s.teacher_split;
    }
    slices.push_back(std::move(slice));
  }
  js["slices"] = std::move(slices);
  if (!sample.negatives.empty()) js["negatives"] = sample.negatives;
  return js.dump();
}

}  // namespace ut::data
