// C++ host: Lorenz-96 (n=40, F=8, dt=0.05, RK4) written here, plus a hybrida-exported learned correction
// called through libtorch every step, for as many steps as the Python reference; prints max |host - python|.
//
// Usage: l96_host CORRECTION.torchscript.pt REFERENCE.bin [N_PASSED]
//   REFERENCE.bin: written by interop/make_reference.py (layout in its docstring).
//   N_PASSED: the state size the host passes to the part (default 40; another value tests the refusal).
// Exit: 0 when max |host - python| <= 1e-10, 1 when above, 2 on bad input (one line on stderr).
//
// The hybrid model is hybrida.models.corrected.CorrectedModel, kind read from the manifest:
//   resolvent: x_{k+1} = M(x_k) + c(x_k), M the RK4 step of L96;
//   tendency:  RK4 of dx/dt = f(x) + c(x) (hybrida.models.integrators.rk4_step).
// Bit-for-bit agreement needs the same floating-point operations as torch's kernels, in the same
// order: the L96 tendency is mad(x_{i+1} - x_{i-2}, x_{i-1}, F - x_i) (torch.addcmul) and the fast
// resolvent step's alpha-scaled adds are mad(b, h, a) (torch.add(a, b, alpha=h)), where mad is one
// fma on CPUs where torch runs vectorised kernels (AVX2, AVX-512) and a*b + c (two roundings) with
// its scalar kernels; the reference file says which. Everything else is compiled with
// -ffp-contract=off so that no other product is fused.
#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>

#include "hybrida_part.hpp"
#include "hybrida_shim.h"

namespace {

constexpr int64_t N = 40;
constexpr double F = 8.0, DT = 0.05;
using State = std::vector<double>;

// a*b + c as torch computes it: one rounding (fma) in its vectorised kernels, two in its scalar ones.
bool fused = true;
inline double mad(double a, double b, double c) { return fused ? std::fma(a, b, c) : a * b + c; }

// Lorenz (1996): dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F on a periodic ring.
State tendency(const State& x) {
  State out(N);
  for (int64_t i = 0; i < N; ++i)
    out[i] = mad(x[(i + 1) % N] - x[(i + N - 2) % N], x[(i + N - 1) % N], F - x[i]);
  return out;
}

// One RK4 step as hybrida.models.lorenz96.l96_rk4_step computes it.
State physics_step(const State& x) {
  const double h = 0.5 * DT;
  State s(N), acc(N), out(N);
  State k1 = tendency(x);
  for (int64_t i = 0; i < N; ++i) s[i] = mad(k1[i], h, x[i]);
  State k2 = tendency(s);
  for (int64_t i = 0; i < N; ++i) s[i] = mad(k2[i], h, x[i]);
  State k3 = tendency(s);
  for (int64_t i = 0; i < N; ++i) s[i] = mad(k3[i], DT, x[i]);
  State k4 = tendency(s);
  for (int64_t i = 0; i < N; ++i) {
    acc[i] = mad(k3[i], 2.0, mad(k2[i], 2.0, k1[i]));
    out[i] = mad(acc[i] + k4[i], DT / 6.0, x[i]);
  }
  return out;
}

struct Correction {
  hybrida::Part part;
  int64_t n_passed;
  State operator()(const State& x) {
    torch::NoGradGuard no_grad;
    auto xt = torch::from_blob(const_cast<double*>(x.data()), {1, n_passed}, torch::kFloat64).clone();
    torch::Tensor y = hybrida::forward(part, xt);
    return State(y.data_ptr<double>(), y.data_ptr<double>() + N);
  }
};

// One step of the hybrid model of the given kind.
State hybrid_step(const State& x, const std::string& kind, Correction& c) {
  if (kind == "resolvent") {
    State m = physics_step(x), g = c(x);
    for (int64_t i = 0; i < N; ++i) m[i] += g[i];
    return m;
  }
  auto f = [&](const State& v) {  // physics tendency + correction, as CorrectedModel.step_with
    State t = tendency(v), g = c(v);
    for (int64_t i = 0; i < N; ++i) t[i] += g[i];
    return t;
  };
  const double h = 0.5 * DT, sixth = DT / 6.0;  // rk4_step: x + 0.5*dt*k1 ... x + dt/6 (k1 + 2 k2 + 2 k3 + k4)
  State s(N), out(N);
  State k1 = f(x);
  for (int64_t i = 0; i < N; ++i) s[i] = x[i] + h * k1[i];
  State k2 = f(s);
  for (int64_t i = 0; i < N; ++i) s[i] = x[i] + h * k2[i];
  State k3 = f(s);
  for (int64_t i = 0; i < N; ++i) s[i] = x[i] + DT * k3[i];
  State k4 = f(s);
  for (int64_t i = 0; i < N; ++i) out[i] = x[i] + sixth * (((k1[i] + 2.0 * k2[i]) + 2.0 * k3[i]) + k4[i]);
  return out;
}

struct Reference {
  int64_t n = 0, steps = 0, kind = -1, fused = 1;
  double F = 0, dt = 0;
  std::vector<double> traj;  // (steps + 1) * n
};

Reference read_reference(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw hybrida::Error(HYB_ERR_FILE, path + ": no such file (or unreadable)");
  Reference r;
  int64_t magic = 0;
  double fd[2];
  in.read(reinterpret_cast<char*>(&magic), 8);
  in.read(reinterpret_cast<char*>(&r.n), 8).read(reinterpret_cast<char*>(&r.steps), 8);
  in.read(reinterpret_cast<char*>(&r.kind), 8).read(reinterpret_cast<char*>(&r.fused), 8);
  in.read(reinterpret_cast<char*>(fd), 16);
  if (!in || magic != 960417 || r.n < 1 || (r.fused != 0 && r.fused != 1) || r.steps < 1 || r.n * (r.steps + 1) > (int64_t{1} << 27))
    throw hybrida::Error(HYB_ERR_FILE, path + ": not a trajectory reference of make_reference.py");
  r.F = fd[0], r.dt = fd[1];
  r.traj.resize(r.n * (r.steps + 1));
  if (!in.read(reinterpret_cast<char*>(r.traj.data()), 8 * static_cast<int64_t>(r.traj.size())))
    throw hybrida::Error(HYB_ERR_FILE, path + ": truncated reference file");
  return r;
}

int run(int argc, char** argv) {
  if (argc < 3 || argc > 4)
    throw hybrida::Error(HYB_ERR_ARG, "usage: l96_host CORRECTION.torchscript.pt REFERENCE.bin [N_PASSED]");
  Reference ref = read_reference(argv[2]);
  if (ref.n != N || ref.F != F || ref.dt != DT)
    throw hybrida::Error(HYB_ERR_ARG, std::string(argv[2]) + ": reference of another L96 (n=" + std::to_string(ref.n) +
                                          "); this host runs n=40, F=8, dt=0.05");
  fused = ref.fused == 1;
  int64_t n_passed = N;
  if (argc == 4) {
    try {
      n_passed = std::stoll(argv[3]);
    } catch (const std::exception&) {
      throw hybrida::Error(HYB_ERR_ARG, std::string("N_PASSED must be an integer, got ") + argv[3]);
    }
  }
  at::set_num_threads(1);
  Correction c{hybrida::load_part(argv[1], "correction", n_passed), n_passed};
  bool found = false;
  const std::string kind = hybrida::json_string(c.part.manifest, "correction_kind", found);
  const char* ref_kind = ref.kind == 0 ? "resolvent" : ref.kind == 1 ? "tendency" : "?";
  if (kind != ref_kind)
    throw hybrida::Error(HYB_ERR_MANIFEST, std::string(argv[1]) + ": a " + (found ? kind : "?") +
                                               " correction, but the reference is a " + ref_kind + " run");
  State x(ref.traj.begin(), ref.traj.begin() + N);
  double diff = 0.0;
  for (int64_t k = 1; k <= ref.steps; ++k) {
    x = hybrid_step(x, kind, c);
    for (int64_t i = 0; i < N; ++i) diff = std::fmax(diff, std::fabs(x[i] - ref.traj[k * N + i]));
    if (!std::isfinite(x[0])) diff = INFINITY;
  }
  std::cout << "C++ host: L96 n=40 + " << kind << " correction, " << ref.steps
            << " steps (" << (fused ? "fused" : "unfused") << " multiply-adds): max |host - python| = " << diff << " (bar 1e-10)" << std::endl;
  return diff <= 1e-10 ? 0 : 1;
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
