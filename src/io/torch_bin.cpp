#include "io/torch_bin.h"

#include <caffe2/serialize/inline_container.h>
#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <unordered_map>
#include <variant>
#include <vector>

#include <torch/torch.h>

#include "common/error.h"

namespace hra::io {

namespace {

struct Value;
using Ref = std::shared_ptr<Value>;

struct Global {
    std::string module, name;
    std::string full() const { return module + "." + name; }
};

// A pickled object: only what torch.save's state dicts contain.
struct Value {
    enum Kind { None, Bool, Int, Float, Str, Bytes, Tuple, List, Dict, GlobalRef, Tensor, Mark } kind = None;
    bool b = false;
    int64_t i = 0;
    double f = 0;
    std::string s;
    std::vector<Ref> items;                    // tuple, list
    std::vector<std::pair<Ref, Ref>> entries;  // dict (insertion order)
    Global global;
    at::Tensor tensor;  // a rebuilt tensor, or a storage as a 1-D tensor
    bool is_storage = false;

    Value() = default;
    Value(const Value&) = delete;
    Value& operator=(const Value&) = delete;
    // Frees nested tuples, lists and dicts with a work list, not by recursion: a pickle
    // nesting 100,000 tuples overflowed the stack when its root was released.
    ~Value() {
        std::vector<std::shared_ptr<Value>> pending;
        auto adopt = [&pending](Value& v) {
            for (auto& x : v.items) pending.push_back(std::move(x));
            for (auto& [k, x] : v.entries) pending.push_back(std::move(k)), pending.push_back(std::move(x));
            v.items.clear();
            v.entries.clear();
        };
        adopt(*this);
        while (!pending.empty()) {
            auto v = std::move(pending.back());
            pending.pop_back();
            if (v && v.use_count() == 1) adopt(*v);
        }  // each v is released with no children left
    }
};

Ref make(Value::Kind k) {
    auto v = std::make_shared<Value>();
    v->kind = k;
    return v;
}

const std::set<std::string>& allowed_globals() {
    static const std::set<std::string> names = {
        "collections.OrderedDict",    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch.FloatStorage",         "torch.DoubleStorage",            "torch.HalfStorage",
        "torch.BFloat16Storage",      "torch.LongStorage",              "torch.IntStorage",
        "torch.ShortStorage",         "torch.CharStorage",              "torch.ByteStorage",
        "torch.BoolStorage"};
    return names;
}

c10::ScalarType storage_dtype(const std::string& name) {
    static const std::unordered_map<std::string, c10::ScalarType> map = {
        {"FloatStorage", c10::kFloat},   {"DoubleStorage", c10::kDouble}, {"HalfStorage", c10::kHalf},
        {"BFloat16Storage", c10::kBFloat16}, {"LongStorage", c10::kLong}, {"IntStorage", c10::kInt},
        {"ShortStorage", c10::kShort},   {"CharStorage", c10::kChar},     {"ByteStorage", c10::kByte},
        {"BoolStorage", c10::kBool}};
    auto it = map.find(name);
    if (it == map.end()) throw std::runtime_error("unsupported storage type torch." + name);
    return it->second;
}

class Unpickler {
public:
    Unpickler(const std::string& data, caffe2::serialize::PyTorchStreamReader& reader) : d_(data), reader_(reader) {}

    Ref run() {
        for (;;) {
            const uint8_t op = byte();
            switch (op) {
                case 0x80: byte(); break;   // PROTO
                case 0x95: take(8); break;  // FRAME
                case '}': push(make(Value::Dict)); break;
                case ']': push(make(Value::List)); break;
                case ')': push(make(Value::Tuple)); break;
                case '(': marks_.push_back(stack_.size()); break;
                case 'X': push(str(Value::Str, u32())); break;
                case 0x8c: push(str(Value::Str, byte())); break;
                case 0x8d: push(str(Value::Str, u64())); break;
                case 'T': push(str(Value::Str, u32())); break;
                case 'U': push(str(Value::Str, byte())); break;
                case 'B': push(str(Value::Bytes, u32())); break;
                case 'C': push(str(Value::Bytes, byte())); break;
                case 'J': push(integer(static_cast<int32_t>(u32()))); break;
                case 'K': push(integer(byte())); break;
                case 'M': push(integer(byte() | (byte() << 8))); break;
                case 0x8a: push(long_int(byte())); break;
                case 0x8b: push(long_int(u32())); break;
                case 'G': {
                    uint64_t bits = 0;
                    for (int k = 0; k < 8; ++k) bits = (bits << 8) | byte();  // big-endian
                    auto v = make(Value::Float);
                    std::memcpy(&v->f, &bits, 8);
                    push(v);
                    break;
                }
                case 'N': push(make(Value::None)); break;
                case 0x88: case 0x89: {
                    auto v = make(Value::Bool);
                    v->b = op == 0x88;
                    push(v);
                    break;
                }
                case 't': push(tuple(pop_mark())); break;
                case 0x85: case 0x86: case 0x87: {
                    const size_t n = op - 0x84u;
                    need(n);
                    std::vector<Ref> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
                    stack_.resize(stack_.size() - n);
                    push(tuple(std::move(items)));
                    break;
                }
                case 'l': {
                    auto v = make(Value::List);
                    v->items = pop_mark();
                    push(v);
                    break;
                }
                case 'a': {
                    auto item = pop();
                    expect(top(), Value::List, "APPEND")->items.push_back(item);
                    break;
                }
                case 'e': {
                    auto items = pop_mark();
                    auto list = expect(top(), Value::List, "APPENDS");
                    list->items.insert(list->items.end(), items.begin(), items.end());
                    break;
                }
                case 'd': {
                    auto v = make(Value::Dict);
                    set_items(v, pop_mark());
                    push(v);
                    break;
                }
                case 's': {
                    auto value = pop();
                    auto key = pop();
                    expect(top(), Value::Dict, "SETITEM")->entries.emplace_back(key, value);
                    break;
                }
                case 'u': {
                    auto items = pop_mark();
                    set_items(expect(top(), Value::Dict, "SETITEMS"), items);
                    break;
                }
                case 'q': memo_[byte()] = top(); break;
                case 'r': memo_[u32()] = top(); break;
                case 0x94: memo_[memo_.size()] = top(); break;
                case 'h': push(get_memo(byte())); break;
                case 'j': push(get_memo(u32())); break;
                case 'c': {
                    Global g;
                    g.module = line();
                    g.name = line();
                    push(global(g));
                    break;
                }
                case 0x93: {
                    auto name = expect(pop(), Value::Str, "STACK_GLOBAL");
                    auto module = expect(pop(), Value::Str, "STACK_GLOBAL");
                    push(global({module->s, name->s}));
                    break;
                }
                case 'R': {
                    auto args = expect(pop(), Value::Tuple, "REDUCE");
                    auto fn = expect(pop(), Value::GlobalRef, "REDUCE");
                    push(reduce(fn->global, args->items));
                    break;
                }
                case 'b': pop(); break;  // BUILD: the state of an OrderedDict (its _metadata) is not needed
                case 'Q': push(persistent_load(pop())); break;
                case '.': return pop();
                default: {
                    char buf[64];
                    std::snprintf(buf, sizeof buf, "unsupported pickle opcode 0x%02x at byte %zu", op, pos_ - 1);
                    throw std::runtime_error(buf);
                }
            }
        }
    }

private:
    uint8_t byte() {
        if (pos_ >= d_.size()) throw std::runtime_error("data.pkl ends early");
        return static_cast<uint8_t>(d_[pos_++]);
    }
    std::string take(uint64_t n) {
        if (n > d_.size() - pos_) throw std::runtime_error("data.pkl ends early");
        std::string s = d_.substr(pos_, n);
        pos_ += n;
        return s;
    }
    uint32_t u32() {
        uint32_t v = 0;
        for (int k = 0; k < 4; ++k) v |= static_cast<uint32_t>(byte()) << (8 * k);
        return v;
    }
    uint64_t u64() {
        uint64_t v = 0;
        for (int k = 0; k < 8; ++k) v |= static_cast<uint64_t>(byte()) << (8 * k);
        return v;
    }
    std::string line() {
        const size_t end = d_.find('\n', pos_);
        if (end == std::string::npos) throw std::runtime_error("data.pkl ends early");
        std::string s = d_.substr(pos_, end - pos_);
        pos_ = end + 1;
        return s;
    }
    Ref str(Value::Kind k, uint64_t n) {
        auto v = make(k);
        v->s = take(n);
        return v;
    }
    static Ref integer(int64_t x) {
        auto v = make(Value::Int);
        v->i = x;
        return v;
    }
    Ref long_int(uint64_t n) {
        if (n > 8) throw std::runtime_error("integer wider than 64 bits");
        const std::string bytes = take(n);
        uint64_t u = 0;
        for (size_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[k])) << (8 * k);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);  // sign
        return integer(static_cast<int64_t>(u));
    }
    static Ref tuple(std::vector<Ref> items) {
        auto v = make(Value::Tuple);
        v->items = std::move(items);
        return v;
    }
    void push(Ref v) { stack_.push_back(std::move(v)); }
    void need(size_t n) const {
        const size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() < floor + n) throw std::runtime_error("pickle stack underflow");
    }
    Ref pop() {
        need(1);
        auto v = stack_.back();
        stack_.pop_back();
        return v;
    }
    const Ref& top() const {
        need(1);
        return stack_.back();
    }
    std::vector<Ref> pop_mark() {
        if (marks_.empty()) throw std::runtime_error("pickle MARK missing");
        const size_t m = marks_.back();
        marks_.pop_back();
        std::vector<Ref> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
        stack_.resize(m);
        return items;
    }
    static const Ref& expect(const Ref& v, Value::Kind k, const char* op) {
        if (v->kind != k) throw std::runtime_error(std::string("unexpected operand of ") + op);
        return v;
    }
    static void set_items(const Ref& dict, const std::vector<Ref>& items) {
        if (items.size() % 2) throw std::runtime_error("odd number of dict items");
        for (size_t k = 0; k < items.size(); k += 2) dict->entries.emplace_back(items[k], items[k + 1]);
    }
    Ref get_memo(uint64_t k) const {
        auto it = memo_.find(k);
        if (it == memo_.end()) throw std::runtime_error("pickle memo key " + std::to_string(k) + " was never stored");
        return it->second;
    }
    static Ref global(const Global& g) {
        if (!allowed_globals().count(g.full()))
            throw std::runtime_error("refused pickle global '" + g.full() +
                                     "': only tensors and OrderedDicts are allowed (a checkpoint that imports other "
                                     "names could run code)");
        auto v = make(Value::GlobalRef);
        v->global = g;
        return v;
    }
    static std::vector<int64_t> ints(const Ref& v, const char* what) {
        if (v->kind != Value::Tuple && v->kind != Value::List) throw std::runtime_error(std::string(what) + " is not a tuple");
        std::vector<int64_t> out;
        for (const auto& x : v->items) {
            if (x->kind != Value::Int) throw std::runtime_error(std::string(what) + " holds a non-integer");
            out.push_back(x->i);
        }
        return out;
    }

    Ref reduce(const Global& g, const std::vector<Ref>& args) {
        const std::string f = g.full();
        if (f == "collections.OrderedDict") {
            if (!args.empty()) throw std::runtime_error("OrderedDict with arguments");
            return make(Value::Dict);
        }
        if (f == "torch._utils._rebuild_parameter") {
            if (args.empty() || args[0]->kind != Value::Tensor || args[0]->is_storage)
                throw std::runtime_error("_rebuild_parameter without a tensor");
            return args[0];
        }
        if (f == "torch._utils._rebuild_tensor_v2") {
            if (args.size() < 4 || args[0]->kind != Value::Tensor || !args[0]->is_storage || args[1]->kind != Value::Int)
                throw std::runtime_error("malformed _rebuild_tensor_v2 arguments");
            const auto& storage = args[0]->tensor;
            const int64_t offset = args[1]->i;
            const auto size = ints(args[2], "tensor size"), stride = ints(args[3], "tensor stride");
            if (size.size() != stride.size()) throw std::runtime_error("tensor size and stride differ in length");
            int64_t last = offset, step = 0;
            bool empty = false;
            for (size_t k = 0; k < size.size(); ++k) {
                if (size[k] < 0 || stride[k] < 0) throw std::runtime_error("negative tensor size or stride");
                if (size[k] == 0) empty = true;
                // Σ (size − 1) · stride, overflow-checked: a wrapped sum passed the bounds check below.
                else if (__builtin_mul_overflow(size[k] - 1, stride[k], &step) || __builtin_add_overflow(last, step, &last))
                    throw std::runtime_error("tensor size and stride overflow 64 bits");
            }
            if (offset < 0 || (!empty && last >= storage.numel()))
                throw std::runtime_error("tensor extends past its storage (" + std::to_string(storage.numel()) + " elements)");
            auto v = make(Value::Tensor);
            v->tensor = empty ? torch::empty(size, storage.options()) : storage.as_strided(size, stride, offset);
            return v;
        }
        throw std::runtime_error("'" + f + "' cannot be called");  // storage types are only persistent ids
    }

    Ref persistent_load(const Ref& pid) {
        if (pid->kind != Value::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Value::Str ||
            pid->items[0]->s != "storage" || pid->items[1]->kind != Value::GlobalRef || pid->items[2]->kind != Value::Str ||
            pid->items[4]->kind != Value::Int)
            throw std::runtime_error("unsupported persistent id (expected a storage)");
        const std::string key = pid->items[2]->s;
        auto cached = storages_.find(key);
        if (cached != storages_.end()) return cached->second;
        if (pid->items[1]->global.module != "torch") throw std::runtime_error("unsupported storage type");
        const auto dtype = storage_dtype(pid->items[1]->global.name);
        const int64_t numel = pid->items[4]->i;
        const std::string record = "data/" + key;
        if (key.find('/') != std::string::npos || !reader_.hasRecord(record))
            throw std::runtime_error("storage '" + key + "' has no record in the archive");
        auto [ptr, bytes] = reader_.getRecord(record);
        const size_t elem = c10::elementSize(dtype);
        if (numel < 0 || static_cast<uint64_t>(numel) > bytes / elem)  // numel · elem could wrap
            throw std::runtime_error("storage '" + key + "' holds " + std::to_string(bytes) + " bytes, fewer than its " +
                                     std::to_string(numel) + " elements need");
        auto owner = std::make_shared<at::DataPtr>(std::move(ptr));
        auto v = make(Value::Tensor);
        v->is_storage = true;
        v->tensor = torch::from_blob(owner->get(), {numel}, [owner](void*) {}, torch::TensorOptions().dtype(dtype));
        storages_[key] = v;
        return v;
    }

    const std::string& d_;
    caffe2::serialize::PyTorchStreamReader& reader_;
    size_t pos_ = 0;
    std::vector<Ref> stack_;
    std::vector<size_t> marks_;
    std::unordered_map<uint64_t, Ref> memo_;
    std::unordered_map<std::string, Ref> storages_;
};

// torch.save writes every entry stored (uncompressed). PyTorch's reader allocates an
// entry's declared size and inflates into it before anything can be checked, so a
// 1 MB deflated entry claiming gigabytes (a zip bomb) or a stored entry claiming more
// bytes than the file holds would fill memory first. The central directory is read
// with libzip, and such entries are refused before PyTorch's reader opens the file.
void check_zip_entries(const std::string& path) {
    int code = 0;
    zip_t* archive = zip_open(path.c_str(), ZIP_RDONLY, &code);
    if (!archive) {
        zip_error_t e;
        zip_error_init_with_code(&e, code);
        const std::string message = zip_error_strerror(&e);
        zip_error_fini(&e);
        throw Error("unreadable zip archive: " + message, {path});
    }
    std::unique_ptr<zip_t, void (*)(zip_t*)> guard(archive, zip_discard);
    const uint64_t file_size = std::filesystem::file_size(path);
    const zip_int64_t entries = zip_get_num_entries(archive, 0);
    for (zip_int64_t i = 0; i < entries; ++i) {
        zip_stat_t st;
        zip_stat_init(&st);
        if (zip_stat_index(archive, static_cast<zip_uint64_t>(i), 0, &st) != 0)
            throw Error("unreadable zip entry " + std::to_string(i) + ": " + zip_strerror(archive), {path});
        const std::string name = (st.valid & ZIP_STAT_NAME) && st.name ? st.name : "#" + std::to_string(i);
        if ((st.valid & ZIP_STAT_COMP_METHOD) && st.comp_method != ZIP_CM_STORE)
            throw Error("zip entry '" + name + "' is compressed (method " + std::to_string(st.comp_method) +
                            "); torch.save stores entries uncompressed, and compressed ones are not inflated "
                            "(a zip bomb would fill memory first)",
                        {path});
        if ((st.valid & ZIP_STAT_SIZE) && st.size > file_size)
            throw Error("zip entry '" + name + "' claims " + std::to_string(st.size) + " bytes, more than the " +
                            std::to_string(file_size) + " the file holds",
                        {path});
    }
}

}  // namespace

std::map<std::string, at::Tensor> read_torch_state_dict(const std::string& path) {
    {
        std::ifstream f(path, std::ios::binary);
        if (!f) throw Error("cannot open the file", {path});
        char magic[4] = {};
        f.read(magic, 4);
        if (f.gcount() != 4 || std::memcmp(magic, "PK\x03\x04", 4) != 0)
            throw Error("not a zip archive: a legacy torch.save file (PyTorch < 1.6) or not a torch file at all; "
                        "re-save it with a current PyTorch or convert it to safetensors",
                        {path});
    }
    check_zip_entries(path);
    std::map<std::string, at::Tensor> out;
    try {
        caffe2::serialize::PyTorchStreamReader reader(path);
        if (reader.hasRecord("byteorder")) {
            auto [p, n] = reader.getRecord("byteorder");
            if (std::string(static_cast<const char*>(p.get()), n) != "little")
                throw std::runtime_error("big-endian tensor data is not supported");
        }
        if (!reader.hasRecord("data.pkl")) throw std::runtime_error("no data.pkl in the archive");
        auto [ptr, size] = reader.getRecord("data.pkl");
        const std::string pickle(static_cast<const char*>(ptr.get()), size);
        Unpickler unpickler(pickle, reader);
        auto root = unpickler.run();
        if (root->kind != Value::Dict) throw std::runtime_error("the pickled object is not a dict of tensors");
        // Lightning / CompVis checkpoints (SD's *.ckpt): {"state_dict": {...}, "global_step": ..., ...}.
        for (const auto& [k, v] : root->entries)
            if (k->kind == Value::Str && k->s == "state_dict" && v->kind == Value::Dict) {
                root = v;
                break;
            }
        for (const auto& [k, v] : root->entries) {
            if (k->kind != Value::Str) throw std::runtime_error("a state dict key is not a string");
            if (v->kind != Value::Tensor || v->is_storage)
                throw std::runtime_error("'" + k->s + "' is not a tensor (expected a flat state dict)");
            out[k->s] = v->tensor;
        }
    } catch (const Error&) {
        throw;
    } catch (const c10::Error& e) {
        throw Error(std::string("unreadable torch zip archive: ") + e.what_without_backtrace(), {path});
    } catch (const std::exception& e) {
        throw Error(e.what(), {path});
    }
    return out;
}

}  // namespace hra::io
