// Runs a GGUF file in llama.cpp (the prebuilt one node-llama-cpp 3.21.1 ships) and
// prints one JSON line: the prompt's token ids as llama.cpp tokenises it (with BOS
// when the file asks for it), the greedy continuation, and timings.
// Usage: node llama_cpp_run.mjs MODEL.gguf PROMPT N_NEW [LORA.gguf] [--threads T] [--ids 1,2,3] [--repeat R] [--probs] [--llama-defaults]
// --ids: the prompt as token ids (PROMPT ignored, no BOS added, EOS does not stop). --repeat: run R times on a
// cleared sequence; the timings are then lists (the benchmark's repetitions). --probs (with --ids): no
// generation; the ids are teacher-forced in one batch and "probs" holds, after each id, llama.cpp's
// next-token distribution as [[token, probability], ...] (nonzero entries). --llama-defaults: llama.cpp's
// own KV cache type (f16) and flash attention setting, as its users run it (the benchmark's peer).
import {getLlama} from "node-llama-cpp";

const args = process.argv.slice(2);
const opt = (name) => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
};
const threads = Number(opt("--threads") ?? 1);
const idsArg = opt("--ids");
const repeat = Number(opt("--repeat") ?? 1);
const probsAt = args.indexOf("--probs");
const wantProbs = probsAt >= 0;
if (wantProbs) args.splice(probsAt, 1);
const defaultsAt = args.indexOf("--llama-defaults");
const llamaDefaults = defaultsAt >= 0;
if (llamaDefaults) args.splice(defaultsAt, 1);
const [modelPath, prompt, nNewText, loraPath] = args;
const nNew = Number(nNewText);

const llama = await getLlama({gpu: false, build: "never", logLevel: "error", progressLogs: false});
const model = await llama.loadModel({modelPath});
const context = await model.createContext({
    contextSize: 512,
    threads,
    // llama.cpp keeps its KV cache in f16 unless told, and its CPU flash attention works in f16 whatever
    // the cache holds: a float32 cache without flash attention makes its numbers comparable with hra's
    // (largest probability difference 2e-6 on stories260K, against 7e-4 with the defaults).
    ...(llamaDefaults ? {} : {flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32"}),
    lora: loraPath ? {adapters: [{filePath: loraPath, scale: 1}]} : undefined,
});
const sequence = context.getSequence();
let promptIds = idsArg ? idsArg.split(",").map(Number) : model.tokenize(prompt, false);
if (!idsArg && model.fileInfo.metadata.tokenizer?.ggml?.add_bos_token !== false && model.tokens.bos != null)
    promptIds = [model.tokens.bos, ...promptIds];

// Teacher forcing: the distributions after each id, in one batch.
async function teacherForce() {
    if (!idsArg) throw new Error("--probs needs --ids");
    const out = await sequence.controlledEvaluate(promptIds.map((t) => [t, {generateNext: {probabilities: true}}]));
    return {prompt_ids: promptIds, generated: [], probs: out.map((o) => [...o.next.probabilities.entries()]),
            prefill_seconds: 0, decode_seconds: 0, threads};
}

async function generate() {
    let generated = [];
    const prefill = [], decode = [];
    for (let rep = 0; rep < repeat; ++rep) {
        if (rep > 0) await sequence.clearHistory();
        generated = [];
        const t0 = performance.now();
        let tFirst = 0;
        for await (const token of sequence.evaluate(promptIds, {temperature: 0})) {
            if (generated.length === 0) tFirst = performance.now();
            generated.push(token);
            if (generated.length >= nNew || (!idsArg && token === model.tokens.eos)) break;
        }
        const t1 = performance.now();
        prefill.push((tFirst - t0) / 1000);
        decode.push((t1 - tFirst) / 1000);
    }
    return {
        prompt_ids: promptIds,
        generated,
        prefill_seconds: repeat === 1 ? prefill[0] : prefill,
        decode_seconds: repeat === 1 ? decode[0] : decode,
        threads,
        text: model.detokenize(generated),
    };
}

console.log(JSON.stringify(wantProbs ? await teacherForce() : await generate()));
await context.dispose();
await model.dispose();
await llama.dispose();
