// Python's number parsing and comparison rules, for scoring code that was
// written in Python (the seed's GSM8K and MATH graders) and must be matched
// bug for bug: float(str), int(str), str.strip(), math.isclose.
#pragma once

#include <optional>
#include <string>

namespace hra::eval {

// float(s): surrounding whitespace, sign, digits (any Unicode decimal digit),
// '_' between digits, fraction, exponent, inf/infinity/nan. nullopt where
// Python raises ValueError.
std::optional<double> python_float(const std::string& s);
// int(s) in base 10, as its canonical decimal text (str(int(s))); nullopt on ValueError.
std::optional<std::string> python_int_text(const std::string& s);
// str.strip() (Unicode whitespace), and str.strip(chars) for ASCII chars.
std::string python_strip(const std::string& s);
std::string python_strip_chars(const std::string& s, const std::string& chars);
// math.isclose(a, b, rel_tol=rel_tol, abs_tol=0).
bool isclose(double a, double b, double rel_tol);
// Python's round(x) for a float (half to even), as a double holding the integer.
double python_round(double x);
// The value of one Unicode decimal digit (category Nd), else -1.
int unicode_digit(char32_t c);

std::u32string to_u32(const std::string& utf8);
std::string to_utf8(const std::u32string& s);

}  // namespace hra::eval
