// Config files for hra's subcommands: YAML (yaml-cpp) or JSON (a subset of
// YAML), keys are the long option names ("max-steps" or "max_steps"), values
// scalars or lists. Flags on the command line override the file.
#pragma once

#include <memory>

#include <CLI/CLI.hpp>

namespace hra::cli {

std::shared_ptr<CLI::Config> yaml_config_formatter();

}  // namespace hra::cli
