// The one way hra talks to the user on stderr: a levelled logger.
//
//   error    always printed ("hra: error: ...")
//   warning  always printed ("hra: warning: ..."), also under --quiet
//   info     progress and summaries (the default level); hidden by --quiet
//   debug    details; shown by --verbose
//
// Data (results, JSON, generated text) goes to stdout and never through here.
#pragma once

#include <string>

namespace hra {

enum class LogLevel { Error = 0, Warning = 1, Info = 2, Debug = 3 };

// Messages above `level` are dropped. Default: Info.
void set_log_level(LogLevel level);
LogLevel log_level();
bool log_enabled(LogLevel level);

// One line each (a newline is added). Warnings and errors get the "hra: warning: " /
// "hra: error: " prefix; info and debug lines are printed as given.
void log_error(const std::string& message);
void log_warning(const std::string& message);
void log_info(const std::string& message);
void log_debug(const std::string& message);
// A warning printed once per process for each distinct message.
void warn_once(const std::string& message);

// printf-style formatting into a std::string (for the log calls above).
std::string strprintf(const char* format, ...) __attribute__((format(printf, 1, 2)));

// Progress on a terminal: `text` replaces the current line (no newline), when
// info is enabled and stderr is a terminal. clear_progress() erases it.
bool progress_enabled();
void show_progress(const std::string& text);
void clear_progress();

// Makes output quieter for a scope (never louder): a demo's inner training runs
// print nothing but warnings. The level in force before is restored after.
class ScopedLogLevel {
public:
    explicit ScopedLogLevel(LogLevel level);
    ~ScopedLogLevel();
    ScopedLogLevel(const ScopedLogLevel&) = delete;
    ScopedLogLevel& operator=(const ScopedLogLevel&) = delete;

private:
    LogLevel previous_;
};

}  // namespace hra
