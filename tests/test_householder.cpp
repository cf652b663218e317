// Properties of the Householder math in core/, checked against independent
// constructions (explicit products of reflections, the paper's Γ recursion,
// QR) and finite differences.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/householder.h"
#include "core/skinny_gemm.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;
using hra::test::rel_err;

namespace {

torch::Tensor random_u(int64_t d, int64_t r, uint64_t seed = 0) {
    torch::manual_seed(seed);
    return torch::randn({d, r}, torch::kDouble);
}

// Π_i (I − 2 û_i û_iᵀ), built factor by factor (independent of the PEFT loop and of WY).
torch::Tensor explicit_product(const torch::Tensor& u) {
    const int64_t d = u.size(0);
    auto h = torch::eye(d, u.options());
    for (int64_t i = 0; i < u.size(1); ++i) {
        auto v = u.select(1, i) / u.select(1, i).norm();
        h = torch::mm(h, torch::eye(d, u.options()) - 2 * torch::outer(v, v));
    }
    return h;
}

// The paper's Eq. 3-4 recursion for Γ (H = I + UΓUᵀ with unit columns): T = −Γ.
torch::Tensor gamma_recursion(const torch::Tensor& un) {
    const int64_t r = un.size(1);
    auto g = torch::full({1, 1}, -2.0, un.options());
    for (int64_t k = 1; k < r; ++k) {
        auto prev = un.narrow(1, 0, k);
        auto col = -2 * torch::mm(g, torch::mm(prev.t(), un.narrow(1, k, 1)));
        auto top = torch::cat({g, col}, 1);
        auto bottom = torch::cat({torch::zeros({1, k}, un.options()), torch::full({1, 1}, -2.0, un.options())}, 1);
        g = torch::cat({top, bottom}, 0);
    }
    return g;
}

}  // namespace

TEST(Householder, NormalizeColumnsGivesUnitColumns) {
    auto u = random_u(12, 5);
    auto un = core::normalize_columns(u);
    EXPECT_LT(max_abs_diff(un.norm(2, {0}), torch::ones({5}, torch::kDouble)), 1e-14);
}

TEST(Householder, LoopEqualsExplicitProduct) {
    auto u = random_u(16, 6, 1);
    EXPECT_LT(max_abs_diff(core::reference_matrix(u, false), explicit_product(u)), 1e-13);
}

TEST(Householder, WyEqualsLoopAndExplicitProduct) {
    for (int64_t r : {1, 2, 5, 8}) {
        auto u = random_u(20, r, 10 + r);
        auto wy = core::materialize(core::make_reflector(u, false));
        EXPECT_LT(max_abs_diff(wy, explicit_product(u)), 1e-13) << "r=" << r;
        EXPECT_LT(max_abs_diff(wy, core::reference_matrix(u, false)), 1e-13) << "r=" << r;
    }
}

TEST(Householder, TIsUpperTriangularAndMatchesPaperRecursion) {
    auto u = random_u(10, 6, 2);
    auto un = core::normalize_columns(u);
    auto t = core::wy_t(un);
    EXPECT_EQ(max_abs_diff(t.tril(-1), torch::zeros_like(t)), 0.0);
    EXPECT_LT(max_abs_diff(t, -gamma_recursion(un)), 1e-12);
}

TEST(Householder, HIsOrthogonal) {
    auto u = random_u(24, 7, 3);
    auto h = core::materialize(core::make_reflector(u, false));
    auto eye = torch::eye(24, torch::kDouble);
    EXPECT_LT(max_abs_diff(torch::mm(h, h.t()), eye), 1e-13);
    EXPECT_LT(max_abs_diff(torch::mm(h.t(), h), eye), 1e-13);
}

TEST(Householder, ReverseLoopAndTransposeGiveHTranspose) {
    auto u = random_u(14, 5, 4);
    auto h = core::reference_matrix(u, false);
    EXPECT_LT(max_abs_diff(core::reference_matrix(u, false, /*reverse=*/true), h.t()), 1e-13);
    EXPECT_LT(max_abs_diff(core::materialize(core::make_reflector(u, false), /*transpose=*/true), h.t()), 1e-13);
}

TEST(Householder, ApplyToRowsAndWeightMatchDenseProducts) {
    auto u = random_u(18, 4, 5);
    auto h = explicit_product(u);
    auto refl = core::make_reflector(u, false);
    torch::manual_seed(6);
    auto x = torch::randn({3, 7, 18}, torch::kDouble);  // any leading shape
    auto w = torch::randn({9, 18}, torch::kDouble);
    EXPECT_LT(max_abs_diff(core::apply_to_rows(x, refl), torch::matmul(x, h.t())), 1e-12);
    EXPECT_LT(max_abs_diff(core::apply_to_rows(x, refl, true), torch::matmul(x, h)), 1e-12);
    EXPECT_LT(max_abs_diff(core::apply_to_weight(w, refl), torch::mm(w, h)), 1e-12);
    EXPECT_LT(max_abs_diff(core::apply_to_weight(w, refl, true), torch::mm(w, h.t())), 1e-12);
}

TEST(Householder, RowsStraightFromUMatchDenseProductsAndFiniteDifferences) {
    auto u0 = random_u(11, 4, 12);
    auto h = explicit_product(u0);
    torch::manual_seed(13);
    auto x0 = torch::randn({2, 3, 11}, torch::kDouble);
    auto g = torch::randn({2, 3, 11}, torch::kDouble);
    for (bool transpose : {false, true}) {
        auto u = u0.clone().set_requires_grad(true);
        auto x = x0.clone().set_requires_grad(true);
        auto y = core::apply_householder_rows(x, u, transpose);
        EXPECT_LT(max_abs_diff(y, torch::matmul(x0, transpose ? h : h.t())), 1e-12) << transpose;
        (y * g).sum().backward();
        // Central differences of sum(y·g) in every entry of u and of x.
        auto numeric = [&](const torch::Tensor& t, bool of_u) {
            torch::NoGradGuard ng;
            auto out = torch::zeros_like(t);
            const double eps = 1e-6;
            for (int64_t i = 0; i < t.numel(); ++i) {
                auto up = t.detach().clone(), dn = t.detach().clone();
                up.view({-1})[i] += eps;
                dn.view({-1})[i] -= eps;
                auto f = [&](const torch::Tensor& v) {
                    return (core::apply_householder_rows(of_u ? x0 : v, of_u ? v : u0, transpose) * g).sum();
                };
                out.view({-1})[i] = (f(up) - f(dn)) / (2 * eps);
            }
            return out;
        };
        EXPECT_LT(rel_err(u.grad(), numeric(u0, true)), 1e-7) << transpose;
        EXPECT_LT(rel_err(x.grad(), numeric(x0, false)), 1e-7) << transpose;
    }
}

TEST(Householder, SkinnyProductsSplitOverThreadsEqualPlainOnes) {
    const int before = at::get_num_threads();
    at::set_num_threads(2);  // ctest runs with one thread, where nothing is split
    torch::manual_seed(14);
    auto a = torch::randn({301, 1000}, torch::kDouble), b = torch::randn({1000, 8}, torch::kDouble);
    auto p = torch::randn({301, 8}, torch::kDouble), c = torch::randn({1000, 8}, torch::kDouble);
    // Above the split limit (301·1000·8 multiply-adds), as rows and as a transposed view, and below it.
    EXPECT_LT(rel_err(core::mm_by_rows(a, b), torch::mm(a, b)), 1e-14);
    EXPECT_LT(rel_err(core::mm_by_rows(a.t(), p), torch::mm(a.t(), p)), 1e-14);
    EXPECT_LT(rel_err(core::addmm_by_rows(c, a.t(), p, 1, -1), c - torch::mm(a.t(), p)), 1e-14);
    EXPECT_LT(rel_err(core::addmm_by_rows(p, a, b, 0.5, 2), 0.5 * p + 2 * torch::mm(a, b)), 1e-14);
    auto small = torch::randn({5, 7}, torch::kDouble);
    EXPECT_LT(rel_err(core::mm_by_rows(small, small.t()), torch::mm(small, small.t())), 1e-15);
    // Below the split limit a product runs on one BLAS thread; the thread setting comes back.
    auto mid = torch::randn({16, 4000}, torch::kDouble);
    EXPECT_LT(rel_err(core::mm_by_rows(mid.t(), p.narrow(0, 0, 16)), torch::mm(mid.t(), p.narrow(0, 0, 16))), 1e-14);
    EXPECT_EQ(at::get_num_threads(), 2);
    at::set_num_threads(before);
}

// The split products inside the autograd node on 2 threads: operands that require grad, under
// NoGradGuard and InferenceMode (the workers must run with the caller's grad mode), with the
// result and both gradients equal to the same node on one thread, where nothing is split.
TEST(Householder, RowsOnTwoThreadsWithGradMatchOneThread) {
    const int before = at::get_num_threads();
    torch::manual_seed(15);
    auto rows0 = torch::randn({600, 1000});  // 600·1000·8 multiply-adds: above the split limit
    auto u0 = torch::randn({1000, 8});
    auto gout = torch::randn({600, 1000});
    auto run = [&](int threads) {
        at::set_num_threads(threads);
        auto rows = rows0.clone().set_requires_grad(true), u = u0.clone().set_requires_grad(true);
        auto out = core::apply_householder_rows(rows, u, true);
        out.backward(gout);
        at::Tensor no_grad, inference;
        {
            torch::NoGradGuard ng;
            no_grad = core::apply_householder_rows(rows, u, true);
        }
        {
            c10::InferenceMode im;
            inference = core::apply_householder_rows(rows0, u0, true);
        }
        return std::vector<at::Tensor>{out.detach(), rows.grad(), u.grad(), no_grad, inference.clone()};
    };
    const auto one = run(1), two = run(2);
    at::set_num_threads(before);
    // Measured: identical results, rows' gradient and the no-grad ones; U's gradient 2.9e-7 apart.
    for (size_t i = 0; i < one.size(); ++i) EXPECT_LT(rel_err(two[i], one[i]), 1e-6) << "result " << i;
    EXPECT_LT(rel_err(two[3], one[0]), 1e-6);
}

TEST(Householder, GramSchmidtGivesOrthonormalQAndIMinus2QQt) {
    auto u = random_u(15, 5, 7);
    auto q = core::gram_schmidt(u);
    EXPECT_LT(max_abs_diff(torch::mm(q.t(), q), torch::eye(5, torch::kDouble)), 1e-13);
    // Same span as an independent QR: QQᵀ is the projector on span(U).
    auto qr = std::get<0>(torch::linalg_qr(u));
    EXPECT_LT(max_abs_diff(torch::mm(q, q.t()), torch::mm(qr, qr.t())), 1e-12);
    auto expected = torch::eye(15, torch::kDouble) - 2 * torch::mm(q, q.t());
    EXPECT_LT(max_abs_diff(core::reference_matrix(u, true), expected), 1e-13);
    EXPECT_LT(max_abs_diff(core::materialize(core::make_reflector(u, true)), expected), 1e-13);
    // The Gram-Schmidt H is symmetric, so its own transpose.
    EXPECT_LT(max_abs_diff(core::reference_matrix(u, true, true), expected), 1e-13);
}

TEST(Householder, PenaltyZeroForOrthonormalAndPositiveOtherwise) {
    auto q = std::get<0>(torch::linalg_qr(random_u(20, 6, 8)));
    EXPECT_LT(core::orthogonality_penalty(q * 3.0).item<double>(), 1e-24);  // scale is normalised away
    auto u = random_u(20, 6, 9);
    auto un = core::normalize_columns(u);
    auto diff = torch::eye(6, torch::kDouble) - torch::mm(un.t(), un);
    const double sq = (diff * diff).sum().item<double>();
    EXPECT_GT(sq, 0.01);
    EXPECT_NEAR(core::orthogonality_penalty(u, core::PenaltyForm::Squared).item<double>(), sq, 1e-12);
    EXPECT_NEAR(core::orthogonality_penalty(u, core::PenaltyForm::Frobenius).item<double>(), std::sqrt(sq), 1e-12);
    EXPECT_EQ(core::parse_penalty_form("frobenius"), core::PenaltyForm::Frobenius);
    EXPECT_THROW(core::parse_penalty_form("cubed"), std::exception);
}

TEST(Householder, PenaltyGradientMatchesFiniteDifferences) {
    auto u = random_u(7, 3, 11).set_requires_grad(true);
    for (auto form : {core::PenaltyForm::Squared, core::PenaltyForm::Frobenius}) {
        auto g = torch::autograd::grad({core::orthogonality_penalty(u, form)}, {u})[0];
        auto num = torch::zeros_like(u);
        const double eps = 1e-6;
        torch::NoGradGuard ng;
        for (int64_t i = 0; i < u.numel(); ++i) {
            auto up = u.detach().clone(), dn = u.detach().clone();
            up.view({-1})[i] += eps;
            dn.view({-1})[i] -= eps;
            num.view({-1})[i] =
                (core::orthogonality_penalty(up, form) - core::orthogonality_penalty(dn, form)) / (2 * eps);
        }
        EXPECT_LT(max_abs_diff(g, num), 1e-8) << core::penalty_form_name(form);
    }
}

TEST(Householder, RejectsNonMatrix) {
    EXPECT_THROW(core::make_reflector(torch::randn({5}), false), std::exception);
}
