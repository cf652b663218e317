// A small C interface over Debian's libsentencepiece, built as its own module
// (libhra_spm.so) and loaded with dlmopen(LM_ID_NEWLM) into a separate
// link-map namespace.
//
// Why: Debian's libsentencepiece carries its own protobuf-lite 3.14 and
// exports those symbols, while libtorch loads the system libprotobuf 3.21.
// Linked into one program the two interpose each other and the process
// crashes during start-up; dlopen(RTLD_LOCAL) makes sentencepiece bind to the
// 3.21 copy (a fatal version check), and RTLD_DEEPBIND breaks libstdc++'s
// streams. In its own namespace sentencepiece gets its own libstdc++ and
// protobuf. Only C types cross the boundary, and memory is freed by the side
// that allocated it (hra_spm_free).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

namespace {

void set_error(char* error, size_t size, const std::string& message) {
    if (!error || size == 0) return;
    std::strncpy(error, message.c_str(), size - 1);
    error[size - 1] = '\0';
}

}  // namespace

extern "C" {

struct hra_spm {
    sentencepiece::SentencePieceProcessor sp;
};

hra_spm* hra_spm_open(const char* path, char* error, size_t error_size) {
    auto* h = new hra_spm;
    const auto status = h->sp.Load(path);
    if (!status.ok()) {
        set_error(error, error_size, status.ToString());
        delete h;
        return nullptr;
    }
    return h;
}

void hra_spm_close(hra_spm* h) { delete h; }
void hra_spm_free(void* p) { std::free(p); }

int64_t hra_spm_encode(hra_spm* h, const char* text, size_t length, int32_t** ids, char* error, size_t error_size) {
    std::vector<int> out;
    const auto status = h->sp.Encode(std::string(text, length), &out);
    if (!status.ok()) {
        set_error(error, error_size, status.ToString());
        return -1;
    }
    *ids = static_cast<int32_t*>(std::malloc(sizeof(int32_t) * (out.empty() ? 1 : out.size())));
    for (size_t i = 0; i < out.size(); ++i) (*ids)[i] = out[i];
    return static_cast<int64_t>(out.size());
}

int64_t hra_spm_decode(hra_spm* h, const int32_t* ids, size_t count, char** text, char* error, size_t error_size) {
    std::vector<int> in(ids, ids + count);
    std::string out;
    const auto status = h->sp.Decode(in, &out);
    if (!status.ok()) {
        set_error(error, error_size, status.ToString());
        return -1;
    }
    *text = static_cast<char*>(std::malloc(out.size() + 1));
    std::memcpy(*text, out.data(), out.size());
    (*text)[out.size()] = '\0';
    return static_cast<int64_t>(out.size());
}

int32_t hra_spm_size(hra_spm* h) { return h->sp.GetPieceSize(); }
int32_t hra_spm_bos(hra_spm* h) { return h->sp.bos_id(); }
int32_t hra_spm_eos(hra_spm* h) { return h->sp.eos_id(); }
int32_t hra_spm_unk(hra_spm* h) { return h->sp.unk_id(); }
// 0 normal (or user-defined), 1 control, 2 unknown, 3 byte, 4 unused
int32_t hra_spm_type(hra_spm* h, int32_t id) {
    if (h->sp.IsControl(id)) return 1;
    if (h->sp.IsUnknown(id)) return 2;
    if (h->sp.IsByte(id)) return 3;
    if (h->sp.IsUnused(id)) return 4;
    return 0;
}
float hra_spm_score(hra_spm* h, int32_t id) { return h->sp.GetScore(id); }

int64_t hra_spm_piece(hra_spm* h, int32_t id, char** piece) {
    const std::string& p = h->sp.IdToPiece(id);
    *piece = static_cast<char*>(std::malloc(p.size() + 1));
    std::memcpy(*piece, p.data(), p.size());
    (*piece)[p.size()] = '\0';
    return static_cast<int64_t>(p.size());
}

int32_t hra_spm_piece_id(hra_spm* h, const char* piece, size_t length) {
    return h->sp.PieceToId(std::string(piece, length));
}

// SentencePieceTrainer::Train with its command-line style arguments.
int hra_spm_train(const char* args, char* error, size_t error_size) {
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (!status.ok()) {
        set_error(error, error_size, status.ToString());
        return -1;
    }
    return 0;
}

}  // extern "C"
