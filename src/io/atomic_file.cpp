#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/error.h"

namespace hra::io {

namespace fs = std::filesystem;

namespace {

// An ostream buffer over a file descriptor that keeps the errno of the write(2) that failed, so
// the error names the OS's reason for this file (errno read after an ofstream failure can be a
// stale value from anything the writer did before).
class FdBuf : public std::streambuf {
public:
    explicit FdBuf(int fd) : fd_(fd), buf_(1 << 16) { setp(buf_.data(), buf_.data() + buf_.size()); }
    int error() const { return err_; }

protected:
    int_type overflow(int_type c) override {
        if (!drain()) return traits_type::eof();
        if (!traits_type::eq_int_type(c, traits_type::eof())) {
            *pptr() = traits_type::to_char_type(c);
            pbump(1);
        }
        return traits_type::not_eof(c);
    }
    int sync() override { return drain() ? 0 : -1; }

private:
    bool drain() {
        const char* p = pbase();
        while (p < pptr()) {
            const ssize_t n = ::write(fd_, p, static_cast<size_t>(pptr() - p));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                err_ = n < 0 ? errno : ENOSPC;  // write(2) returning 0 for a non-empty buffer: no room
                return false;
            }
            p += n;
        }
        setp(buf_.data(), buf_.data() + buf_.size());
        return true;
    }
    int fd_, err_ = 0;
    std::vector<char> buf_;
};

}  // namespace

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
    fs::path target(path);
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::string pattern = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkostemp(name.data(), O_CLOEXEC);  // not inherited by a child started meanwhile
    if (fd < 0) throw Error(std::string("cannot create a temporary file: ") + std::strerror(errno), {path});
    const std::string tmp(name.data());
    auto fail = [&](const std::string& what, int err) {
        return Error(what + ": " + (err ? std::strerror(err) : "unknown error"), {path});
    };
    try {
        FdBuf buf(fd);
        std::ostream out(&buf);
        write(out);
        out.flush();
        if (!out) throw fail("write failed", buf.error());
        if (fsync(fd) != 0 && errno != EINVAL) throw fail("write failed on fsync", errno);  // EINVAL: fsync unsupported (pipes)
        const int closed = close(fd);
        fd = -1;
        if (closed != 0) throw fail("write failed on close", errno);
        // mkstemp creates 0600; give the file the usual permissions.
        fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                 fs::perms::others_read);
        if (std::rename(tmp.c_str(), path.c_str()) != 0) throw fail("cannot rename the temporary file into place", errno);
    } catch (const Error&) {
        if (fd >= 0) close(fd);
        std::remove(tmp.c_str());
        throw;
    } catch (const std::exception& e) {
        if (fd >= 0) close(fd);
        std::remove(tmp.c_str());
        throw Error(std::string("write failed: ") + e.what(), {path});
    }
}

void write_file_atomically(const std::string& path, const std::string& content) {
    write_atomically(path, [&](std::ostream& out) { out.write(content.data(), std::streamsize(content.size())); });
}

std::string read_file(const std::string& path) {
    std::error_code ec;
    const auto status = fs::status(path, ec);
    if (!ec && fs::is_directory(status)) throw Error("is a folder, not a file", {path});
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(std::string("cannot open file: ") + std::strerror(errno), {path});
    if (!ec && fs::is_regular_file(status)) {
        std::ostringstream ss;
        ss << in.rdbuf();
        if (in.bad()) throw Error("read failed", {path});
        return ss.str();
    }
    // A device or a pipe (/dev/stdin, a FIFO) has no size to check first, and
    // /dev/zero never ends: read in chunks up to a bound.
    constexpr size_t kMaxStream = size_t{256} << 20;
    std::string out;
    std::vector<char> chunk(size_t{1} << 16);
    while (in.read(chunk.data(), static_cast<std::streamsize>(chunk.size())) || in.gcount() > 0) {
        out.append(chunk.data(), static_cast<size_t>(in.gcount()));
        if (out.size() > kMaxStream) throw Error("not a regular file, and longer than 256 MiB: refused", {path});
    }
    if (in.bad()) throw Error("read failed", {path});
    return out;
}

void make_dirs(const std::string& path) {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) throw Error("cannot create folder: " + ec.message(), {path});
}

}  // namespace hra::io
