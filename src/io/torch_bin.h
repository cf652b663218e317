// Reading the state dicts that torch.save writes (pytorch_model.bin, the zip
// format of PyTorch 1.6 and later) without running any pickled code.
//
// libtorch's torch::pickle_load refuses the collections.OrderedDict that
// state_dict() produces, so the zip container is read with libtorch's own
// stream reader and data.pkl is interpreted by a small restricted unpickler.
// It knows the opcodes torch.save emits and accepts only these globals:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the torch.*Storage types. Any other
// global (os.system, builtins.eval, ...) is refused before anything is called:
// arbitrary globals are how malicious checkpoints run code.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace hra::io {

// Every tensor of a flat {name: tensor} state dict, as CPU tensors (or of the
// "state_dict" entry of a Lightning / CompVis checkpoint, SD's *.ckpt). hra::Error
// naming the file for a legacy (non-zip) file, a corrupt archive, a refused
// global, an unsupported opcode, or storage bytes that do not cover a tensor.
std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path);

}  // namespace hra::io
