#include "io/output_folder.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <vector>

#include "common/error.h"

namespace hra::io {

namespace fs = std::filesystem;

OutputFolder::OutputFolder(std::string target, bool overwrite) : target_(std::move(target)), overwrite_(overwrite) {
    std::error_code ec;
    if (fs::exists(target_, ec)) {
        if (!fs::is_directory(target_)) throw Error("output exists and is not a folder", {target_});
        if (!fs::is_empty(target_) && !overwrite_)
            throw Error("output folder exists and is not empty (use --force to replace it)", {target_});
    }
    fs::path t(target_);
    if (t.filename().empty()) t = t.parent_path();
    const fs::path parent = t.has_parent_path() ? t.parent_path() : fs::path(".");
    fs::create_directories(parent, ec);
    if (ec) throw Error("cannot create folder: " + ec.message(), {parent.string()});
    std::string pattern = (parent / ("." + t.filename().string() + ".tmp-XXXXXX")).string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw Error("cannot create a temporary folder beside the output", {target_});
    temp_ = buf.data();
}

OutputFolder::~OutputFolder() {
    if (committed_) return;
    std::error_code ec;
    fs::remove_all(temp_, ec);
}

std::string OutputFolder::file(const std::string& name) const { return (fs::path(temp_) / name).string(); }

void OutputFolder::commit() {
    std::error_code ec;
    fs::permissions(temp_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                               fs::perms::others_read | fs::perms::others_exec, ec);
    std::string old;
    if (fs::exists(target_)) {
        old = temp_ + ".old";
        fs::rename(target_, old, ec);
        if (ec) throw Error("cannot move the old output aside: " + ec.message(), {target_});
    }
    fs::rename(temp_, target_, ec);
    if (ec) {
        if (!old.empty()) fs::rename(old, target_);
        throw Error("cannot move the new output into place: " + ec.message(), {target_});
    }
    committed_ = true;
    if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace hra::io
