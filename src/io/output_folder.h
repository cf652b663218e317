// Output folders written whole or not at all: files go into a temporary
// sibling folder, which replaces the target on commit(). An existing
// non-empty target is refused unless overwriting was asked for.
#pragma once

#include <string>

namespace hra::io {

class OutputFolder {
public:
    // hra::Error when `target` exists, is not empty, and !overwrite.
    OutputFolder(std::string target, bool overwrite);
    ~OutputFolder();  // removes the temporary folder unless committed
    OutputFolder(const OutputFolder&) = delete;
    OutputFolder& operator=(const OutputFolder&) = delete;

    // Path of a file inside the temporary folder.
    std::string file(const std::string& name) const;
    const std::string& temp_path() const { return temp_; }
    // Moves the folder into place (the old target, if any, is removed).
    void commit();

private:
    std::string target_, temp_;
    bool overwrite_, committed_ = false;
};

}  // namespace hra::io
