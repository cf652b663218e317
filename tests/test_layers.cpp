// hra::Linear / hra::Conv2d with HRA adapters: every strategy against the
// others and against finite differences, geometry (tuples, non-square
// kernels), the no-in×in guarantee, init, composition and dtypes.
#include <sys/resource.h>

#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/hra.h"
#include "adapters/layers.h"
#include "common/error.h"
#include "core/householder.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;
using hra::test::rel_err;

namespace {

const MultiplyPath kStrategies[] = {MultiplyPath::Reference, MultiplyPath::Input, MultiplyPath::Weight, MultiplyPath::Auto};

std::shared_ptr<HraAdapterImpl> attach_hra(AdaptableLayer& layer, int64_t r, bool gs, const std::string& name = "default",
                                           c10::ScalarType dtype = torch::kDouble) {
    auto a = std::make_shared<HraAdapterImpl>(layer.shape(), r, gs, /*init_weights=*/false,
                                              torch::TensorOptions().dtype(dtype));
    layer.add_adapter(name, a);
    auto active = layer.active();
    active.push_back(name);
    layer.set_active(active);
    return a;
}

Conv2dOptions odd_conv() {
    Conv2dOptions o;
    o.in_channels = 3;
    o.out_channels = 4;
    o.kernel = {3, 2};
    o.stride = {2, 1};
    o.padding = {1, 0};
    o.dilation = {1, 2};
    return o;
}

// Central differences of sum(layer(x) * g) with respect to every entry of t.
torch::Tensor numeric_grad(const std::function<torch::Tensor()>& loss, torch::Tensor t) {
    torch::NoGradGuard ng;
    auto out = torch::zeros_like(t);
    auto flat = t.view({-1});
    const double eps = 1e-6;
    for (int64_t i = 0; i < flat.numel(); ++i) {
        const double v = flat[i].item<double>();
        flat[i] = v + eps;
        const double up = loss().item<double>();
        flat[i] = v - eps;
        const double dn = loss().item<double>();
        flat[i] = v;
        out.view({-1})[i] = (up - dn) / (2 * eps);
    }
    return out;
}

void check_gradients(AdaptableLayer& layer, const std::shared_ptr<HraAdapterImpl>& a, const torch::Tensor& x0) {
    torch::manual_seed(3);
    auto y0 = layer.forward(x0);
    auto g = torch::randn_like(y0);
    for (auto s : kStrategies) {
        layer.strategy = s;
        auto x = x0.clone().set_requires_grad(true);
        a->hra_u.mutable_grad() = torch::Tensor();
        (layer.forward(x) * g).sum().backward();
        auto loss = [&] { return (layer.forward(x.detach()) * g).sum(); };
        auto gu = numeric_grad(loss, a->hra_u.data());
        auto gx = numeric_grad(loss, x.data());
        EXPECT_LT(rel_err(a->hra_u.grad(), gu), 1e-7) << hra_strategy_name(s);
        EXPECT_LT(rel_err(x.grad(), gx), 1e-7) << hra_strategy_name(s);
    }
}

}  // namespace

TEST(Layers, LinearStrategiesAgree) {
    torch::manual_seed(0);
    Linear lin(12, 9);
    lin->to(torch::kDouble);
    auto a = attach_hra(*lin, 4, false);
    auto x = torch::randn({2, 5, 12}, torch::kDouble);
    lin->strategy = MultiplyPath::Reference;
    auto ref = lin->forward(x);
    // Independent: x·(W·H)ᵀ + b with H the explicit reflection product.
    auto h = core::reference_matrix(a->hra_u.detach(), false);
    EXPECT_LT(max_abs_diff(ref, torch::matmul(x, torch::mm(lin->weight, h).t()) + lin->bias), 1e-12);
    for (auto s : {MultiplyPath::Input, MultiplyPath::Weight, MultiplyPath::Auto}) {
        lin->strategy = s;
        EXPECT_LT(max_abs_diff(lin->forward(x), ref), 1e-12) << hra_strategy_name(s);
    }
}

TEST(Layers, LinearGradientsMatchFiniteDifferences) {
    for (bool gs : {false, true}) {
        torch::manual_seed(1);
        Linear lin(7, 5);
        lin->to(torch::kDouble);
        lin->weight.set_requires_grad(false);
        lin->bias.set_requires_grad(false);
        auto a = attach_hra(*lin, 3, gs);
        check_gradients(*lin, a, torch::randn({4, 7}, torch::kDouble));
    }
}

TEST(Layers, ConvWithTupleGeometryAgreesAcrossStrategies) {
    torch::manual_seed(2);
    Conv2d conv(odd_conv());
    conv->to(torch::kDouble);
    auto a = attach_hra(*conv, 4, false);
    EXPECT_EQ(a->hra_u.size(0), 3 * 3 * 2);
    auto x = torch::randn({2, 3, 7, 8}, torch::kDouble);
    // Independent: a plain conv with the weight W·H reshaped.
    auto h = core::reference_matrix(a->hra_u.detach(), false);
    auto w = torch::mm(conv->flat_weight(), h).view_as(conv->weight);
    auto expected = torch::conv2d(x, w, conv->bias, {2, 1}, {1, 0}, {1, 2});
    for (auto s : kStrategies) {
        conv->strategy = s;
        auto y = conv->forward(x);
        ASSERT_EQ(y.sizes(), expected.sizes());
        EXPECT_LT(max_abs_diff(y, expected), 1e-12) << hra_strategy_name(s);
    }
}

TEST(Layers, ConvGradientsMatchFiniteDifferences) {
    for (bool gs : {false, true}) {
        torch::manual_seed(4);
        Conv2d conv(odd_conv());
        conv->to(torch::kDouble);
        conv->weight.set_requires_grad(false);
        conv->bias.set_requires_grad(false);
        auto a = attach_hra(*conv, 3, gs);
        check_gradients(*conv, a, torch::randn({1, 3, 5, 6}, torch::kDouble));
    }
}

TEST(Layers, PointwiseConvUsesChannelsAsRows) {
    torch::manual_seed(5);
    Conv2dOptions o;
    o.in_channels = 6;
    o.out_channels = 4;
    Conv2d conv(o);
    conv->to(torch::kDouble);
    auto a = attach_hra(*conv, 2, false);
    auto x = torch::randn({2, 6, 3, 3}, torch::kDouble);
    conv->strategy = MultiplyPath::Reference;
    auto ref = conv->forward(x);
    conv->strategy = MultiplyPath::Input;
    EXPECT_LT(max_abs_diff(conv->forward(x), ref), 1e-12);
}

TEST(Layers, GroupedConvolutionIsRefused) {
    Conv2dOptions o;
    o.in_channels = 4;
    o.out_channels = 4;
    o.kernel = {3, 3};
    o.groups = 2;
    Conv2d conv(o);
    try {
        attach_hra(*conv, 2, false);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("groups=2"), std::string::npos) << e.what();
    }
}

TEST(Layers, PairedInitIsIdentityOddRIsNot) {
    torch::manual_seed(6);
    Linear lin(32, 8);
    auto x = torch::randn({3, 32});
    auto base = lin->forward(x).detach();
    auto even = std::make_shared<HraAdapterImpl>(lin->shape(), 8, false, true, torch::TensorOptions());
    // Columns come in equal pairs, so each pair of reflections cancels.
    EXPECT_TRUE(torch::equal(even->hra_u.select(1, 0), even->hra_u.select(1, 1)));
    EXPECT_LT(max_abs_diff(core::materialize(even->reflector()), torch::eye(32)), 1e-5);
    lin->add_adapter("even", even);
    lin->set_active({"even"});
    for (auto s : kStrategies) {
        lin->strategy = s;
        EXPECT_LT(max_abs_diff(lin->forward(x), base), 1e-5) << hra_strategy_name(s);
    }
    auto odd = std::make_shared<HraAdapterImpl>(lin->shape(), 7, false, true, torch::TensorOptions());
    EXPECT_GT(max_abs_diff(core::materialize(odd->reflector()), torch::eye(32)), 0.1);
    // kaiming_uniform(a=√5) bounds: √(2/r) on [d, r/2] for even r, 1/√r for odd r.
    EXPECT_LE(even->hra_u.abs().max().item<double>(), std::sqrt(2.0 / 8) + 1e-7);
    EXPECT_LE(odd->hra_u.abs().max().item<double>(), 1.0 / std::sqrt(7.0) + 1e-7);
}

TEST(Layers, SeveralAdaptersComposeAsWHaHb) {
    torch::manual_seed(7);
    Linear lin(10, 6);
    lin->to(torch::kDouble);
    auto a = attach_hra(*lin, 2, false, "a");
    auto b = attach_hra(*lin, 3, true, "b");
    auto x = torch::randn({4, 10}, torch::kDouble);
    auto ha = core::reference_matrix(a->hra_u.detach(), false);
    auto hb = core::reference_matrix(b->hra_u.detach(), true);
    auto merged = torch::mm(torch::mm(lin->weight, ha), hb).detach();
    auto expected = torch::linear(x, merged, lin->bias);
    for (auto s : kStrategies) {
        lin->strategy = s;
        EXPECT_LT(max_abs_diff(lin->forward(x), expected), 1e-12) << hra_strategy_name(s);
    }
    lin->strategy = MultiplyPath::Weight;
    lin->merge();
    EXPECT_LT(max_abs_diff(lin->weight, merged), 1e-12);
    EXPECT_LT(max_abs_diff(lin->forward(x), expected), 1e-12);
}

TEST(Layers, AutoPicksInputSideForTrainingAndWeightSideForLargeBatchesWithoutGrad) {
    Linear lin(64, 64);
    attach_hra(*lin, 4, false, "default", torch::kFloat);
    auto small = torch::randn({2, 64}), large = torch::randn({512, 64});
    EXPECT_EQ(lin->resolve_strategy(small), MultiplyPath::Input);
    EXPECT_EQ(lin->resolve_strategy(large), MultiplyPath::Input);  // training: no weight gradient on the input side
    torch::NoGradGuard ng;
    EXPECT_EQ(lin->resolve_strategy(small), MultiplyPath::Input);    // 2 rows < 64 outputs
    EXPECT_EQ(lin->resolve_strategy(large), MultiplyPath::Weight);   // 512 rows > 64 outputs
    // A narrow layer trains cheaper on the weight side: 3 passes of 2dr+r² per row
    // cost more than the base op's weight gradient (out·d per row) when out < ~6r.
    Linear narrow(64, 8);
    attach_hra(*narrow, 4, false, "default", torch::kFloat);
    torch::GradMode::set_enabled(true);
    EXPECT_EQ(narrow->resolve_strategy(large), MultiplyPath::Weight);
}

TEST(Layers, Bf16BaseWithFloatAdapter) {
    torch::manual_seed(8);
    Linear lin(16, 8);
    auto x = torch::randn({5, 16});
    auto a = attach_hra(*lin, 4, false, "default", torch::kFloat);
    auto expected = lin->forward(x).detach();
    // A bf16 base keeps a float32 adapter (as PEFT's autocast_adapter_dtype).
    {
        torch::NoGradGuard ng;
        lin->weight.set_data(lin->weight.to(torch::kBFloat16));
        lin->bias.set_data(lin->bias.to(torch::kBFloat16));
    }
    EXPECT_EQ(a->dtype(), torch::kFloat);
    for (auto s : kStrategies) {
        lin->strategy = s;
        auto y = lin->forward(x.to(torch::kBFloat16));
        EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
        EXPECT_LT(rel_err(y, expected), 3e-2) << hra_strategy_name(s);
    }
    lin->merge();
    EXPECT_EQ(lin->weight.scalar_type(), torch::kBFloat16);
    EXPECT_LT(rel_err(lin->forward(x.to(torch::kBFloat16)), expected), 3e-2);
    // Module::to converts adapters too; every path must still run.
    lin->unmerge();
    lin->to(torch::kBFloat16);
    for (auto s : kStrategies) {
        lin->strategy = s;
        EXPECT_LT(rel_err(lin->forward(x.to(torch::kBFloat16)), expected), 5e-2) << hra_strategy_name(s);
    }
}

namespace {

// Lowers this process's address-space limit to (current + extra) while alive.
class AddressSpaceLimit {
public:
    explicit AddressSpaceLimit(uint64_t extra) {
        getrlimit(RLIMIT_AS, &old_);
        std::ifstream status("/proc/self/status");
        std::string line;
        uint64_t vm_kb = 0;
        while (std::getline(status, line))
            if (line.rfind("VmSize:", 0) == 0) vm_kb = std::stoull(line.substr(7));
        rlimit lim = old_;
        lim.rlim_cur = vm_kb * 1024 + extra;
        setrlimit(RLIMIT_AS, &lim);
    }
    ~AddressSpaceLimit() { setrlimit(RLIMIT_AS, &old_); }

private:
    rlimit old_{};
};

}  // namespace

// With d = 200,000 an in×in float tensor needs 160 GB; under a 2 GB
// address-space allowance any such allocation fails, so these passes prove
// that the WY paths (forward, backward, merge) never build one.
TEST(Layers, WyPathsNeverAllocateInByIn) {
    const int64_t d = 200000;
    Linear lin(d, 4);
    auto a = attach_hra(*lin, 4, false, "default", torch::kFloat);
    lin->weight.set_requires_grad(false);
    lin->bias.set_requires_grad(false);
    Conv2dOptions o;
    o.in_channels = d / 9;
    o.out_channels = 2;
    o.kernel = {3, 3};
    Conv2d conv(o);
    attach_hra(*conv, 2, false, "default", torch::kFloat);
    conv->weight.set_requires_grad(false);
    auto x = torch::randn({3, d}, torch::TensorOptions().requires_grad(true));
    auto xc = torch::randn({1, d / 9, 3, 4});
    AddressSpaceLimit limit(2ull << 30);
    for (auto s : {MultiplyPath::Input, MultiplyPath::Weight}) {
        lin->strategy = s;
        conv->strategy = s;
        EXPECT_NO_THROW({
            lin->forward(x).sum().backward();
            conv->forward(xc).sum().backward();
            lin->merge();
            lin->unmerge();
        }) << hra_strategy_name(s);
    }
    lin->strategy = MultiplyPath::Reference;  // the reference path does build H, and must fail here
    EXPECT_ANY_THROW(lin->forward(x));
}
