// C++ host: a hybrida-exported surrogate step M, its tangent linear and its adjoint through libtorch autograd.
//
// Usage: surrogate_host SURROGATE.torchscript.pt SURROGATE_REFERENCE.bin [N_PASSED]
//   SURROGATE_REFERENCE.bin (interop/make_reference.py): x, dx, dy, Python's M dx (torch.func.jvp)
//   and M^T dy (torch.func.vjp) at x, and Python's free run of the surrogate from x.
// Prints: max |host - python| over the free run (the exported step called step by step), the adjoint dot-product test <M dx, dy> = <dx, M^T dy> (relative difference, bar 1e-12) on the
// reference pair and on 20 random pairs, a central finite-difference check of the tangent linear, and
// max |host - python| of M dx and M^T dy. Exit 0 when all bars hold, 1 when one fails, 2 on bad input.
//
// Tangent linear: reverse mode twice (g(u) = M^T u is linear in u, so d<g(u), dx>/du = M dx);
// adjoint: reverse mode once.
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "hybrida_part.hpp"
#include "hybrida_shim.h"

namespace {

constexpr int64_t N = 40;

struct Linearised {
  torch::Tensor y, mdx, mtdy;
};

// M(x), M dx and M^T dy at one state x (1, n) through the exported module's autograd graph.
Linearised linearise(hybrida::Part& part, const torch::Tensor& x, const torch::Tensor& dx, const torch::Tensor& dy) {
  torch::Tensor xt = x.detach().clone().requires_grad_(true);
  torch::Tensor y = hybrida::forward(part, xt);
  torch::Tensor u = torch::zeros_like(y).requires_grad_(true);
  torch::Tensor g = torch::autograd::grad({y}, {xt}, {u}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  torch::Tensor mdx = torch::autograd::grad({g}, {u}, {dx}, /*retain_graph=*/true)[0];
  torch::Tensor mtdy = torch::autograd::grad({y}, {xt}, {dy})[0];
  return {y.detach(), mdx.detach(), mtdy.detach()};
}

double dot_test(const Linearised& l, const torch::Tensor& dx, const torch::Tensor& dy, double& lhs, double& rhs) {
  lhs = (l.mdx * dy).sum().item<double>();
  rhs = (dx * l.mtdy).sum().item<double>();
  return std::fabs(lhs - rhs) / std::fmax(std::fabs(lhs), std::fabs(rhs));
}

int run(int argc, char** argv) {
  if (argc < 3 || argc > 4)
    throw hybrida::Error(HYB_ERR_ARG, "usage: surrogate_host SURROGATE.torchscript.pt SURROGATE_REFERENCE.bin [N_PASSED]");
  std::ifstream in(argv[2], std::ios::binary);
  if (!in) throw hybrida::Error(HYB_ERR_FILE, std::string(argv[2]) + ": no such file (or unreadable)");
  int64_t head[3] = {0, 0, 0};
  if (!in.read(reinterpret_cast<char*>(head), 24) || head[0] != 960418 || head[1] != N || head[2] < 1 || head[2] > 1000000)
    throw hybrida::Error(HYB_ERR_FILE, std::string(argv[2]) + ": not a surrogate reference (n=40) of make_reference.py");
  const int64_t steps = head[2];
  std::vector<double> v((5 + steps + 1) * N);
  if (!in.read(reinterpret_cast<char*>(v.data()), 8 * static_cast<int64_t>(v.size())))
    throw hybrida::Error(HYB_ERR_FILE, std::string(argv[2]) + ": truncated surrogate reference");
  int64_t n = N;
  if (argc == 4) {
    try {
      n = std::stoll(argv[3]);
    } catch (const std::exception&) {
      throw hybrida::Error(HYB_ERR_ARG, std::string("N_PASSED must be an integer, got ") + argv[3]);
    }
  }
  at::set_num_threads(1);
  hybrida::Part part = hybrida::load_part(argv[1], "surrogate", n);
  if (part.n_out != N) throw hybrida::Error(HYB_ERR_SHAPE, std::string(argv[1]) + ": the surrogate does not map n=40 to n=40");
  auto vec = [&](int64_t k) { return torch::from_blob(v.data() + k * N, {1, N}, torch::kFloat64).clone(); };
  torch::Tensor x = vec(0), dx = vec(1), dy = vec(2), mdx_py = vec(3), mtdy_py = vec(4);

  Linearised l = linearise(part, x, dx, dy);
  double lhs = 0, rhs = 0;
  const double rel = dot_test(l, dx, dy, lhs, rhs);
  auto g = at::make_generator<at::CPUGeneratorImpl>(2026);
  double worst = rel;
  for (int trial = 0; trial < 20; ++trial) {
    torch::Tensor a = torch::randn({1, N}, g, torch::kFloat64), b = torch::randn({1, N}, g, torch::kFloat64);
    double l1 = 0, r1 = 0;
    worst = std::fmax(worst, dot_test(linearise(part, x, a, b), a, b, l1, r1));
  }
  torch::NoGradGuard no_grad;
  torch::Tensor xk = x;  // the surrogate's free run, step by step through the exported file
  double d_traj = 0.0;
  for (int64_t k = 1; k <= steps; ++k) {
    xk = hybrida::forward(part, xk);
    d_traj = std::fmax(d_traj, (xk - vec(5 + k)).abs().max().item<double>());
    if (!std::isfinite(d_traj)) d_traj = INFINITY;
  }
  // finite-difference check of the tangent linear: O(eps^2) = ~1e-8 here
  const double eps = 1e-4;
  torch::Tensor fd = (hybrida::forward(part, x + eps * dx) - hybrida::forward(part, x - eps * dx)) / (2 * eps);
  const double fd_rel = ((fd - l.mdx).norm() / l.mdx.norm()).item<double>();
  const double d_tl = (l.mdx - mdx_py).abs().max().item<double>();
  const double d_ad = (l.mtdy - mtdy_py).abs().max().item<double>();
  char line[512];
  std::snprintf(line, sizeof line, "C++ host: surrogate, %lld steps: max |host - python| = %.3g (bar 1e-10)",
                static_cast<long long>(steps), d_traj);
  std::cout << line << "\n";
  std::snprintf(line, sizeof line,
                "C++ host: surrogate adjoint test <M dx, dy> = %.17g, <dx, M^T dy> = %.17g, relative difference "
                "%.3g (bar 1e-12); worst of 20 random pairs %.3g",
                lhs, rhs, rel, worst);
  std::cout << line << "\n";
  std::snprintf(line, sizeof line,
                "C++ host: surrogate tangent linear vs central difference (eps 1e-4): relative %.3g (bar 1e-6); "
                "max |host - python| of M dx %.3g, of M^T dy %.3g (bar 1e-12)",
                fd_rel, d_tl, d_ad);
  std::cout << line << std::endl;
  const bool ok = d_traj <= 1e-10 && worst <= 1e-12 && fd_rel <= 1e-6 && d_tl <= 1e-12 && d_ad <= 1e-12;
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const hybrida::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
  } catch (const std::exception& e) {
    std::cerr << "error: " << hybrida::first_line(e.what()) << std::endl;
  }
  return 2;
}
