// GLUE: TSV readers on the committed samples (STS-B, QNLI, WNLI) and on small
// synthetic files in the other tasks' layouts, and the metrics against values
// worked out by hand (shown next to each case).
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "eval/glue.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace {

void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }


}  // namespace

TEST(GlueReader, CommittedSamples) {
    auto stsb = glue::task("glue-stsb");
    EXPECT_TRUE(stsb.regression());
    auto dev = glue::read_tsv(stsb, glue::dev_path(stsb, test::data_file("glue")));
    ASSERT_EQ(dev.size(), 200u);
    EXPECT_EQ(dev[0].a, "A man with a hard hat is dancing.");
    EXPECT_EQ(dev[0].b, "A man wearing a hard hat is dancing.");
    EXPECT_EQ(dev[0].label, 5.0);
    EXPECT_EQ(dev[1].label, 4.75);
    EXPECT_EQ(dev[1].line, 3);

    auto qnli = glue::task("qnli");
    auto q = glue::read_tsv(qnli, glue::dev_path(qnli, test::data_file("glue")));
    ASSERT_EQ(q.size(), 200u);
    EXPECT_EQ(q[0].a, "What came into force after the new constitution was herald?");
    EXPECT_EQ(q[0].label, 0);  // entailment
    EXPECT_EQ(q[1].label, 1);  // not_entailment

    // WNLI dev: 71 rows, 40 of label 0 and 31 of label 1 (the data README's counts).
    auto wnli = glue::task("wnli");
    auto w = glue::read_tsv(wnli, glue::dev_path(wnli, test::data_file("glue")));
    ASSERT_EQ(w.size(), 71u);
    int ones = 0;
    for (const auto& e : w) ones += e.label == 1;
    EXPECT_EQ(ones, 31);
}

TEST(GlueReader, OtherLayoutsAndErrors) {
    test::TempDir dir;
    // CoLA: no header, label in column 2, sentence in column 4.
    write(dir / "cola.tsv", "gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank the pub.\n");
    auto cola = glue::read_tsv(glue::task("cola"), dir / "cola.tsv");
    ASSERT_EQ(cola.size(), 2u);
    EXPECT_EQ(cola[1].a, "They drank the pub.");
    EXPECT_EQ(cola[1].label, 0);
    // MRPC: a UTF-8 BOM before the header.
    write(dir / "mrpc.tsv", "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA b .\tB a .\n");
    auto mrpc = glue::read_tsv(glue::task("mrpc"), dir / "mrpc.tsv");
    ASSERT_EQ(mrpc.size(), 1u);
    EXPECT_EQ(mrpc[0].b, "B a .");
    EXPECT_EQ(mrpc[0].label, 1);
    // MNLI: names in HF order (entailment 0, neutral 1, contradiction 2), gold_label last.
    write(dir / "mnli.tsv",
          "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
          "0\t1\t1n\tfic\tx\tx\tx\tx\tP one\tH one\tneutral\tneutral\n"
          "1\t2\t2c\tfic\tx\tx\tx\tx\tP two\tH two\tcontradiction\tcontradiction\n");
    auto mnli = glue::read_tsv(glue::task("mnli-mm"), dir / "mnli.tsv");
    EXPECT_EQ(mnli[0].label, 1);
    EXPECT_EQ(mnli[1].label, 2);
    EXPECT_EQ(mnli[1].a, "P two");
    EXPECT_EQ(glue::task("mnli-mm").dev_file, "dev_mismatched.tsv");

    write(dir / "bad.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n");
    auto msg = error_of([&] { glue::read_tsv(glue::task("rte"), dir / "bad.tsv"); });
    EXPECT_NE(msg.find("bad.tsv:3"), std::string::npos) << msg;
    write(dir / "bad.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n");
    msg = error_of([&] { glue::read_tsv(glue::task("rte"), dir / "bad.tsv"); });
    EXPECT_NE(msg.find("unknown label 'maybe'"), std::string::npos) << msg;
    // Chosen by the caller: the same rows skipped, with one counted warning.
    write(dir / "bad.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n2\tc\td\tmaybe\n");
    testing::internal::CaptureStderr();
    auto kept = glue::read_tsv(glue::task("rte"), dir / "bad.tsv", io::OnBadRecord::Skip);
    const std::string warned = testing::internal::GetCapturedStderr();
    ASSERT_EQ(kept.size(), 1u);
    EXPECT_EQ(kept[0].line, 2);
    EXPECT_NE(warned.find("2 bad records skipped"), std::string::npos) << warned;
    EXPECT_NE(warned.find("bad.tsv:3: row has 3 fields"), std::string::npos) << warned;
    EXPECT_NE(warned.find("bad.tsv:4: unknown label 'maybe'"), std::string::npos) << warned;
    write(dir / "empty.tsv", "index\tsentence1\tsentence2\tlabel\n");
    msg = error_of([&] { glue::read_tsv(glue::task("rte"), dir / "empty.tsv"); });
    EXPECT_NE(msg.find("no examples"), std::string::npos) << msg;
    EXPECT_NE(error_of([] { glue::task("glue-foo"); }).find("unknown GLUE task"), std::string::npos);
}

TEST(GlueMetrics, HandComputedCases) {
    // pred 1 1 0 0 1 / gold 1 0 0 1 1: tp 2, fp 1, fn 1, tn 1.
    std::vector<int64_t> p = {1, 1, 0, 0, 1}, g = {1, 0, 0, 1, 1};
    EXPECT_DOUBLE_EQ(glue::accuracy(p, g), 0.6);
    EXPECT_DOUBLE_EQ(glue::f1_binary(p, g), 2.0 / 3.0);  // 2tp / (2tp + fp + fn) = 4/6
    EXPECT_DOUBLE_EQ(glue::matthews(p, g), 1.0 / 6.0);   // (2*1 - 1*1) / sqrt(3*3*2*2)
    // No positives anywhere: F1 0 (sklearn's zero_division), MCC 0 (zero denominator).
    EXPECT_EQ(glue::f1_binary({0, 0}, {0, 0}), 0.0);
    EXPECT_EQ(glue::matthews({0, 0}, {0, 1}), 0.0);
    // Pearson of x = 1 2 3 4, y = 2 4 5 9: sxy 11, sxx 5, syy 26 -> 11 / sqrt(130).
    EXPECT_NEAR(*glue::pearson({1, 2, 3, 4}, {2, 4, 5, 9}), 11 / std::sqrt(130.0), 1e-15);
    // Spearman with a tie: ranks 1 2.5 2.5 4 vs 1 3 2 4 -> 4.5 / sqrt(4.5 * 5).
    EXPECT_EQ(glue::average_ranks({1, 2, 2, 3}), (std::vector<double>{1, 2.5, 2.5, 4}));
    EXPECT_NEAR(*glue::spearman({1, 2, 2, 3}, {1, 3, 2, 4}), 4.5 / std::sqrt(22.5), 1e-15);
    EXPECT_FALSE(glue::pearson({1, 1, 1}, {1, 2, 3}).has_value());
    auto j = glue::metrics(glue::task("stsb"), {3, 3, 3}, {1, 2, 3});
    EXPECT_TRUE(j["pearson"].is_null());
    EXPECT_TRUE(j["corr_mean"].is_null());
    j = glue::metrics(glue::task("stsb"), {1, 2, 3, 4}, {2, 4, 5, 9});
    EXPECT_NEAR(j["corr_mean"].get<double>(), (11 / std::sqrt(130.0) + 1.0) / 2, 1e-15);
    j = glue::metrics(glue::task("cola"), {1, 1, 0, 0, 1}, {1, 0, 0, 1, 1});
    EXPECT_NEAR(j["mcc"].get<double>(), 1.0 / 6.0, 1e-15);
    EXPECT_FALSE(j.contains("f1"));
}

TEST(GlueMetrics, EvalCommandScoresPredictions) {
    test::TempDir dir;
    write(dir / "p.jsonl",
          "{\"prediction\": 1, \"label\": 1}\n{\"prediction\": \"equivalent\", \"label\": 0}\n"
          "{\"prediction\": 0, \"label\": \"not_equivalent\"}\n{\"prediction\": 0, \"label\": 1}\n"
          "{\"prediction\": 1, \"label\": 1}\n");
    auto r = test::run_hra("-q eval --task glue-mrpc --predictions " + (dir / "p.jsonl"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_DOUBLE_EQ(j["accuracy"].get<double>(), 0.6);
    EXPECT_DOUBLE_EQ(j["f1"].get<double>(), 2.0 / 3.0);
    write(dir / "bad.jsonl", "{\"prediction\": 3, \"label\": 1}\n");
    r = test::run_hra("-q eval --task glue-mrpc --predictions " + (dir / "bad.jsonl"), dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("bad.jsonl:1"), std::string::npos) << r.err;
    // Skipped instead, and counted: one good record left of two.
    write(dir / "bad.jsonl", "{\"prediction\": 3, \"label\": 1}\n{\"prediction\": 1, \"label\": 1}\n");
    r = test::run_hra("-q eval --task glue-mrpc --bad-records skip --predictions " + (dir / "bad.jsonl"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["skipped"], 1);
    EXPECT_EQ(j["n"], 1);
    EXPECT_NE(r.err.find("bad.jsonl:1: class id 3 is out of range"), std::string::npos) << r.err;
}
