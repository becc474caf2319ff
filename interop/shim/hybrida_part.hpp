// C++ side of the shim: load a hybrida-exported TorchScript part with its manifest checked.
// The C++ hosts use this directly (and libtorch's autograd on part.module); the C API in
// hybrida_shim.h wraps it for C and Fortran.
#pragma once

#include <torch/script.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace hybrida {

// A failure with the shim's error code (HYB_ERR_* of hybrida_shim.h) and a one-line message.
struct Error : std::runtime_error {
  int code;
  Error(int c, const std::string& what) : std::runtime_error(what), code(c) {}
};

struct Part {
  torch::jit::Module module;
  std::string manifest;  // the JSON text of PATH.json
  std::string path;
  int64_t n_in = 0, n_out = 0;
};

// Load and check PATH and PATH.json (see hyb_part_load); throws Error.
Part load_part(const std::string& path, const std::string& kind, int64_t n);

// y = part(x) for x of shape (batch, n); throws Error (HYB_ERR_SHAPE when the part refuses the shape).
torch::Tensor forward(Part& part, const torch::Tensor& x);

// The part's own refusal ("hybrida exported part: input must be ...") or the first line of a libtorch error.
std::string first_line(const std::string& what);

// A top-level string value of a JSON object text, or "" with found=false.
std::string json_string(const std::string& json, const std::string& key, bool& found);

// Lower-case hex SHA-256 of a byte string (FIPS 180-4).
std::string sha256_hex(const std::string& bytes);

}  // namespace hybrida
