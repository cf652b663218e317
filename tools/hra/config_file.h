// Config files for hra's subcommands: YAML (yaml-cpp) or JSON (a subset of
// YAML) whose keys are the long option names ("max-steps" or "max_steps") and
// whose values are scalars or lists. Options given on the command line win.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace hra::cli {

// Adds --config to a subcommand (for --help; the file is read by expand_config).
void add_config_option(CLI::App* sub);

// argv after the subcommand name: when it holds --config FILE, returns the
// arguments with the file's settings added for every option not given on the
// command line. hra::Error for a bad file or an unknown key.
std::vector<std::string> expand_config(CLI::App* sub, const std::vector<std::string>& args);

// The subcommand's long option nearest to `name` (edit distance at most a third of
// its length, at least 2), as " (did you mean --x?)"; "" when none is near.
std::string nearest_option_hint(const CLI::App* sub, const std::string& name);

}  // namespace hra::cli
