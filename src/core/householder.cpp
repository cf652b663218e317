#include "core/householder.h"

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "common/error.h"

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

// T = (½I + N)⁻¹ for the strictly upper part N of the Gram matrix, by back
// substitution on the CPU (r is small: 4 to 64): one loop instead of the five
// ops and a LAPACK call of wy_t(), which dominate a small layer's step.
template <class S>
at::Tensor unit_upper_inverse(const at::Tensor& gram) {
    const int64_t r = gram.size(0);
    auto g = gram.contiguous();
    auto t = at::zeros({r, r}, g.options());
    const S* a = g.data_ptr<S>();
    S* x = t.data_ptr<S>();
    // Column j of T solves (½I + N)·x = e_j; x_i = 0 below j.
    for (int64_t j = 0; j < r; ++j) {
        x[j * r + j] = S(2);
        for (int64_t i = j - 1; i >= 0; --i) {
            S acc = 0;
            for (int64_t k = i + 1; k <= j; ++k) acc += a[i * r + k] * x[k * r + j];
            x[i * r + j] = -S(2) * acc;
        }
    }
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

// rows' = rows − rows·V·M·Vᵀ for rows [n, d], V [d, r], M [r, r], with a
// hand-written backward: the same six skinny products autograd would run, but
// with the additions fused into them (addmm), so that forward and backward
// each create one n×d tensor instead of three. Gradients (G = ∂L/∂rows',
// P = rows·V, S = G·V):
//   ∂rows = G − (S·Mᵀ)·Vᵀ,  ∂V = −rowsᵀ·(S·Mᵀ) − Gᵀ·(P·M),  ∂M = −Pᵀ·S.
struct WyRows : public torch::autograd::Function<WyRows> {
    static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& rows, const at::Tensor& v,
                              const at::Tensor& m) {
        auto p = at::mm(rows, v);
        auto pm = at::mm(p, m);
        ctx->save_for_backward({rows, v, m, p, pm});
        return at::addmm(rows, pm, v.t(), /*beta=*/1, /*alpha=*/-1);
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads) {
        const auto saved = ctx->get_saved_variables();
        const auto &rows = saved[0], &v = saved[1], &m = saved[2], &p = saved[3], &pm = saved[4];
        const at::Tensor& g = grads[0];
        auto s = at::mm(g, v);
        auto smt = at::mm(s, m.t());
        at::Tensor grows, gv, gm;
        if (ctx->needs_input_grad(0)) grows = at::addmm(g, smt, v.t(), 1, -1);
        if (ctx->needs_input_grad(1)) gv = at::mm(rows.t(), smt).addmm_(g.t(), pm).neg_();
        if (ctx->needs_input_grad(2)) gm = at::mm(p.t(), s).neg_();
        return {grows, gv, gm};
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
