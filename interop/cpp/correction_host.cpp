// Load a TorchScript correction exported by `hybrida export` and compare it with Python's outputs.
//
// Usage: correction_host MODEL.torchscript.pt REFERENCE.bin
// REFERENCE.bin (written by make_reference.py): int64 batch, int64 n, then batch*n float64 inputs x,
// then batch*n float64 outputs y = correction(x) computed in Python. Prints the maximum
// |host - python| and exits 1 when it exceeds 1e-12, 2 on bad input (never a crash).
#include <torch/script.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "error: usage: correction_host MODEL.torchscript.pt REFERENCE.bin\n";
    return 2;
  }
  std::ifstream in(argv[2], std::ios::binary);
  int64_t batch = 0, n = 0;
  if (!in.read(reinterpret_cast<char*>(&batch), 8) || !in.read(reinterpret_cast<char*>(&n), 8) ||
      batch < 1 || n < 1 || batch * n > (int64_t{1} << 28)) {
    std::cerr << "error: " << argv[2] << ": not a reference file (bad header)\n";
    return 2;
  }
  std::vector<double> x(batch * n), y(batch * n);
  if (!in.read(reinterpret_cast<char*>(x.data()), 8 * batch * n) ||
      !in.read(reinterpret_cast<char*>(y.data()), 8 * batch * n)) {
    std::cerr << "error: " << argv[2] << ": truncated reference file\n";
    return 2;
  }
  torch::jit::script::Module module;
  try {
    module = torch::jit::load(argv[1]);
  } catch (const c10::Error& e) {
    std::cerr << "error: " << argv[1] << ": cannot load the TorchScript file\n";
    return 2;
  }
  module.eval();
  torch::NoGradGuard no_grad;
  auto xt = torch::from_blob(x.data(), {batch, n}, torch::kFloat64).clone();
  torch::Tensor out;
  try {
    out = module.forward({xt}).toTensor().contiguous();
  } catch (const std::exception& e) {  // torch::jit::JITException and c10::Error
    std::string what = e.what();  // the exported part's own check names the shape it wants
    auto at = what.find("hybrida exported part");
    what = at == std::string::npos ? what : what.substr(at);
    std::cerr << "error: input (" << batch << ", " << n << ") refused: " << what.substr(0, what.find('\n')) << "\n";
    return 2;
  }
  if (out.dim() != 2 || out.size(0) != batch || out.size(1) != n || out.scalar_type() != torch::kFloat64) {
    std::cerr << "error: the model returned " << out.sizes() << " " << out.scalar_type()
              << ", expected (" << batch << ", " << n << ") float64\n";
    return 2;
  }
  const double* o = out.data_ptr<double>();
  double diff = 0.0;
  for (int64_t i = 0; i < batch * n; ++i) diff = std::fmax(diff, std::fabs(o[i] - y[i]));
  std::cout << "max |host - python| = " << diff << " (batch " << batch << ", n " << n << ")\n";
  return diff <= 1e-12 ? 0 : 1;
}
