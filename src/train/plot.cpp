#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace hra {

std::string loss_curve_svg(const std::vector<std::pair<std::string, std::vector<StepRecord>>>& runs,
                           const std::string& title) {
    const double W = 640, H = 400, left = 60, right = 150, top = 40, bottom = 50;
    double max_step = 1, lo = 1e30, hi = -1e30;
    for (const auto& [name, h] : runs)
        for (const auto& r : h) {
            max_step = std::max(max_step, static_cast<double>(r.step));
            for (double v : {r.loss, r.val_loss.value_or(r.loss)})
                if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
        }
    if (lo > hi) lo = 0, hi = 1;
    if (hi - lo < 1e-9) hi = lo + 1;
    auto x = [&](double s) { return left + (W - left - right) * s / max_step; };
    auto y = [&](double v) { return top + (H - top - bottom) * (hi - v) / (hi - lo); };
    const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};
    std::string svg;
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
                  "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                  W, H);
    svg += buf;
    std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s</text>\n", left, title.c_str());
    svg += buf;
    // Axes and ticks.
    std::snprintf(buf, sizeof buf, "<path d=\"M%.1f %.1f V%.1f H%.1f\" stroke=\"black\" fill=\"none\"/>\n", left, top,
                  H - bottom, W - right);
    svg += buf;
    for (int i = 0; i <= 4; ++i) {
        const double v = lo + (hi - lo) * i / 4, s = max_step * i / 4;
        std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", left - 6, y(v) + 4, v);
        svg += buf;
        std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", x(s), H - bottom + 18, s);
        svg += buf;
    }
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", (W - right + left) / 2,
                  H - 12);
    svg += buf;
    for (size_t k = 0; k < runs.size(); ++k) {
        const char* c = colours[k % 6];
        std::string path;
        for (const auto& r : runs[k].second) {
            if (!std::isfinite(r.loss)) continue;
            std::snprintf(buf, sizeof buf, "%s%.1f %.1f ", path.empty() ? "M" : "L", x(static_cast<double>(r.step)), y(r.loss));
            path += buf;
        }
        svg += "<path d=\"" + path + "\" stroke=\"" + c + "\" fill=\"none\" stroke-width=\"1.2\"/>\n";
        for (const auto& r : runs[k].second)
            if (r.val_loss) {
                std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\" stroke=\"black\"/>\n",
                              x(static_cast<double>(r.step)), y(*r.val_loss), c);
                svg += buf;
            }
        std::snprintf(buf, sizeof buf,
                      "<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"3\" fill=\"%s\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                      W - right + 12, top + 20.0 * static_cast<double>(k) + 6, c, W - right + 30,
                      top + 20.0 * static_cast<double>(k) + 10, runs[k].first.c_str());
        svg += buf;
    }
    std::snprintf(buf, sizeof buf, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#555\">dots: validation</text>\n", W - right + 12,
                  top + 20.0 * static_cast<double>(runs.size()) + 10);
    svg += buf;
    return svg + "</svg>\n";
}

}  // namespace hra
