// One rule for bad records in every line- or row-based input (training data,
// GLUE TSVs, prediction files, evaluation sets): the caller chooses to skip them
// with one counted warning, or to fail on the first with an error naming the
// file, the line and (when known) the key.
#pragma once

#include <string>
#include <vector>

#include "common/error.h"

namespace hra::io {

enum class OnBadRecord { Skip, Fail };
OnBadRecord parse_on_bad_record(const std::string& name);  // "skip" | "fail"
const char* on_bad_record_name(OnBadRecord policy);

class BadRecords {
public:
    BadRecords(std::string file, OnBadRecord policy) : file_(std::move(file)), policy_(policy) {}

    // A bad record at `line` (1-based; 0 when unknown). Fail: throws the error at
    // this file and line, keeping its key. Skip: counts it.
    void add(const Error& problem, long line);
    void add(const std::string& problem, long line, const std::string& key = "") { add(Error(problem, {"", key}), line); }

    size_t count() const { return count_; }
    OnBadRecord policy() const { return policy_; }
    // Skip: one warning when records were skipped ("FILE: N bad records skipped
    // (--bad-records skip); first: ..."), listing the first few.
    void report() const;
    // For a file that yielded nothing usable: the error, with the first problem when there was one.
    [[noreturn]] void fail_empty(const std::string& message) const;

private:
    std::string file_;
    OnBadRecord policy_;
    size_t count_ = 0;
    std::vector<std::string> first_;  // the first few problems, formatted
};

}  // namespace hra::io
