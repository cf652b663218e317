// Householder reflection math as pure functions on tensors (ATen only).
//
// Conventions (PEFT's): U = [u_1..u_r] is [d, r]; û_i = u_i/‖u_i‖ (no eps);
// H = H_1 H_2 ... H_r with H_i = I - 2 û_i û_iᵀ; a layer with weight W [out, d]
// uses W·H, i.e. y = x·Hᵀ·Wᵀ.
//
// Compact WY form: H = I - V T Vᵀ with V = Û and T upper-triangular r×r,
// T⁻¹ = ½I + strict_upper(ÛᵀÛ). In Gram-Schmidt mode (PEFT's apply_GS),
// V = Q from modified Gram-Schmidt on the raw columns and T = 2I.
// None of the WY functions allocates a d×d tensor.
#pragma once

#include <ATen/core/Tensor.h>

namespace hra::core {

// û_i = u_i / ‖u_i‖₂ for each column, without eps (a zero column gives NaN, as in PEFT).
at::Tensor normalize_columns(const at::Tensor& u);

// Modified Gram-Schmidt on the raw columns of u, exactly PEFT's loop order:
// q_1 = u_1/‖u_1‖; v = u_i minus its projections on q_1..q_{i-1}, one at a
// time on the running v; q_i = v/‖v‖. Returns Q [d, r].
at::Tensor gram_schmidt(const at::Tensor& u);

// T for unit columns v: the inverse of ½I + strict_upper(vᵀv), upper-triangular.
// Computed in at least float32.
at::Tensor wy_t(const at::Tensor& v);

// H = I - V·T·Vᵀ.
struct Reflector {
    at::Tensor v;  // [d, r], unit (Householder) or orthonormal (Gram-Schmidt) columns
    at::Tensor t;  // [r, r], upper-triangular (2I in Gram-Schmidt mode)
};

// The compact-WY reflector of u (Householder product, or Gram-Schmidt when gs).
Reflector make_reflector(const at::Tensor& u, bool gram_schmidt);

// rows·Hᵀ over the last dimension of rows (any leading shape):
// rows - ((rows·V)·Tᵀ)·Vᵀ. With transpose, rows·H instead.
at::Tensor apply_to_rows(const at::Tensor& rows, const Reflector& h, bool transpose = false);

// The same as apply_to_rows(rows, make_reflector(u, false), transpose), computed
// from u itself: one autograd node whose forward and backward run only skinny
// products with u plus r×r work, and no normalised copy of u. Float and double
// on the CPU; anything else takes apply_to_rows.
at::Tensor apply_householder_rows(const at::Tensor& rows, const at::Tensor& u, bool transpose = false);

// W·H = W - ((W·V)·T)·Vᵀ for W [out, d]; with transpose, W·Hᵀ (the unmerge).
at::Tensor apply_to_weight(const at::Tensor& w, const Reflector& h, bool transpose = false);

// The d×d matrix H (or Hᵀ with transpose). Only for merge, export and tests.
at::Tensor materialize(const Reflector& h, bool transpose = false);

// PEFT's get_delta_weight, operation for operation: starting from I, either
// I - 2QQᵀ (gs) or the loop w ← w - 2(w·û_i)û_iᵀ for i = 0..r-1 (reverse:
// r-1..0, which gives Hᵀ). For the `reference` strategy and tests.
at::Tensor reference_matrix(const at::Tensor& u, bool gram_schmidt, bool reverse = false);

// Orthogonality penalty of one layer (paper Eq. 6 when squared):
// ‖I - ÛᵀÛ‖²_F, or the unsquared Frobenius norm the original LLaMA code used.
enum class PenaltyForm { Squared, Frobenius };
at::Tensor orthogonality_penalty(const at::Tensor& u, PenaltyForm form = PenaltyForm::Squared);

// "squared" / "frobenius"; throws hra::Error on anything else.
PenaltyForm parse_penalty_form(const std::string& name);
const char* penalty_form_name(PenaltyForm form);

}  // namespace hra::core
