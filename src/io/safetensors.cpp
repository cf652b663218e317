#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace hra::io {

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the format's own limit

struct DtypeEntry {
    const char* name;
    c10::ScalarType type;
};
constexpr DtypeEntry kDtypes[] = {
    {"F64", c10::ScalarType::Double}, {"F32", c10::ScalarType::Float},  {"F16", c10::ScalarType::Half},
    {"BF16", c10::ScalarType::BFloat16}, {"I64", c10::ScalarType::Long}, {"I32", c10::ScalarType::Int},
    {"I16", c10::ScalarType::Short},  {"I8", c10::ScalarType::Char},   {"U8", c10::ScalarType::Byte},
    {"BOOL", c10::ScalarType::Bool},
};

}  // namespace

c10::ScalarType dtype_from_name(const std::string& name) {
    for (const auto& d : kDtypes)
        if (name == d.name) return d.type;
    throw Error("unsupported safetensors dtype '" + name +
                "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
}

std::string dtype_name(c10::ScalarType type) {
    for (const auto& d : kDtypes)
        if (type == d.type) return d.name;
    throw Error(std::string("cannot store dtype ") + c10::toString(type) + " in safetensors");
}

// Owner of the bytes: an mmap of a file, or a string.
struct SafetensorsFile::Buffer {
    void* map = nullptr;
    size_t map_size = 0;
    std::string bytes;
    const uint8_t* data() const {
        return map ? static_cast<const uint8_t*>(map) : reinterpret_cast<const uint8_t*>(bytes.data());
    }
    size_t size() const { return map ? map_size : bytes.size(); }
    ~Buffer() {
        if (map) munmap(map, map_size);
    }
};

namespace {

uint64_t as_offset(const nlohmann::json& j, const std::string& what, const std::string& key) {
    if (!j.is_number_unsigned()) throw Error(what + " must be a non-negative integer", {"", key});
    return j.get<uint64_t>();
}

void parse_header(const uint8_t* base, size_t size, std::map<std::string, TensorInfo>& infos,
                  std::map<std::string, std::string>& metadata, const uint8_t*& data) {
    if (size < 8) throw Error("file too small for safetensors (" + std::to_string(size) + " bytes)");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
    if (n > kMaxHeader) throw Error("header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (n > size - 8)
        throw Error("header length " + std::to_string(n) + " runs past the end of the file (" +
                    std::to_string(size) + " bytes)");
    const char* hbeg = reinterpret_cast<const char*>(base + 8);
    nlohmann::json header;
    const std::string text(hbeg, hbeg + n);
    try {
        check_json_depth(text, "");
    } catch (const Error& e) {
        throw Error("header: " + e.message());
    }
    // nlohmann keeps the last of two equal keys: a tensor named twice is an error, not a silent choice.
    std::set<std::string> names;
    const nlohmann::json::parser_callback_t once = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1 && !names.insert(parsed.get<std::string>()).second)
            throw Error("the header lists this name twice", {"", parsed.get<std::string>()});
        return true;
    };
    try {
        header = nlohmann::json::parse(text, once);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("invalid JSON header: ") + e.what());
    }
    if (!header.is_object()) throw Error("header is not a JSON object");
    const uint64_t data_size = size - 8 - n;
    data = base + 8 + n;

    std::vector<std::pair<std::pair<uint64_t, uint64_t>, std::string>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& key = it.key();
        const auto& v = it.value();
        if (key == "__metadata__") {
            if (!v.is_object()) throw Error("__metadata__ must be an object of strings", {"", key});
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string()) throw Error("metadata values must be strings", {"", m.key()});
                metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        if (!v.is_object()) throw Error("tensor entry is not an object", {"", key});
        if (!v.contains("dtype") || !v["dtype"].is_string()) throw Error("missing or invalid 'dtype'", {"", key});
        if (!v.contains("shape") || !v["shape"].is_array()) throw Error("missing or invalid 'shape'", {"", key});
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            throw Error("missing or invalid 'data_offsets' (expected [begin, end])", {"", key});
        TensorInfo info;
        info.dtype = v["dtype"].get<std::string>();
        c10::ScalarType type;
        try {
            type = dtype_from_name(info.dtype);
        } catch (const Error& e) {
            throw Error(e.message(), {"", key});
        }
        const uint64_t elem = c10::elementSize(type);
        uint64_t numel = 1;
        for (const auto& d : v["shape"]) {
            uint64_t dim = as_offset(d, "shape entries", key);
            if (dim > (uint64_t(1) << 48) || (dim != 0 && numel > (uint64_t(1) << 48) / dim))
                throw Error("shape is too large", {"", key});
            numel *= dim;
            info.shape.push_back(static_cast<int64_t>(dim));
        }
        info.begin = as_offset(v["data_offsets"][0], "data_offsets", key);
        info.end = as_offset(v["data_offsets"][1], "data_offsets", key);
        if (info.begin > info.end) throw Error("data_offsets begin after they end", {"", key});
        if (info.end > data_size)
            throw Error("data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                            "] run past the data buffer (" + std::to_string(data_size) + " bytes)",
                        {"", key});
        if (info.end - info.begin != numel * elem)
            throw Error("byte size " + std::to_string(info.end - info.begin) + " does not match dtype " +
                            info.dtype + " x shape (" + std::to_string(numel * elem) + " bytes)",
                        {"", key});
        ranges.push_back({{info.begin, info.end}, key});
        infos.emplace(key, std::move(info));
    }
    std::sort(ranges.begin(), ranges.end());
    uint64_t pos = 0;
    for (const auto& [range, key] : ranges) {
        if (range.first < pos) throw Error("data overlaps the previous tensor's bytes", {"", key});
        if (range.first > pos) throw Error("gap of " + std::to_string(range.first - pos) + " bytes before this tensor's data", {"", key});
        pos = range.second;
    }
    if (pos != data_size)
        throw Error(std::to_string(data_size - pos) + " bytes of data after the last tensor are not covered by the header");
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    SafetensorsFile f;
    f.path_ = path;
    f.buffer_ = std::make_shared<Buffer>();
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw Error(std::string("cannot open: ") + std::strerror(errno), {path});
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        throw Error("not a regular file", {path});
    }
    const size_t size = static_cast<size_t>(st.st_size);
    if (size > 0) {
        void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            throw Error(std::string("mmap failed: ") + std::strerror(errno), {path});
        }
        f.buffer_->map = m;
        f.buffer_->map_size = size;
    }
    close(fd);
    try {
        parse_header(f.buffer_->data(), f.buffer_->size(), f.infos_, f.metadata_, f.data_);
    } catch (const Error& e) {
        throw e.in_file(path);
    }
    return f;
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& label) {
    SafetensorsFile f;
    f.path_ = label;
    f.buffer_ = std::make_shared<Buffer>();
    f.buffer_->bytes = std::move(bytes);
    try {
        parse_header(f.buffer_->data(), f.buffer_->size(), f.infos_, f.metadata_, f.data_);
    } catch (const Error& e) {
        throw e.in_file(label);
    }
    return f;
}

std::vector<std::string> SafetensorsFile::names() const {
    std::vector<std::string> out;
    for (const auto& kv : infos_) out.push_back(kv.first);
    return out;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
    auto it = infos_.find(name);
    if (it == infos_.end()) throw Error("no such tensor", {path_, name});
    return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
    const TensorInfo& ti = info(name);
    const auto type = dtype_from_name(ti.dtype);
    auto options = at::TensorOptions().dtype(type);
    const uint8_t* ptr = data_ + ti.begin;
    const size_t nbytes = ti.end - ti.begin;
    if (type == c10::ScalarType::Bool) {
        for (size_t i = 0; i < nbytes; ++i)
            if (ptr[i] > 1) throw Error("BOOL tensor holds a byte other than 0 or 1", {path_, name});
    }
    if (nbytes == 0) return at::empty(ti.shape, options);
    if (reinterpret_cast<uintptr_t>(ptr) % c10::elementSize(type) != 0) {
        auto out = at::empty(ti.shape, options);
        std::memcpy(out.data_ptr(), ptr, nbytes);
        return out;
    }
    auto keep = buffer_;
    return at::from_blob(const_cast<uint8_t*>(ptr), ti.shape, [keep](void*) {}, options);
}

std::map<std::string, at::Tensor> SafetensorsFile::load_all() const {
    std::map<std::string, at::Tensor> out;
    for (const auto& kv : infos_) out.emplace(kv.first, tensor(kv.first).clone());
    return out;
}

namespace {

// Validated contiguous CPU copies, sorted by name, and the padded header.
struct Prepared {
    std::vector<std::pair<std::string, at::Tensor>> tensors;
    std::string header;
};

Prepared prepare(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
    Prepared p;
    std::set<std::string> seen;
    for (const auto& [name, t] : tensors) {
        if (name == "__metadata__") throw Error("'__metadata__' cannot be a tensor name");
        if (!seen.insert(name).second) throw Error("duplicate tensor name", {"", name});
        if (!t.defined()) throw Error("undefined tensor", {"", name});
        p.tensors.emplace_back(name, t.detach().to(at::kCPU).contiguous());
    }
    std::sort(p.tensors.begin(), p.tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const auto& [name, t] : p.tensors) {
        uint64_t n = t.numel() * t.element_size();
        header[name] = {{"dtype", dtype_name(t.scalar_type())},
                        {"shape", t.sizes().vec()},
                        {"data_offsets", {offset, offset + n}}};
        offset += n;
    }
    p.header = header.dump();
    while (p.header.size() % 8 != 0) p.header.push_back(' ');  // keeps the data 8-byte aligned
    return p;
}

void write_prepared(std::ostream& out, const Prepared& p) {
    uint64_t hn = p.header.size();
    char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((hn >> (8 * i)) & 0xff);
    out.write(len, 8);
    out.write(p.header.data(), std::streamsize(p.header.size()));
    for (const auto& [name, t] : p.tensors)
        out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.numel() * t.element_size()));
}

}  // namespace

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
    std::ostringstream out;
    write_prepared(out, prepare(tensors, metadata));
    return out.str();
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
    Prepared p;
    try {
        p = prepare(tensors, metadata);
    } catch (const Error& e) {
        throw e.in_file(path);
    }
    write_atomically(path, [&](std::ostream& out) { write_prepared(out, p); });
}

}  // namespace hra::io
