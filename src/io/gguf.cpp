#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::io {

namespace {

constexpr uint32_t kVersion = 3;
constexpr uint64_t kAlignment = 32;  // general.alignment's default
constexpr int64_t kQ8Block = 32;
constexpr uint64_t kQ8BlockBytes = 2 + kQ8Block;

// GGUF value types.
enum : uint32_t {
    kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
    kU64 = 10, kI64 = 11, kF64 = 12,
};

uint64_t align_up(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

template <class T>
void put(std::ostream& os, T v) {
    os.write(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_string(std::ostream& os, const std::string& s) {
    put<uint64_t>(os, s.size());
    os.write(s.data(), static_cast<std::streamsize>(s.size()));
}

void put_value(std::ostream& os, const GgufValue& v) {
    if (auto* s = std::get_if<std::string>(&v)) put<uint32_t>(os, kString), put_string(os, *s);
    else if (auto* u = std::get_if<uint32_t>(&v)) put<uint32_t>(os, kU32), put(os, *u);
    else if (auto* i = std::get_if<int32_t>(&v)) put<uint32_t>(os, kI32), put(os, *i);
    else if (auto* f = std::get_if<float>(&v)) put<uint32_t>(os, kF32), put(os, *f);
    else if (auto* b = std::get_if<bool>(&v)) put<uint32_t>(os, kBool), put<uint8_t>(os, *b ? 1 : 0);
    else if (auto* l = std::get_if<uint64_t>(&v)) put<uint32_t>(os, kU64), put(os, *l);
    else {
        const auto& a = std::get<GgufArray>(v);
        put<uint32_t>(os, kArray);
        if (auto* ss = std::get_if<std::vector<std::string>>(&a)) {
            put<uint32_t>(os, kString), put<uint64_t>(os, ss->size());
            for (const auto& s : *ss) put_string(os, s);
        } else if (auto* fs = std::get_if<std::vector<float>>(&a)) {
            put<uint32_t>(os, kF32), put<uint64_t>(os, fs->size());
            os.write(reinterpret_cast<const char*>(fs->data()), static_cast<std::streamsize>(fs->size() * sizeof(float)));
        } else {
            const auto& is = std::get<std::vector<int32_t>>(a);
            put<uint32_t>(os, kI32), put<uint64_t>(os, is.size());
            os.write(reinterpret_cast<const char*>(is.data()), static_cast<std::streamsize>(is.size() * sizeof(int32_t)));
        }
    }
}

}  // namespace

GgmlType parse_ggml_type(const std::string& name) {
    if (name == "f32") return GgmlType::F32;
    if (name == "f16") return GgmlType::F16;
    if (name == "bf16") return GgmlType::BF16;
    if (name == "q8_0") return GgmlType::Q8_0;
    throw Error("unknown GGUF tensor type '" + name + "' (supported: f32, f16, bf16, q8_0)");
}

std::string ggml_type_name(GgmlType type) {
    switch (type) {
        case GgmlType::F32: return "f32";
        case GgmlType::F16: return "f16";
        case GgmlType::BF16: return "bf16";
        case GgmlType::Q8_0: return "q8_0";
    }
    return "type " + std::to_string(static_cast<uint32_t>(type));
}

bool ggml_type_fits(GgmlType type, int64_t row_length) {
    return type != GgmlType::Q8_0 || (row_length > 0 && row_length % kQ8Block == 0);
}

uint64_t ggml_type_bytes(GgmlType type, int64_t n) {
    switch (type) {
        case GgmlType::F32: return static_cast<uint64_t>(n) * 4;
        case GgmlType::F16:
        case GgmlType::BF16: return static_cast<uint64_t>(n) * 2;
        case GgmlType::Q8_0: return static_cast<uint64_t>(n / kQ8Block) * kQ8BlockBytes;
    }
    throw Error("unsupported GGUF tensor type " + std::to_string(static_cast<uint32_t>(type)));
}

std::vector<uint8_t> quantize_q8_0(const float* x, int64_t n) {
    if (n % kQ8Block != 0) throw Error("Q8_0 needs a multiple of 32 values, got " + std::to_string(n));
    std::vector<uint8_t> out(static_cast<size_t>(n / kQ8Block) * kQ8BlockBytes);
    uint8_t* o = out.data();
    for (int64_t b = 0; b < n; b += kQ8Block, o += kQ8BlockBytes) {
        float amax = 0.0f;
        for (int64_t j = 0; j < kQ8Block; ++j) amax = std::max(amax, std::fabs(x[b + j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t h = c10::Half(d).x;
        std::memcpy(o, &h, 2);
        for (int64_t j = 0; j < kQ8Block; ++j) o[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[b + j] * id)));
    }
    return out;
}

std::vector<float> dequantize_q8_0(const uint8_t* data, int64_t n) {
    if (n % kQ8Block != 0) throw Error("Q8_0 holds a multiple of 32 values, not " + std::to_string(n));
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t b = 0; b < n; b += kQ8Block, data += kQ8BlockBytes) {
        c10::Half d;
        std::memcpy(&d.x, data, 2);
        const float df = static_cast<float>(d);
        for (int64_t j = 0; j < kQ8Block; ++j) out[static_cast<size_t>(b + j)] = df * static_cast<int8_t>(data[2 + j]);
    }
    return out;
}

std::vector<uint8_t> encode_ggml(const at::Tensor& values, GgmlType type) {
    const auto x = values.detach().to(at::kCPU, at::kFloat).contiguous();
    const int64_t n = x.numel();
    if (type == GgmlType::Q8_0) return quantize_q8_0(x.data_ptr<float>(), n);
    const at::Tensor t = type == GgmlType::F32 ? x : x.to(type == GgmlType::F16 ? at::kHalf : at::kBFloat16).contiguous();
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    return std::vector<uint8_t>(p, p + t.nbytes());
}

at::Tensor decode_ggml(const uint8_t* data, GgmlType type, const std::vector<int64_t>& torch_shape) {
    int64_t n = 1;
    for (auto s : torch_shape) n *= s;
    if (type == GgmlType::Q8_0) {
        auto v = dequantize_q8_0(data, n);
        return at::from_blob(v.data(), {n}, at::kFloat).clone().reshape(torch_shape);
    }
    const auto dtype = type == GgmlType::F32 ? at::kFloat : type == GgmlType::F16 ? at::kHalf : at::kBFloat16;
    return at::from_blob(const_cast<uint8_t*>(data), torch_shape, dtype).to(at::kFloat).clone();
}

void GgufWriter::set(const std::string& key, GgufValue value) {
    for (auto& kv : kv_)
        if (kv.first == key) {
            kv.second = std::move(value);
            return;
        }
    kv_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, const at::Tensor& values, GgmlType type) {
    if (values.dim() < 1 || values.dim() > 4) throw Error("GGUF tensor '" + name + "' must have 1 to 4 dimensions");
    if (!ggml_type_fits(type, values.size(-1)))
        throw Error("GGUF tensor '" + name + "': rows of " + std::to_string(values.size(-1)) + " values cannot be " +
                    ggml_type_name(type));
    for (const auto& t : tensors_)
        if (t.first.name == name) throw Error("GGUF tensor '" + name + "' added twice");
    GgufTensorInfo info;
    info.name = name;
    info.shape = values.sizes().vec();
    info.type = type;
    uint64_t offset = 0;
    if (!tensors_.empty()) {
        const auto& last = tensors_.back();
        offset = align_up(last.first.offset + ggml_type_bytes(last.first.type, last.second.numel()));
    }
    info.offset = offset;
    tensors_.emplace_back(std::move(info), values);
}

uint64_t GgufWriter::write(const std::string& path) const {
    uint64_t written = 0;
    // The header first, in memory: its length places the data section.
    std::ostringstream head;
    head.write("GGUF", 4);
    put<uint32_t>(head, kVersion);
    put<uint64_t>(head, tensors_.size());
    put<uint64_t>(head, kv_.size());
    for (const auto& kv : kv_) put_string(head, kv.first), put_value(head, kv.second);
    for (const auto& t : tensors_) {
        put_string(head, t.first.name);
        put<uint32_t>(head, static_cast<uint32_t>(t.first.shape.size()));
        for (auto it = t.first.shape.rbegin(); it != t.first.shape.rend(); ++it) put<uint64_t>(head, static_cast<uint64_t>(*it));
        put<uint32_t>(head, static_cast<uint32_t>(t.first.type));
        put<uint64_t>(head, t.first.offset);
    }
    const std::string header = head.str();
    write_atomically(path, [&](std::ostream& os) {
        os.write(header.data(), static_cast<std::streamsize>(header.size()));
        uint64_t pos = header.size();
        const std::string zeros(kAlignment, '\0');
        auto pad_to = [&](uint64_t target) {
            os.write(zeros.data(), static_cast<std::streamsize>(target - pos));
            pos = target;
        };
        const uint64_t data_start = align_up(pos);
        pad_to(data_start);
        for (const auto& t : tensors_) {
            pad_to(data_start + t.first.offset);
            const auto bytes = encode_ggml(t.second, t.first.type);
            os.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
            pos += bytes.size();
        }
        pad_to(align_up(pos));  // ggml's own reader expects every tensor padded, the last one too
        written = pos;
    });
    return written;
}

// ---- reading ----

namespace {

// The file mapped read-only: the header is parsed in place and tensor data are never read.
class Mapping {
public:
    explicit Mapping(const std::string& path) {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw Error(std::string("cannot open: ") + std::strerror(errno), {path});
        struct stat st {};
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            throw Error("not a regular file", {path});
        }
        size_ = static_cast<size_t>(st.st_size);
        if (size_ > 0) {
            void* p = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                ::close(fd);
                throw Error(std::string("cannot map: ") + std::strerror(errno), {path});
            }
            data_ = static_cast<const char*>(p);
        }
        ::close(fd);
    }
    ~Mapping() {
        if (data_) munmap(const_cast<char*>(data_), size_);
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    const char* data() const { return data_; }
    size_t size() const { return size_; }

private:
    const char* data_ = nullptr;
    size_t size_ = 0;
};

class Cursor {
public:
    Cursor(const Mapping& m, const std::string& path) : data_(m.data()), size_(m.size()), path_(path) {}
    template <class T>
    T get(const char* what) {
        need(sizeof(T), what);
        T v;
        std::memcpy(&v, data_ + pos_, sizeof v);
        pos_ += sizeof v;
        return v;
    }
    std::string string(const char* what) {
        const auto n = get<uint64_t>(what);
        need(n, what);
        std::string v(data_ + pos_, n);
        pos_ += n;
        return v;
    }
    // `count` items of at least `each` bytes must fit in the rest of the file.
    void need(uint64_t count, const char* what, uint64_t each = 1) const {
        if (count > (size_ - pos_) / each)
            throw Error(std::string("truncated GGUF file: ") + what + " runs past the end at byte " + std::to_string(pos_),
                        {path_});
    }
    uint64_t pos() const { return pos_; }
    [[noreturn]] void fail(const std::string& msg) const { throw Error(msg + " (at byte " + std::to_string(pos_) + ")", {path_}); }

private:
    const char* data_;
    uint64_t size_;
    const std::string& path_;
    uint64_t pos_ = 0;
};

uint64_t value_size(uint32_t type) {
    switch (type) {
        case kU8: case kI8: case kBool: return 1;
        case kU16: case kI16: return 2;
        case kU32: case kI32: case kF32: return 4;
        default: return 8;  // 64-bit values, and a string's length
    }
}

// A scalar of any GGUF type, widened to the variant's kinds (small ints to 32 bits, f64 to f32).
GgufValue read_scalar(Cursor& c, uint32_t type) {
    switch (type) {
        case kU8: return static_cast<uint32_t>(c.get<uint8_t>("a value"));
        case kI8: return static_cast<int32_t>(c.get<int8_t>("a value"));
        case kU16: return static_cast<uint32_t>(c.get<uint16_t>("a value"));
        case kI16: return static_cast<int32_t>(c.get<int16_t>("a value"));
        case kU32: return c.get<uint32_t>("a value");
        case kI32: return c.get<int32_t>("a value");
        case kF32: return c.get<float>("a value");
        case kBool: {
            const auto b = c.get<uint8_t>("a value");
            if (b > 1) c.fail("a boolean holds " + std::to_string(b));
            return b == 1;
        }
        case kString: return c.string("a string");
        case kU64: return c.get<uint64_t>("a value");
        case kI64: return static_cast<uint64_t>(c.get<int64_t>("a value"));
        case kF64: return static_cast<float>(c.get<double>("a value"));
        default: c.fail("unknown GGUF value type " + std::to_string(type));
    }
}

GgufValue read_value(Cursor& c, uint32_t type) {
    if (type != kArray) return read_scalar(c, type);
    const auto elem = c.get<uint32_t>("an array type");
    const auto n = c.get<uint64_t>("an array length");
    c.need(n, "an array", value_size(elem));  // before any allocation of n elements
    if (elem == kString) {
        std::vector<std::string> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) v.push_back(c.string("a string"));
        return GgufArray(std::move(v));
    }
    if (elem == kF32 || elem == kF64) {
        std::vector<float> v;
        v.reserve(n);
        for (uint64_t i = 0; i < n; ++i) v.push_back(std::get<float>(read_scalar(c, elem)));
        return GgufArray(std::move(v));
    }
    if (elem == kArray) c.fail("nested GGUF arrays are not supported");
    std::vector<int32_t> v;
    v.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
        const auto s = read_scalar(c, elem);
        if (auto* u = std::get_if<uint32_t>(&s)) v.push_back(static_cast<int32_t>(*u));
        else if (auto* i32 = std::get_if<int32_t>(&s)) v.push_back(*i32);
        else if (auto* b = std::get_if<bool>(&s)) v.push_back(*b ? 1 : 0);
        else v.push_back(static_cast<int32_t>(std::get<uint64_t>(s)));
    }
    return GgufArray(std::move(v));
}

}  // namespace

const GgufValue& GgufFile::at(const std::string& key) const {
    auto it = metadata.find(key);
    if (it == metadata.end()) throw Error("GGUF metadata has no key '" + key + "'", {path});
    return it->second;
}

at::Tensor GgufFile::tensor(const std::string& name) const {
    for (const auto& t : tensors) {
        if (t.name != name) continue;
        std::ifstream in(path, std::ios::binary);
        int64_t n = 1;
        for (auto s : t.shape) n *= s;
        std::vector<uint8_t> bytes(ggml_type_bytes(t.type, n));
        in.seekg(static_cast<std::streamoff>(data_offset + t.offset));
        in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        if (!in) throw Error("cannot read tensor '" + name + "'", {path});
        return decode_ggml(bytes.data(), t.type, t.shape);
    }
    throw Error("GGUF file has no tensor '" + name + "'", {path});
}

GgufFile read_gguf(const std::string& path) {
    const Mapping bytes(path);
    Cursor c(bytes, path);
    GgufFile f;
    f.path = path;
    c.need(4, "the magic");
    if (std::memcmp(bytes.data(), "GGUF", 4) != 0) throw Error("not a GGUF file (the magic is not 'GGUF')", {path});
    c.get<uint32_t>("the magic");
    f.version = c.get<uint32_t>("the version");
    if (f.version < 2 || f.version > 3) throw Error("unsupported GGUF version " + std::to_string(f.version), {path});
    const auto n_tensors = c.get<uint64_t>("the tensor count");
    const auto n_kv = c.get<uint64_t>("the metadata count");
    c.need(n_kv, "the metadata", 8 + 4);           // a key's length and a value type at least
    c.need(n_tensors, "the tensor descriptions", 8 + 4 + 8 + 4 + 8);
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.string("a metadata key");
        const auto type = c.get<uint32_t>("a value type");
        auto value = read_value(c, type);
        if (!f.metadata.emplace(key, std::move(value)).second) c.fail("metadata key '" + key + "' appears twice");
    }
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t;
        t.name = c.string("a tensor name");
        const auto dims = c.get<uint32_t>("a tensor's dimension count");
        if (dims < 1 || dims > 4) c.fail("tensor '" + t.name + "' has " + std::to_string(dims) + " dimensions");
        t.shape.assign(dims, 0);
        for (uint32_t d = 0; d < dims; ++d) {
            const auto s = c.get<uint64_t>("a tensor dimension");
            if (s == 0 || s > (1ull << 40)) c.fail("tensor '" + t.name + "' has a dimension of " + std::to_string(s));
            t.shape[dims - 1 - d] = static_cast<int64_t>(s);
        }
        const auto type = c.get<uint32_t>("a tensor type");
        if (type != 0 && type != 1 && type != 8 && type != 30)
            c.fail("tensor '" + t.name + "' has ggml type " + std::to_string(type) + " (hra reads f32, f16, bf16, q8_0)");
        t.type = static_cast<GgmlType>(type);
        if (!ggml_type_fits(t.type, t.shape.back())) c.fail("tensor '" + t.name + "' has rows that do not fit its type");
        t.offset = c.get<uint64_t>("a tensor offset");
        f.tensors.push_back(std::move(t));
    }
    uint64_t alignment = kAlignment;
    if (auto it = f.metadata.find("general.alignment"); it != f.metadata.end()) {
        const auto* a = std::get_if<uint32_t>(&it->second);
        if (!a || *a == 0 || (*a & (*a - 1)) != 0) throw Error("general.alignment must be a power of two", {path});
        alignment = *a;
    }
    f.data_offset = (c.pos() + alignment - 1) / alignment * alignment;
    for (const auto& t : f.tensors) {
        long double n = 1;
        for (auto s : t.shape) n *= static_cast<long double>(s);
        if (n > static_cast<long double>(1ull << 50)) throw Error("tensor '" + t.name + "' is too large", {path});
        const uint64_t size = ggml_type_bytes(t.type, static_cast<int64_t>(n));
        if (t.offset % alignment != 0) throw Error("tensor '" + t.name + "' is not aligned", {path});
        if (f.data_offset > bytes.size() || t.offset > bytes.size() - f.data_offset ||
            size > bytes.size() - f.data_offset - t.offset)
            throw Error("tensor '" + t.name + "' runs past the end of the file", {path});
    }
    return f;
}

}  // namespace hra::io
