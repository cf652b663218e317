// torch.save zip + pickle (pytorch_model.bin, SD .ckpt): zip directory, unpickler, storages.
#include "fuzz_util.h"
#include "io/torch_bin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto& path = hra::fuzz::input_file(data, size, ".bin");
    hra::fuzz::expect_named_errors([&] {
        for (const auto& [name, t] : hra::io::read_torch_state_dict(path)) (void)t.sum();
    });
    return 0;
}
