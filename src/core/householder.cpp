#include "core/householder.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/error.h"
#include "core/skinny_gemm.h"

namespace hra::core {

namespace {

// An identity in the dtype and device of `like` (built in float32 first, as
// PEFT does: libtorch 1.13 has no eye for half types).
at::Tensor identity_like(int64_t n, const at::Tensor& like) {
    return at::eye(n, like.options().dtype(at::kFloat).requires_grad(false)).to(like.scalar_type());
}

}  // namespace

at::Tensor normalize_columns(const at::Tensor& u) {
    return u / u.norm(2, {0}, /*keepdim=*/true);
}

at::Tensor gram_schmidt(const at::Tensor& u) {
    const int64_t r = u.size(1);
    std::vector<at::Tensor> q;
    q.reserve(r);
    auto u0 = u.select(1, 0).view({-1, 1});
    q.push_back(u0 / u0.norm());
    for (int64_t i = 1; i < r; ++i) {
        auto v = u.select(1, i).view({-1, 1});
        for (int64_t j = 0; j < i; ++j) v = v - at::mm(q[j].t(), v) * q[j];
        q.push_back(v / v.norm());
    }
    return at::cat(q, 1);
}

at::Tensor wy_t(const at::Tensor& v) {
    const auto dtype = v.scalar_type();
    const auto work = (dtype == at::kDouble) ? at::kDouble : at::kFloat;
    auto vw = v.to(work);
    const int64_t r = vw.size(1);
    auto gram = at::mm(vw.t(), vw);
    auto eye = at::eye(r, vw.options().requires_grad(false));
    auto t_inv = gram.triu(1) + 0.5 * eye;
    return at::linalg_solve_triangular(t_inv, eye, /*upper=*/true).to(dtype);
}

namespace {

// T = (½I + N)⁻¹ for the strictly upper part N of a row-major [r, r] Gram matrix `a`,
// by back substitution (r is small: 4 to 64): one loop instead of the five ops and a
// LAPACK call of wy_t(), which dominate a small layer's step. Writes the upper triangle
// of `x`; its strictly lower part must be zero already.
template <class A, class X>
void unit_upper_inverse_into(const A* a, X* x, int64_t r) {
    // Column j of T solves (½I + N)·x = e_j; x_i = 0 below j.
    for (int64_t j = 0; j < r; ++j) {
        x[j * r + j] = X(2);
        for (int64_t i = j - 1; i >= 0; --i) {
            X acc = 0;
            for (int64_t k = i + 1; k <= j; ++k) acc += a[i * r + k] * x[k * r + j];
            x[i * r + j] = -X(2) * acc;
        }
    }
}

template <class S>
at::Tensor unit_upper_inverse(const at::Tensor& gram) {
    const int64_t r = gram.size(0);
    auto g = gram.contiguous();
    auto t = at::zeros({r, r}, g.options());
    unit_upper_inverse_into(g.data_ptr<S>(), t.data_ptr<S>(), r);
    return t;
}

// V = U/‖U‖ (per column) and T = (½I + triu(VᵀV, 1))⁻¹ as one autograd node with
// a hand-written backward (gT: ∂L/∂T, gV: ∂L/∂V):
//   ∂L/∂T⁻¹ = −Tᵀ·gT·Tᵀ,  ∂L/∂G = its strictly upper part,  gV += V·(∂G + ∂Gᵀ),
//   ∂L/∂U = (gV − V·diag(Vᵀ·gV)) / ‖U‖.
struct WyFactors : public torch::autograd::Function<WyFactors> {
    static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& u) {
        auto n = u.norm(2, {0}, /*keepdim=*/true);
        auto v = u / n;
        auto gram = at::mm(v.t(), v);
        auto t = u.scalar_type() == at::kDouble ? unit_upper_inverse<double>(gram) : unit_upper_inverse<float>(gram);
        ctx->save_for_backward({v, n, t});
        return {v, t};
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &v = saved[0], &n = saved[1], &t = saved[2];
        at::Tensor gv = grads[0].defined() ? grads[0] : at::zeros_like(v);
        if (grads[1].defined()) {
            auto gg = at::mm(at::mm(t.t(), grads[1]), t.t()).neg_().triu_(1);
            gv = at::addmm(gv, v, gg + gg.t());
        }
        auto gu = (gv - v * (gv * v).sum(0, /*keepdim=*/true)) / n;
        return {gu};
    }
};

}  // namespace

Reflector make_reflector(const at::Tensor& u, bool gs) {
    if (u.dim() != 2 || u.size(1) < 1)
        throw Error("Householder vectors must be a [d, r] matrix with r >= 1, got shape " +
                    c10::str(u.sizes()));
    if (gs) {
        auto q = gram_schmidt(u);
        return {q, 2.0 * identity_like(u.size(1), u)};
    }
    if (u.is_cpu() && (u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble)) {
        auto f = WyFactors::apply(u);
        return {f[0], f[1]};
    }
    auto v = normalize_columns(u);
    return {v, wy_t(v)};
}

namespace {

// The products of rows' = rows − rows·V·M·Vᵀ for rows [n, d], V [d, r], M [r, r], shared by
// WyRows (V, M = the normalised vectors and T) and HouseholderRows (V = U, M = K): every
// skinny product goes through skinny_gemm, and the additions are fused into them (addmm),
// so that forward and backward each create one n×d tensor instead of three.
// Gradients (G = ∂L/∂rows', P = rows·V, S = G·V):
//   ∂rows = G − (S·Mᵀ)·Vᵀ,  ∂V = −rowsᵀ·(S·Mᵀ) − Gᵀ·(P·M),  ∂M = −Pᵀ·S.
struct RowsForward {
    at::Tensor p, pm, out;  // P, P·M, rows'
};

RowsForward rows_forward(const at::Tensor& rows, const at::Tensor& v, const at::Tensor& m) {
    RowsForward f;
    f.p = mm_by_rows(rows, v);
    f.pm = at::mm(f.p, m);
    f.out = addmm_by_rows(rows, f.pm, v.t(), /*beta=*/1, /*alpha=*/-1);
    return f;
}

struct RowsBackward {
    at::Tensor s, rows, v;  // S (for ∂M = −Pᵀ·S), ∂rows and ∂V (undefined when not asked for)
};

RowsBackward rows_backward(const at::Tensor& g, const at::Tensor& rows, const at::Tensor& v, const at::Tensor& m,
                           const at::Tensor& pm, bool want_rows, bool want_v) {
    RowsBackward b;
    b.s = mm_by_rows(g, v);
    auto smt = at::mm(b.s, m.t());
    if (want_rows) b.rows = addmm_by_rows(g, smt, v.t(), 1, -1);
    if (want_v) b.v = addmm_by_rows(mm_by_rows(rows.t(), smt), g.t(), pm, /*beta=*/-1, /*alpha=*/-1);
    return b;
}

// rows' as one autograd node from rows, V and M.
struct WyRows : public torch::autograd::Function<WyRows> {
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& v,
                              const at::Tensor& m) {
        auto f = rows_forward(rows, v, m);
        ctx->save_for_backward({rows, v, m, f.p, f.pm});
        return f.out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &rows = saved[0], &v = saved[1], &m = saved[2], &p = saved[3], &pm = saved[4];
        auto b = rows_backward(grads[0], rows, v, m, pm, ctx->needs_input_grad(0), ctx->needs_input_grad(1));
        at::Tensor gm;
        if (ctx->needs_input_grad(2)) gm = at::mm(p.t(), b.s).neg_();
        return {b.rows, b.v, gm};
    }
};

}  // namespace

at::Tensor apply_to_rows(const at::Tensor& rows, const Reflector& h, bool transpose) {
    auto v = h.v.to(rows.scalar_type());
    auto t = h.t.to(rows.scalar_type());
    // rows·Hᵀ = rows − rows·V·Tᵀ·Vᵀ ; rows·H = rows − rows·V·T·Vᵀ
    const int64_t d = rows.size(-1);
    auto flat = rows.reshape({-1, d});
    auto out = WyRows::apply(flat, v, transpose ? t : t.t());
    return out.view(rows.sizes());
}

namespace {

// The r×r part of rows·Hᵀ computed straight from U (see apply_householder_rows),
// in double on the CPU: from the Gram matrix G = UᵀU, the column norms
// n_i = √G_ii, the normalised Gram Ĝ_ij = G_ij/(n_i n_j) (strictly upper part),
// T = (½I + Ĝ)⁻¹, M = Tᵀ (rows·Hᵀ) or T (rows·H), and K = D⁻¹·M·D⁻¹ with
// D = diag(n), so that V·M·Vᵀ = U·K·Uᵀ for V = U·D⁻¹.
// One double buffer keeps, for the backward, n, Ĝ, T and K: [r + 3·r·r].
struct GramView {
    double *n, *unit_gram, *t, *k;
    GramView(const at::Tensor& buf, int64_t r)
        : n(buf.data_ptr<double>()), unit_gram(n + r), t(unit_gram + r * r), k(t + r * r) {}
};

// Fills `buf` from the Gram matrix and returns K in G's dtype.
template <class S>
at::Tensor gram_factors(const at::Tensor& gram, at::Tensor& buf, bool transpose) {
    const int64_t r = gram.size(0);
    auto gc = gram.contiguous();
    const S* g = gc.data_ptr<S>();
    buf = at::empty({r + 3 * r * r}, gram.options().dtype(at::kDouble));
    GramView f(buf, r);
    std::fill(f.unit_gram, f.k, 0.0);  // Ĝ's lower part and T's are zero
    for (int64_t i = 0; i < r; ++i) f.n[i] = std::sqrt(static_cast<double>(g[i * r + i]));
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = i + 1; j < r; ++j) f.unit_gram[i * r + j] = static_cast<double>(g[i * r + j]) / (f.n[i] * f.n[j]);
    unit_upper_inverse_into(f.unit_gram, f.t, r);
    auto k = at::empty({r, r}, gram.options());
    S* ks = k.data_ptr<S>();
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j) {
            const double kij = (transpose ? f.t[i * r + j] : f.t[j * r + i]) / (f.n[i] * f.n[j]);
            f.k[i * r + j] = kij;
            ks[i * r + j] = static_cast<S>(kij);
        }
    return k;
}

// ∂L/∂K = −PᵀS from PᵀS → ∂L/∂G, returned as ∂L/∂G + (∂L/∂G)ᵀ, in `pts`'s dtype, so that
// ∂L/∂U gains U·(that):
//   ∂M_ij = ∂K_ij/(n_i n_j); ∂T = ∂M or ∂Mᵀ; ∂(T⁻¹) = −Tᵀ·∂T·Tᵀ, whose strictly
//   upper part is ∂Ĝ; ∂G_ij = ∂Ĝ_ij/(n_i n_j) for i < j; every n_i collects
//   −∂K_ij·K_ij/n_i − ∂K_ji·K_ji/n_i − Σ ∂Ĝ·Ĝ/n_i alike, and ∂G_ii = ∂n_i/(2 n_i).
template <class S>
at::Tensor gram_factors_backward(const at::Tensor& pts, const at::Tensor& buf, bool transpose) {
    const int64_t r = pts.size(0);
    auto pc = pts.contiguous();
    const S* ps = pc.data_ptr<S>();
    const GramView f(buf, r);
    std::vector<double> gn(r, 0.0), gt(r * r), tmp(r * r, 0.0);
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j) {
            const double gk = -static_cast<double>(ps[i * r + j]);
            const double c = gk * f.k[i * r + j];
            gn[i] -= c / f.n[i];
            gn[j] -= c / f.n[j];
            (transpose ? gt[i * r + j] : gt[j * r + i]) = gk / (f.n[i] * f.n[j]);
        }
    // tmp = ∂T·Tᵀ, then ∂(T⁻¹)_ij = −Σ_k T_ki·tmp_kj (T is upper-triangular).
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < r; ++j) {
            double acc = 0;
            for (int64_t l = j; l < r; ++l) acc += gt[i * r + l] * f.t[j * r + l];
            tmp[i * r + j] = acc;
        }
    auto out = at::empty({r, r}, pts.options());
    S* go = out.data_ptr<S>();
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = i + 1; j < r; ++j) {
            double acc = 0;
            for (int64_t l = 0; l <= i; ++l) acc += f.t[l * r + i] * tmp[l * r + j];
            const double gug = -acc;  // ∂Ĝ_ij
            const double c = gug * f.unit_gram[i * r + j];
            gn[i] -= c / f.n[i];
            gn[j] -= c / f.n[j];
            const double gg = gug / (f.n[i] * f.n[j]);
            go[i * r + j] = static_cast<S>(gg);
            go[j * r + i] = static_cast<S>(gg);
        }
    for (int64_t i = 0; i < r; ++i) go[i * r + i] = static_cast<S>(gn[i] / f.n[i]);  // 2 · ∂n_i/(2 n_i)
    return out;
}

// rows − rows·U·K·Uᵀ as one autograd node from rows [n, d] and U [d, r]: no
// normalised copy of U, no separate node for the factors, the products of
// rows_forward / rows_backward with V = U and M = K, and
// ∂U = −rowsᵀ·(S·Kᵀ) − Gᵀ·(P·K) + U·(∂G + ∂Gᵀ) with ∂K = −Pᵀ·S.
struct HouseholderRows : public torch::autograd::Function<HouseholderRows> {
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& u,
                              bool transpose) {
        at::Tensor buf;
        auto gram = mm_by_rows(u.t(), u);
        auto k = u.scalar_type() == at::kDouble ? gram_factors<double>(gram, buf, transpose)
                                                : gram_factors<float>(gram, buf, transpose);
        auto f = rows_forward(rows, u, k);
        ctx->save_for_backward({rows, u, k, f.p, f.pm, buf});
        ctx->saved_data["transpose"] = transpose;
        return f.out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &rows = saved[0], &u = saved[1], &k = saved[2], &p = saved[3], &pk = saved[4];
        const bool want_u = ctx->needs_input_grad(1);
        auto b = rows_backward(grads[0], rows, u, k, pk, ctx->needs_input_grad(0), want_u);
        if (want_u) {
            const bool transpose = ctx->saved_data["transpose"].toBool();
            auto pts = at::mm(p.t(), b.s);
            auto gsym = u.scalar_type() == at::kDouble ? gram_factors_backward<double>(pts, saved[5], transpose)
                                                       : gram_factors_backward<float>(pts, saved[5], transpose);
            b.v = addmm_by_rows(b.v, u, gsym, 1, 1);
        }
        return {b.rows, b.v, at::Tensor()};
    }
};

}  // namespace

at::Tensor apply_householder_rows(const at::Tensor& rows, const at::Tensor& u, bool transpose) {
    if (u.dim() != 2 || u.size(1) < 1)
        throw Error("Householder vectors must be a [d, r] matrix with r >= 1, got shape " + c10::str(u.sizes()));
    const auto dtype = u.scalar_type();
    if (!u.is_cpu() || !rows.is_cpu() || rows.scalar_type() != dtype || (dtype != at::kFloat && dtype != at::kDouble))
        return apply_to_rows(rows, make_reflector(u, false), transpose);
    if (rows.dim() == 2) return HouseholderRows::apply(rows, u, transpose);  // no view nodes to record and replay
    const int64_t d = rows.size(-1);
    auto flat = rows.reshape({-1, d});
    return HouseholderRows::apply(flat, u, transpose).view(rows.sizes());
}

at::Tensor apply_to_weight(const at::Tensor& w, const Reflector& h, bool transpose) {
    auto v = h.v.to(w.scalar_type());
    auto t = h.t.to(w.scalar_type());
    // W·H = W - (W·V)·T·Vᵀ ; W·Hᵀ = W - (W·V)·Tᵀ·Vᵀ
    auto p = at::mm(at::mm(w, v), transpose ? t.t() : t);
    return w - at::mm(p, v.t());
}

at::Tensor materialize(const Reflector& h, bool transpose) {
    return apply_to_weight(identity_like(h.v.size(0), h.v), h, transpose);
}

at::Tensor reference_matrix(const at::Tensor& u, bool gs, bool reverse) {
    const int64_t d = u.size(0), r = u.size(1);
    if (gs) {
        auto q = gram_schmidt(u);
        return identity_like(d, u) - 2 * at::mm(q, q.t());
    }
    auto un = u / u.norm(2, {0});
    auto w = identity_like(d, u);
    for (int64_t k = 0; k < r; ++k) {
        const int64_t i = reverse ? r - 1 - k : k;
        auto ui = un.select(1, i).view({-1, 1});
        w = w - 2 * at::mm(at::mm(w, ui), ui.t());
    }
    return w;
}

at::Tensor orthogonality_penalty(const at::Tensor& u, PenaltyForm form) {
    auto un = normalize_columns(u);
    auto diff = identity_like(u.size(1), u) - at::mm(un.t(), un);
    // The unsquared form goes through norm(), whose gradient is defined (zero) at zero.
    return form == PenaltyForm::Squared ? (diff * diff).sum() : diff.norm();
}

PenaltyForm parse_penalty_form(const std::string& name) {
    if (name == "squared") return PenaltyForm::Squared;
    if (name == "frobenius") return PenaltyForm::Frobenius;
    throw Error("unknown orthogonality penalty form '" + name + "' (expected 'squared' or 'frobenius')");
}

const char* penalty_form_name(PenaltyForm form) {
    return form == PenaltyForm::Squared ? "squared" : "frobenius";
}

}  // namespace hra::core
