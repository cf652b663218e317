// Line- and row-based inputs: JSONL/JSON training data in each format (the first byte picks
// one), GLUE TSVs (SST-2, MNLI, STS-B, CoLA), both as skip-bad-records and fail-on-first.
#include "data/dataset.h"
#include "eval/glue.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const uint8_t pick = data[0];
    const auto& path = hra::fuzz::input_file(data + 1, size - 1, ".txt");
    static const char* const formats[] = {"auto", "metamath", "gsm8k", "alpaca", "text", "chat"};
    hra::DataOptions o;
    o.format = formats[pick % 6];
    o.on_bad_record = (pick & 0x40) ? hra::io::OnBadRecord::Fail : hra::io::OnBadRecord::Skip;
    hra::fuzz::expect_named_errors([&] { (void)hra::read_records(path, o); });
    static const char* const tasks[] = {"sst2", "mnli", "stsb", "cola"};
    hra::fuzz::expect_named_errors([&] { (void)hra::glue::read_tsv(hra::glue::task(tasks[pick % 4]), path, o.on_bad_record); });
    return 0;
}
