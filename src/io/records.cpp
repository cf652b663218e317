#include "io/records.h"

#include "common/log.h"

namespace hra::io {

namespace {
constexpr size_t kListed = 5;
}

OnBadRecord parse_on_bad_record(const std::string& name) {
    if (name == "skip") return OnBadRecord::Skip;
    if (name == "fail") return OnBadRecord::Fail;
    throw Error("unknown bad-record policy '" + name + "' (expected skip or fail)");
}

const char* on_bad_record_name(OnBadRecord policy) { return policy == OnBadRecord::Skip ? "skip" : "fail"; }

void BadRecords::add(const Error& problem, long line) {
    const Error at = problem.located(file_, line > 0 ? line : problem.line());
    if (policy_ == OnBadRecord::Fail) throw at;
    ++count_;
    if (first_.size() < kListed) first_.push_back(at.what());
}

void BadRecords::report() const {
    if (count_ == 0) return;
    std::string msg = file_ + ": " + std::to_string(count_) + " bad record" + (count_ == 1 ? "" : "s") +
                      " skipped (--bad-records skip); ";
    for (size_t i = 0; i < first_.size(); ++i) msg += (i ? "; " : "") + first_[i];
    if (count_ > first_.size()) msg += "; ...";
    log_warning(msg);
}

void BadRecords::fail_empty(const std::string& message) const {
    throw Error(message + (first_.empty() ? std::string() : " (first problem: " + first_[0] + ")"), {file_});
}

}  // namespace hra::io
