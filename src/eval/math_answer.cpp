#include "eval/math_answer.h"

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include <ginac/ginac.h>

#include "common/error.h"
#include "eval/python_num.h"

namespace hra::eval {

namespace {

// The seed raised here (IndexError, ValueError, AssertionError outside a handler).
struct SeedException : std::runtime_error {
    using std::runtime_error::runtime_error;
};

using U = std::u32string;

U u(const char* s) { return to_u32(s); }

U replace_all(const U& s, const U& from, const U& to) {
    if (from.empty()) return s;
    U out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(from, pos)) != U::npos; pos = hit + from.size()) out += s.substr(pos, hit - pos) + to;
    return out + s.substr(pos);
}

std::vector<U> split(const U& s, const U& sep) {
    std::vector<U> out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(sep, pos)) != U::npos; pos = hit + sep.size()) out.push_back(s.substr(pos, hit - pos));
    out.push_back(s.substr(pos));
    return out;
}

U fix_fracs(const U& string) {
    auto substrs = split(string, u("\\frac"));
    U new_str = substrs[0];
    if (substrs.size() > 1) {
        for (size_t k = 1; k < substrs.size(); ++k) {
            const U& substr = substrs[k];
            new_str += u("\\frac");
            if (substr.empty()) throw SeedException("IndexError in fix_fracs");
            if (substr[0] == '{') {
                new_str += substr;
            } else {
                if (substr.size() < 2) return string;  // the assert's handler returns the input
                const U a(1, substr[0]), b(1, substr[1]);
                if (b != u("{")) {
                    new_str += u("{") + a + u("}{") + b + u("}") + (substr.size() > 2 ? substr.substr(2) : U());
                } else {
                    new_str += u("{") + a + u("}") + b + (substr.size() > 2 ? substr.substr(2) : U());
                }
            }
        }
    }
    return new_str;
}

U fix_a_slash_b(const U& string) {
    const auto parts = split(string, u("/"));
    if (parts.size() != 2) return string;
    // int(a), int(b): a ValueError propagated out of strip_string in the seed.
    auto a = python_int_text(to_utf8(parts[0])), b = python_int_text(to_utf8(parts[1]));
    if (!a || !b) throw SeedException("ValueError in fix_a_slash_b");
    if (string != to_u32(*a + "/" + *b)) return string;
    return to_u32("\\frac{" + *a + "}{" + *b + "}");
}

U remove_right_units(const U& string) {
    if (string.find(u("\\text{ ")) != U::npos) {
        auto splits = split(string, u("\\text{ "));
        if (splits.size() != 2) throw SeedException("AssertionError in remove_right_units");
        return splits[0];
    }
    return string;
}

U fix_sqrt(const U& string) {
    if (string.find(u("\\sqrt")) == U::npos) return string;
    auto splits = split(string, u("\\sqrt"));
    U new_string = splits[0];
    for (size_t k = 1; k < splits.size(); ++k) {
        const U& s = splits[k];
        if (s.empty()) throw SeedException("IndexError in fix_sqrt");
        if (s[0] != '{') new_string += u("\\sqrt{") + U(1, s[0]) + u("}") + s.substr(1);
        else new_string += u("\\sqrt") + s;
    }
    return new_string;
}

// ----- symbolic equality on the Python-syntax subset, with GiNaC

struct ExprParser {
    const std::string& s;
    size_t i = 0;
    GiNaC::symtab& symbols;

    void skip() {
        while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    }
    bool eat(const char* tok) {
        skip();
        const size_t n = std::strlen(tok);
        if (s.compare(i, n, tok) != 0) return false;
        if (n == 1 && tok[0] == '*' && i + 1 < s.size() && s[i + 1] == '*') return false;  // '*' is not '**'
        i += n;
        return true;
    }
    GiNaC::ex expr() {
        GiNaC::ex v = term();
        while (true) {
            if (eat("+")) v = v + term();
            else if (eat("-")) v = v - term();
            else return v;
        }
    }
    GiNaC::ex term() {
        GiNaC::ex v = unary();
        while (true) {
            if (eat("*")) v = v * unary();
            else if (eat("/")) v = v / unary();
            else return v;
        }
    }
    GiNaC::ex unary() {
        if (eat("-")) return -unary();
        if (eat("+")) return unary();
        return power();
    }
    GiNaC::ex power() {
        GiNaC::ex base = atom();
        if (!eat("**")) return base;
        GiNaC::ex e = unary();  // right-associative, binds tighter than unary minus on the left
        check_power_size(base, e);
        GiNaC::ex p = GiNaC::pow(base, e);
        check_expansion_size(p);
        return p;
    }
    // GiNaC evaluates powers at once and CLN converts a float exponent's integer part
    // to an exact integer: "6 ** -3 ** 91" computed 6^(3^91) (a hang) and
    // "1.61**-33**37**6." (from strip_string, which drops spaces) built 33^(37^6) as a
    // float, whose integer part took 1.6 GB (both fuzz_answers finds). An exponent whose
    // numeric value exceeds 100,000 in magnitude, or a power of an exact number above
    // about a million bits (whatever kind of number the exponent is), is refused (not an
    // answer); no MATH answer comes near either.
    static double magnitude(const GiNaC::ex& e) {
        const GiNaC::ex v = GiNaC::evalf(e);
        if (!GiNaC::is_a<GiNaC::numeric>(v)) return 0;  // symbolic: never evaluated to a number
        return GiNaC::abs(GiNaC::ex_to<GiNaC::numeric>(v)).to_double();
    }
    static void check_power_size(const GiNaC::ex& base, const GiNaC::ex& e) {
        const double k = magnitude(e);
        if (!(k <= 1e5)) throw std::runtime_error("exponent too large");
        if (!GiNaC::is_a<GiNaC::numeric>(base)) return;
        const auto b = GiNaC::ex_to<GiNaC::numeric>(base);
        if (!b.is_rational()) return;
        const double bits = static_cast<double>(b.numer().int_length()) + static_cast<double>(b.denom().int_length());
        if (!(bits * k <= 1e6)) throw std::runtime_error("power too large");
    }
    // A power of an expression ("(x+1)**100000", "(1+sqrt(2))**100000", or nested powers GiNaC
    // multiplies out) that expand() would turn into a huge sum: exponents above 100 refused.
    static void check_expansion_size(const GiNaC::ex& p) {
        if (!GiNaC::is_a<GiNaC::power>(p)) return;
        const GiNaC::ex& base = p.op(0);
        if (GiNaC::is_a<GiNaC::symbol>(base) || GiNaC::is_a<GiNaC::numeric>(base)) return;
        if (!(magnitude(p.op(1)) <= 100)) throw std::runtime_error("power of an expression too large to expand");
    }
    GiNaC::ex atom() {
        skip();
        if (eat("(")) {
            GiNaC::ex v = expr();
            if (!eat(")")) throw std::runtime_error("missing )");
            return v;
        }
        if (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) {
            const size_t b = i;
            while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
            bool decimal = false;
            if (i < s.size() && s[i] == '.') {
                decimal = true;
                ++i;
                while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
            }
            const std::string num = s.substr(b, i - b);
            if (num == ".") throw std::runtime_error("bad number");
            if (!decimal) return GiNaC::numeric(num.c_str());
            // A Python float literal: a floating-point GiNaC number.
            return GiNaC::numeric(std::strtod(num.c_str(), nullptr));
        }
        if (i < s.size() && (std::isalpha(static_cast<unsigned char>(s[i])) || s[i] == '_')) {
            const size_t b = i;
            while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
            const std::string name = s.substr(b, i - b);
            if (eat("(")) {
                GiNaC::ex arg = expr();
                if (!eat(")")) throw std::runtime_error("missing )");
                if (name == "sqrt") return GiNaC::sqrt(arg);
                // exp and the periodic functions of huge arguments (argument reduction at
                // the argument's full precision) are refused like huge exponents.
                if (name != "log" && !(magnitude(arg) <= 1e5)) throw std::runtime_error("argument too large");
                if (name == "exp") return GiNaC::exp(arg);
                if (name == "log") return GiNaC::log(arg);
                if (name == "sin") return GiNaC::sin(arg);
                if (name == "cos") return GiNaC::cos(arg);
                if (name == "tan") return GiNaC::tan(arg);
                throw std::runtime_error("unsupported function " + name);
            }
            if (name == "pi") return GiNaC::Pi;
            auto it = symbols.find(name);
            if (it == symbols.end()) it = symbols.emplace(name, GiNaC::symbol(name)).first;
            return it->second;
        }
        throw std::runtime_error("unexpected character");
    }
};

std::optional<GiNaC::ex> parse_python_expr(const std::string& s, GiNaC::symtab& symbols) {
    try {
        ExprParser p{s, 0, symbols};
        GiNaC::ex v = p.expr();
        p.skip();
        if (p.i != s.size()) return std::nullopt;
        return v;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// A check that GiNaC cannot carry out (division by zero, ...) counts as "not
// shown equal", as the seed's `try: ... except: pass` around sympy.
template <class Check>
bool shown(Check check) {
    try {
        return check();
    } catch (const std::exception&) {
        return false;
    }
}

bool symbolic_equal(const std::string& a, const std::string& b) {
    GiNaC::symtab symbols;
    auto ea = parse_python_expr(a, symbols), eb = parse_python_expr(b, symbols);
    if (!ea || !eb) return false;
    if (shown([&] { return GiNaC::normal(GiNaC::expand(*ea - *eb)).is_zero(); })) return true;
    return shown([&] {
        GiNaC::ex na = GiNaC::evalf(*ea), nb = GiNaC::evalf(*eb);
        if (!GiNaC::is_a<GiNaC::numeric>(na) || !GiNaC::is_a<GiNaC::numeric>(nb)) return false;
        const auto& x = GiNaC::ex_to<GiNaC::numeric>(na);
        const auto& y = GiNaC::ex_to<GiNaC::numeric>(nb);
        return x.is_real() && y.is_real() && isclose(x.to_double(), y.to_double(), 1e-3);
    });
}

bool starts(const std::string& s, char c) { return !s.empty() && s.front() == c; }
bool ends(const std::string& s, char c) { return !s.empty() && s.back() == c; }

std::string remove_chars(std::string s, const std::string& chars) {
    std::string out;
    for (char c : s)
        if (chars.find(c) == std::string::npos) out.push_back(c);
    return out;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(',', pos)) != std::string::npos; pos = hit + 1) out.push_back(s.substr(pos, hit - pos));
    out.push_back(s.substr(pos));
    return out;
}

// Python's slicing s[1:-1] on code points.
std::string inner(const std::string& s) {
    U x = to_u32(s);
    if (x.size() < 2) return "";
    return to_utf8(x.substr(1, x.size() - 2));
}

}  // namespace

std::optional<std::string> last_boxed_only_string(const std::string& string) {
    size_t idx = string.rfind("\\boxed");
    if (idx == std::string::npos) {
        idx = string.rfind("\\fbox");
        if (idx == std::string::npos) return std::nullopt;
    }
    int open = 0;
    for (size_t i = idx; i < string.size(); ++i) {
        if (string[i] == '{') ++open;
        if (string[i] == '}') {
            --open;
            if (open == 0) return string.substr(idx, i + 1 - idx);
        }
    }
    return std::nullopt;
}

std::optional<std::string> remove_boxed(const std::string& s) {
    const std::string left = "\\boxed{";
    if (s.compare(0, left.size(), left) != 0 || s.size() < left.size() || s.back() != '}') return std::nullopt;
    return s.substr(left.size(), s.size() - left.size() - 1);
}

std::string strip_string(const std::string& input) {
    U s = to_u32(input);
    s = replace_all(s, u("\n"), u(""));
    s = replace_all(s, u("\\!"), u(""));
    s = replace_all(s, u("\\\\"), u("\\"));
    s = replace_all(s, u("tfrac"), u("frac"));
    s = replace_all(s, u("dfrac"), u("frac"));
    s = replace_all(s, u("\\left"), u(""));
    s = replace_all(s, u("\\right"), u(""));
    s = replace_all(s, u("^{\\circ}"), u(""));
    s = replace_all(s, u("^\\circ"), u(""));
    s = replace_all(s, u("\\$"), u(""));
    s = remove_right_units(s);
    s = replace_all(s, u("\\%"), u(""));
    s = replace_all(s, u(" ."), u(" 0."));
    s = replace_all(s, u("{."), u("{0."));
    if (s.empty()) return "";
    if (s[0] == '.') s = u("0") + s;
    const auto eq = split(s, u("="));
    if (eq.size() == 2 && eq[0].size() <= 2) s = eq[1];
    s = fix_sqrt(s);
    s = replace_all(s, u(" "), u(""));
    s = fix_fracs(s);
    if (s == u("0.5")) s = u("\\frac{1}{2}");
    s = fix_a_slash_b(s);
    return to_utf8(s);
}

bool math_equal(const std::string& prediction_in, const std::string& reference_in) {
    // 1. numerical equality (with 1/100 and 100x of the reference accepted)
    auto pn = python_float(remove_chars(prediction_in, ","));
    auto rn = python_float(remove_chars(reference_in, ","));
    if (pn && rn) {
        for (double item : {*rn / 100, *rn, *rn * 100})
            if (isclose(item, *pn, 1e-4)) return true;
        return false;
    }
    if (prediction_in.empty()) return false;
    // 2. symbolic equality
    const std::string reference = python_strip(reference_in), prediction = python_strip(prediction_in);
    std::string pred_str = prediction, ref_str = reference;
    if ((starts(prediction, '[') && ends(prediction, ']') && !starts(reference, '(')) ||
        (starts(prediction, '(') && ends(prediction, ')') && !starts(reference, '['))) {
        pred_str = python_strip_chars(pred_str, "[]()");
        ref_str = python_strip_chars(ref_str, "[]()");
    }
    ref_str = remove_chars(ref_str, "{}()");
    pred_str = remove_chars(pred_str, "{}()");
    if (pred_str == ref_str) return true;
    if ((starts(prediction, '[') && ends(prediction, ']') && starts(reference, '[') && ends(reference, ']')) ||
        (starts(prediction, '(') && ends(prediction, ')') && starts(reference, '(') && ends(reference, ')'))) {
        const auto pp = split_commas(inner(prediction)), rp = split_commas(inner(reference));
        if (pp.size() == rp.size()) {
            bool all = true;
            for (size_t i = 0; i < pp.size() && all; ++i) all = math_equal(pp[i], rp[i]);
            if (all) return true;
        }
    }
    return symbolic_equal(prediction, reference);
}

bool is_equiv(const std::string& str1, const std::string& str2, Protocol protocol) {
    try {
        const std::string ss1 = strip_string(str1), ss2 = strip_string(str2);
        return math_equal(ss1, ss2) || ss1 == ss2;
    } catch (const SeedException&) {
        if (protocol == Protocol::Seed) return math_equal(str1, str1) || str1 == str2;
        return math_equal(str1, str2) || str1 == str2;
    }
}

std::optional<std::string> math_extract(const std::string& completion) {
    const std::string marker = "The answer is: ";
    const size_t at = completion.rfind(marker);
    if (at == std::string::npos) return std::nullopt;
    std::string ans = completion.substr(at + marker.size());
    const size_t cut = ans.find(".\n");
    if (cut != std::string::npos) ans = ans.substr(0, cut);
    ans = python_strip(ans);
    if (!ans.empty() && ans.back() == '.') ans.pop_back();
    return python_strip(ans);
}

MathScore math_score(const std::string& completion, const std::string& solution, Protocol protocol) {
    MathScore s;
    auto boxed = last_boxed_only_string(solution);
    auto ref = boxed ? remove_boxed(*boxed) : std::nullopt;
    s.reference = ref.value_or("");
    auto pred = math_extract(completion);
    if (!pred) return s;
    s.extracted = *pred;
    // is_equiv(extract_ans, None) is False in the seed: a solution without \boxed{} scores nothing.
    if (!ref) return s;
    s.correct = is_equiv(*pred, *ref, protocol);
    return s;
}

}  // namespace hra::eval
