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

// Prompt templates at inference (hra generate, hra eval), rendered as training renders them.
//   alpaca, metamath  the instruction template ("### Instruction: ... ### Response:"); alpaca with
//                     `input` uses the instruction-with-input form
//   chatml, llama2, llama3  one user turn, then what precedes the assistant's reply
//   file              `template_text` with {query} (and {input})
//   none / ""         the text as it is
struct GenerationPrompt {
    std::string template_name;
    std::string template_text;  // for "file"
    std::string query, input;
    bool step_by_step = false;  // the seed's GSM8K suffix " Let's think step by step."
};
const std::vector<std::string>& prompt_template_names();
std::vector<int64_t> encode_generation_prompt(const Tokenizer& tokenizer, const GenerationPrompt& prompt);

// The chat templates (llama2, llama3, chatml) whose special tokens the tokenizer has.
std::vector<std::string> chat_templates_that_fit(const Tokenizer& tokenizer);
// The named chat template a tokenizer_config.json "chat_template" (Jinja, not run by hra) is
// written for, judged by its markers; "" when none.
std::string chat_template_matching(const std::string& jinja);

// One segment's ids: a special segment is its one token (an error naming the templates
// that fit when the tokenizer lacks it); text is encoded (special tokens added when asked).
std::vector<int64_t> segment_ids(const Tokenizer& tokenizer, const Rendered::Segment& segment, bool add_special,
                                 const std::string& source, const char* flag = "--chat-template");

// tokenize_records through a cache in `cache_dir`: a file keyed by a hash of the rendered
// records (so of the data file, format, fields and templates), the tokenizer's files in
// `tokenizer_dir` and the options that change tokens (max_length, train_on_prompt, add_eos).
// A hit is read back; a miss tokenizes with a progress line and writes the file atomically.
// An unreadable cache file is a warning and a fresh tokenization, never an error.
std::vector<Example> tokenize_records_cached(const std::vector<Rendered>& records, const Tokenizer& tokenizer,
                                             const DataOptions& options, const std::string& source,
                                             const std::string& tokenizer_dir, const std::string& cache_dir);

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
