// Supervised fine-tuning data: JSON / JSONL records in the common formats,
// rendered into prompts and responses, tokenized with the prompt masked,
// split, shuffled by seed and batched.
//
// Formats (auto-detected from the fields, or named):
//   metamath  {query, response}        prompt template + response
//   gsm8k     {question, answer}       answer's <<calc>> notes removed and its
//                                      "#### N" written "The answer is: N"
//   alpaca    {instruction, input?, output}
//   text      {text}                   loss on every token
//   chat      {messages: [{role, content}]}, rendered with chat_template
//             llama2 | llama3 | chatml, loss on the assistant turns
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "io/records.h"
#include "text/tokenizer.h"

namespace hra {

// The seed's (and Alpaca's / MetaMathQA's) prompt, with {query} replaced.
inline constexpr const char* kDefaultPromptTemplate =
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{query}\n\n### Response:";
inline constexpr const char* kAlpacaInputTemplate =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{query}\n\n### Input:\n{input}\n\n### Response:";

struct DataOptions {
    std::string format = "auto";  // auto, metamath, gsm8k, alpaca, text, chat
    // Field names: a format's own names are used when these are empty.
    std::string prompt_field, response_field, input_field, text_field, messages_field;
    std::string prompt_template = kDefaultPromptTemplate;
    std::string chat_template = "chatml";  // llama2, llama3, chatml
    bool train_on_prompt = false;          // false: loss on response tokens only
    bool add_eos = true;                   // append EOS after the response
    int64_t max_length = 512;              // tokens, longer examples truncated
    bool packing = false;                  // concatenate examples into max_length blocks
    std::optional<int64_t> limit;          // use the first N records
    io::OnBadRecord on_bad_record = io::OnBadRecord::Skip;  // a bad record: skip (counted warning) or fail
};

// One rendered record: segments of text, some of them targets (trained on).
struct Rendered {
    struct Segment {
        std::string text;
        bool target = false;
        bool special = false;  // the text names one special token (e.g. "<|im_end|>")
    };
    std::vector<Segment> segments;
    int64_t line = 0;  // 1-based line (JSONL) or record index (JSON array)
};

struct Example {
    std::vector<int64_t> input_ids;
    std::vector<int64_t> labels;  // -100 where no loss
};

// Reads records; a bad one is skipped (one counted warning) or an error naming
// file and line, as options.on_bad_record says; hra::Error when the file is
// missing, empty or has no usable record.
std::vector<Rendered> read_records(const std::string& path, const DataOptions& options);

// Tokenizes (prompt masked unless train_on_prompt; BOS added as the tokenizer does).
std::vector<Example> tokenize_records(const std::vector<Rendered>& records, const Tokenizer& tokenizer,
                                      const DataOptions& options, const std::string& source);

// Concatenated examples cut into blocks of max_length (EOS between examples).
std::vector<Example> pack_examples(const std::vector<Example>& examples, int64_t max_length);

// Splits off a validation set: `fraction` in (0, 1) of the examples, or an
// absolute count when >= 1; shuffled by `seed` first.
std::pair<std::vector<Example>, std::vector<Example>> split_validation(std::vector<Example> examples, double fraction,
                                                                       uint64_t seed);

// A deterministic permutation of 0..n-1 for (seed, epoch).
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle);

// Renders a GSM8K answer in MetaMathQA style: "<<...>>" notes removed, the
// final "#### N" line written "The answer is: N".
std::string gsm8k_answer_as_metamath(const std::string& answer);

}  // namespace hra
