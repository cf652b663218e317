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

void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write) {
    fs::path target(path);
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::string pattern = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0) throw Error(std::string("cannot create a temporary file: ") + std::strerror(errno), {path});
    close(fd);
    const std::string tmp(name.data());
    try {
        {
            std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
            if (!out) throw Error("cannot open temporary file " + tmp + " for writing", {path});
            errno = 0;
            write(out);
            out.flush();
            if (!out) throw Error(std::string("write failed: ") + (errno ? std::strerror(errno) : "disk full?"), {path});
            out.close();
            if (out.fail()) throw Error(std::string("write failed on close: ") + (errno ? std::strerror(errno) : "disk full?"), {path});
        }
        int sync_fd = open(tmp.c_str(), O_RDONLY);
        if (sync_fd >= 0) {
            fsync(sync_fd);
            close(sync_fd);
        }
        // mkstemp creates 0600; give the file the usual permissions.
        fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                 fs::perms::others_read);
        if (std::rename(tmp.c_str(), path.c_str()) != 0)
            throw Error(std::string("cannot rename the temporary file into place: ") + std::strerror(errno),
                        {path});
    } catch (const Error&) {
        std::remove(tmp.c_str());
        throw;
    } catch (const std::exception& e) {
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
