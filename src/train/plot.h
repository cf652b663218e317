// A loss-curve plot as a self-contained SVG file.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "train/engine.h"

namespace hra {

// One line per named run (training loss per step), validation losses as dots.
std::string loss_curve_svg(const std::vector<std::pair<std::string, std::vector<StepRecord>>>& runs,
                           const std::string& title = "training loss");

}  // namespace hra
