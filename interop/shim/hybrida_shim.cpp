// The shim: load a hybrida-exported TorchScript part, check it against its manifest, run it forward,
// tangent-linear and adjoint; a C interface (hybrida_shim.h) that reports errors as codes + messages.
#include "hybrida_shim.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/runtime/graph_executor.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

#include "hybrida_part.hpp"

namespace hybrida {
namespace {

std::string read_file(const std::string& path, bool& ok) {
  std::ifstream in(path, std::ios::binary);
  ok = static_cast<bool>(in);
  if (!ok) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string basename(const std::string& path) {
  auto at = path.find_last_of('/');
  return at == std::string::npos ? path : path.substr(at + 1);
}

std::string required(const std::string& json, const std::string& key, const std::string& mpath) {
  bool found = false;
  std::string v = json_string(json, key, found);
  if (!found) throw Error(HYB_ERR_MANIFEST, mpath + ": the manifest has no \"" + key + "\"; re-export with hybrida export");
  return v;
}

}  // namespace

std::string first_line(const std::string& what) {
  auto at = what.find("hybrida exported part");
  std::string s = at == std::string::npos ? what : what.substr(at);
  s = s.substr(0, s.find('\n'));
  auto stop = s.find(". ", 40);  // libtorch's long explanations: their first sentence
  return stop == std::string::npos ? s : s.substr(0, stop + 1);
}

std::string json_string(const std::string& s, const std::string& key, bool& found) {
  found = false;
  auto skip = [&](size_t j) {
    while (j < s.size() && std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    return j;
  };
  auto read = [&](size_t& j) {  // s[j] == '"'; leaves j after the closing quote
    std::string out;
    for (++j; j < s.size() && s[j] != '"'; ++j) {
      if (s[j] == '\\' && j + 1 < s.size()) ++j;
      out += s[j];
    }
    ++j;
    return out;
  };
  int depth = 0;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (c == '"') {
      std::string str = read(i);
      size_t j = skip(i);
      if (depth == 1 && j < s.size() && s[j] == ':') {  // a key of the top-level object
        j = skip(j + 1);
        if (str == key) {
          if (j < s.size() && s[j] == '"') {
            found = true;
            return read(j);
          }
          return "";
        }
        i = j;
      }
      continue;
    }
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    ++i;
  }
  return "";
}

std::string sha256_hex(const std::string& bytes) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
      0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
      0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
      0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
      0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
      0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
      0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  std::string m = bytes;
  const uint64_t bits = static_cast<uint64_t>(bytes.size()) * 8;
  m += static_cast<char>(0x80);
  while (m.size() % 64 != 56) m += '\0';
  for (int s = 56; s >= 0; s -= 8) m += static_cast<char>((bits >> s) & 0xff);
  auto rotr = [](uint32_t x, int r) { return (x >> r) | (x << (32 - r)); };
  for (size_t off = 0; off < m.size(); off += 64) {
    uint32_t w[64];
    for (int t = 0; t < 16; ++t) {
      const auto* p = reinterpret_cast<const unsigned char*>(m.data() + off + 4 * t);
      w[t] = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    }
    for (int t = 16; t < 64; ++t) {
      uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; ++t) {
      uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t];
      uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (uint32_t v : h)
    for (int s = 28; s >= 0; s -= 4) out += hex[(v >> s) & 0xf];
  return out;
}

Part load_part(const std::string& path, const std::string& kind, int64_t n) {
  if (n < 1) throw Error(HYB_ERR_ARG, "the state size n must be >= 1, got " + std::to_string(n));
  bool ok = false;
  std::string bytes = read_file(path, ok);
  if (!ok) throw Error(HYB_ERR_FILE, path + ": no such file (or unreadable)");
  const std::string mpath = path + ".json";
  Part part;
  part.path = path;
  part.manifest = read_file(mpath, ok);
  if (!ok) throw Error(HYB_ERR_FILE, mpath + ": missing; keep the manifest hybrida export wrote beside " + basename(path));
  bool found = false;
  if (json_string(part.manifest, "manifest", found) != "hybrida.export" || !found)
    throw Error(HYB_ERR_MANIFEST, mpath + ": not a hybrida export manifest");
  if (required(part.manifest, "file", mpath) != basename(path) || required(part.manifest, "sha256", mpath) != sha256_hex(bytes))
    throw Error(HYB_ERR_MANIFEST, mpath + ": written for another file (name or sha256 differ); keep each export with its own manifest");
  if (required(part.manifest, "format", mpath) != "torchscript")
    throw Error(HYB_ERR_MANIFEST, path + ": not a TorchScript export; export with --format torchscript");
  if (required(part.manifest, "dtype", mpath) != "float64")
    throw Error(HYB_ERR_MANIFEST, path + ": exported as " + required(part.manifest, "dtype", mpath) + "; the shim works in float64 (export with --dtype float64)");
  const std::string got = required(part.manifest, "kind", mpath);
  if (!kind.empty() && got != kind) throw Error(HYB_ERR_MANIFEST, path + ": is a " + got + ", this host needs a " + kind);
  try {
    torch::jit::setGraphExecutorOptimize(false);  // run the recorded ops as recorded: Python's eager arithmetic
    part.module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    throw Error(HYB_ERR_LOAD, path + ": libtorch cannot load it: " + first_line(e.what()));
  }
  part.module.eval();
  torch::NoGradGuard no_grad;
  torch::Tensor probe = forward(part, torch::zeros({1, n}, torch::kFloat64));
  part.n_in = n;
  part.n_out = probe.size(1);
  return part;
}

torch::Tensor forward(Part& part, const torch::Tensor& x) {
  torch::Tensor y;
  try {
    y = part.module.forward({x}).toTensor();
  } catch (const std::exception& e) {
    std::string why = first_line(e.what());
    int code = why.rfind("hybrida exported part", 0) == 0 ? HYB_ERR_SHAPE : HYB_ERR_RUN;
    std::ostringstream msg;
    msg << part.path << ": refused an input of shape " << x.sizes() << ": " << why;
    throw Error(code, msg.str());
  }
  if (y.dim() != 2 || y.size(0) != x.size(0) || y.scalar_type() != torch::kFloat64)
    throw Error(HYB_ERR_RUN, part.path + ": returned a tensor that is not (batch, n_out) float64");
  return y.contiguous();
}

}  // namespace hybrida

struct hyb_part {
  hybrida::Part part;
};

namespace {

int fail(char* msg, int64_t len, int code, const std::string& what) {
  if (msg != nullptr && len > 0) {
    size_t m = std::min<size_t>(what.size(), static_cast<size_t>(len - 1));
    std::memcpy(msg, what.data(), m);
    msg[m] = '\0';
  }
  return code;
}

template <class F>
int guarded(char* msg, int64_t len, F&& body) {
  try {
    body();
    return fail(msg, len, HYB_OK, "");
  } catch (const hybrida::Error& e) {
    return fail(msg, len, e.code, e.what());
  } catch (const std::exception& e) {
    return fail(msg, len, HYB_ERR_RUN, hybrida::first_line(e.what()));
  } catch (...) {
    return fail(msg, len, HYB_ERR_RUN, "unknown error");
  }
}

torch::Tensor wrap(const double* v, int64_t rows, int64_t n) {
  return torch::from_blob(const_cast<double*>(v), {rows, n}, torch::kFloat64).clone();
}

void check(const hyb_part* p, const void* a, const void* b, const void* c, int64_t n) {
  if (p == nullptr || a == nullptr || b == nullptr || c == nullptr)
    throw hybrida::Error(HYB_ERR_ARG, "NULL handle or array");
  if (n != p->part.n_in)
    throw hybrida::Error(HYB_ERR_SHAPE, p->part.path + ": takes n=" + std::to_string(p->part.n_in) + " states, the host passed n=" + std::to_string(n));
}

void copy_out(const torch::Tensor& t, double* out) {
  std::memcpy(out, t.contiguous().data_ptr<double>(), sizeof(double) * t.numel());
}

}  // namespace

extern "C" {

int hyb_part_load(const char* path, const char* kind, int64_t n, hyb_part** part, char* msg, int64_t msg_len) {
  return guarded(msg, msg_len, [&] {
    if (path == nullptr || part == nullptr) throw hybrida::Error(HYB_ERR_ARG, "NULL path or handle pointer");
    *part = nullptr;
    auto* p = new hyb_part{hybrida::load_part(path, kind == nullptr ? "" : kind, n)};
    *part = p;
  });
}

int hyb_part_forward(hyb_part* p, const double* x, int64_t batch, int64_t n, double* y, char* msg, int64_t msg_len) {
  return guarded(msg, msg_len, [&] {
    check(p, x, y, x, n);
    if (batch < 1) throw hybrida::Error(HYB_ERR_ARG, "batch must be >= 1, got " + std::to_string(batch));
    torch::NoGradGuard no_grad;
    copy_out(hybrida::forward(p->part, wrap(x, batch, n)), y);
  });
}

int hyb_part_jvp(hyb_part* p, const double* x, const double* dx, int64_t n, double* y, double* mdx, char* msg,
                 int64_t msg_len) {
  return guarded(msg, msg_len, [&] {
    check(p, x, dx, y, n);
    check(p, mdx, mdx, mdx, n);
    torch::AutoGradMode grad(true);
    torch::Tensor xt = wrap(x, 1, n).requires_grad_(true);
    torch::Tensor yt = hybrida::forward(p->part, xt);
    // M dx by reverse mode twice: g(u) = M^T u is linear in u, and d<g(u), dx>/du = M dx.
    torch::Tensor u = torch::zeros_like(yt).requires_grad_(true);
    torch::Tensor g = torch::autograd::grad({yt}, {xt}, {u}, true, true)[0];
    torch::Tensor m = torch::autograd::grad({g}, {u}, {wrap(dx, 1, n)})[0];
    copy_out(yt.detach(), y);
    copy_out(m, mdx);
  });
}

int hyb_part_vjp(hyb_part* p, const double* x, const double* dy, int64_t n, double* y, double* mtdy, char* msg,
                 int64_t msg_len) {
  return guarded(msg, msg_len, [&] {
    check(p, x, dy, y, n);
    check(p, mtdy, mtdy, mtdy, n);
    torch::AutoGradMode grad(true);
    torch::Tensor xt = wrap(x, 1, n).requires_grad_(true);
    torch::Tensor yt = hybrida::forward(p->part, xt);
    torch::Tensor a = torch::autograd::grad({yt}, {xt}, {wrap(dy, 1, p->part.n_out)})[0];
    copy_out(yt.detach(), y);
    copy_out(a, mtdy);
  });
}

int hyb_part_sizes(const hyb_part* p, int64_t* n_in, int64_t* n_out) {
  if (p == nullptr || n_in == nullptr || n_out == nullptr) return HYB_ERR_ARG;
  *n_in = p->part.n_in;
  *n_out = p->part.n_out;
  return HYB_OK;
}

int hyb_part_manifest_string(const hyb_part* p, const char* key, char* out, int64_t out_len) {
  if (p == nullptr || key == nullptr) return fail(out, out_len, HYB_ERR_ARG, "");
  bool found = false;
  std::string v = hybrida::json_string(p->part.manifest, key, found);
  return fail(out, out_len, found ? HYB_OK : HYB_ERR_MANIFEST, v);
}

void hyb_set_num_threads(int threads) {
  if (threads >= 1) at::set_num_threads(threads);
}

void hyb_part_free(hyb_part* p) { delete p; }

}  // extern "C"
