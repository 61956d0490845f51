// Loading, overriding and validating the run configuration (config.proto).
//
//   ASSIGN_OR_RETURN(Config c, LoadConfigFile("configs/tiny.textproto"));
//   RETURN_IF_ERROR(ApplyOverride(&c, "train.steps=100"));
//   RETURN_IF_ERROR(ValidateConfig(c));
#pragma once

#include <string>

#include "core/base/config.pb.h"
#include "core/base/status.h"

namespace ut {

using unified_train::Config;

// Parses a text-proto config. Errors name the file, line, column and field
// (e.g. "configs/x.textproto:3:5: Message type "unified_train.TrainConfig" has
// no field named "stepz"").
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Parses a config from text (`origin` names it in errors).
absl::StatusOr<Config> ParseConfigText(const std::string& text, const std::string& origin);

// Sets one field from "dotted.path=value", e.g. "model.llm.width=128" or
// "data.on_bad_image=SKIP". Errors name the path and what is wrong.
absl::Status ApplyOverride(Config* config, const std::string& assignment);

// Checks values and cross-field constraints (positive sizes, divisibility,
// ...). Errors name the field and what to change.
absl::Status ValidateConfig(const Config& config);

// The config as text proto (written next to checkpoints).
std::string ConfigToText(const Config& config);

}  // namespace ut
