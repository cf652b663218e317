#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <set>

namespace hra {

namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};
std::mutex g_mu;
bool g_progress_shown = false;  // guarded by g_mu

// Writes one line, first erasing a progress line left on the terminal.
void emit(const std::string& line) {
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_progress_shown) {
        std::fputs("\r\033[K", stderr);
        g_progress_shown = false;
    }
    std::fputs(line.c_str(), stderr);
    std::fputc('\n', stderr);
    std::fflush(stderr);
}

}  // namespace

void set_log_level(LogLevel level) { g_level = static_cast<int>(level); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }
bool log_enabled(LogLevel level) { return static_cast<int>(level) <= g_level.load(); }

void log_error(const std::string& message) { emit("hra: error: " + message); }

void log_warning(const std::string& message) {
    if (log_enabled(LogLevel::Warning)) emit("hra: warning: " + message);
}

void log_info(const std::string& message) {
    if (log_enabled(LogLevel::Info)) emit(message);
}

void log_debug(const std::string& message) {
    if (log_enabled(LogLevel::Debug)) emit(message);
}

void warn_once(const std::string& message) {
    static std::mutex mu;
    static std::set<std::string> seen;
    {
        std::lock_guard<std::mutex> lock(mu);
        if (!seen.insert(message).second) return;
    }
    log_warning(message);
}

std::string strprintf(const char* format, ...) {
    va_list args;
    va_start(args, format);
    va_list copy;
    va_copy(copy, args);
    const int n = std::vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
    if (n > 0) std::vsnprintf(&out[0], out.size() + 1, format, args);
    va_end(args);
    return out;
}

bool progress_enabled() { return log_enabled(LogLevel::Info) && isatty(STDERR_FILENO); }

void show_progress(const std::string& text) {
    if (!progress_enabled()) return;
    std::lock_guard<std::mutex> lock(g_mu);
    std::fputs("\r\033[K", stderr);
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
    g_progress_shown = true;
}

void clear_progress() {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_progress_shown) return;
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    g_progress_shown = false;
}

ScopedLogLevel::ScopedLogLevel(LogLevel level) : previous_(log_level()) {
    if (static_cast<int>(level) < static_cast<int>(previous_)) set_log_level(level);
}

ScopedLogLevel::~ScopedLogLevel() { set_log_level(previous_); }

}  // namespace hra
