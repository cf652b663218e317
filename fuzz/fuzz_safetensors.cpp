// safetensors from bytes: header, offsets, dtypes, every tensor read.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hra::fuzz::expect_named_errors([&] {
        auto f = hra::io::SafetensorsFile::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
        for (const auto& name : f.names()) (void)f.tensor(name).sum();
        (void)f.metadata();
    });
    return 0;
}
