/* C interface to a hybrida-exported TorchScript part (surrogate step, model-error correction, ...).
 *
 * Implemented in C++ against libtorch (hybrida_shim.cpp); callable from C and, through
 * iso_c_binding, from Fortran (interop/fortran/hybrida_torch.f90). Every function returns an
 * error code (HYB_OK = 0) and, on error, writes a one-line, NUL-terminated message into
 * msg[0 .. msg_len-1] (msg may be NULL). No function throws or aborts on bad input.
 * Arrays are float64, row-major (C order): x[b * n + i] is state variable i of batch member b.
 */
#ifndef HYBRIDA_SHIM_H
#define HYBRIDA_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  HYB_OK = 0,
  HYB_ERR_FILE = 1,     /* the exported file or its manifest is missing or unreadable */
  HYB_ERR_MANIFEST = 2, /* the manifest is not a hybrida manifest, is for another file, or another kind */
  HYB_ERR_LOAD = 3,     /* libtorch cannot load the file */
  HYB_ERR_SHAPE = 4,    /* the host passed a shape the part does not take */
  HYB_ERR_RUN = 5,      /* the forward or autograd pass failed */
  HYB_ERR_ARG = 6       /* a NULL handle / array or a non-positive size */
};

typedef struct hyb_part hyb_part; /* opaque handle */

/* Load PATH (a `hybrida export` TorchScript file) and check it: the manifest PATH.json exists, names
 * this file and its sha256 matches, is float64, its "kind" equals KIND (e.g. "correction";
 * NULL or "" accepts any), and a (1, n) probe returns (1, n_out). On success *part is a new handle. */
int hyb_part_load(const char* path, const char* kind, int64_t n, hyb_part** part, char* msg, int64_t msg_len);

/* y (batch, n_out) = part(x (batch, n)). */
int hyb_part_forward(hyb_part* part, const double* x, int64_t batch, int64_t n, double* y, char* msg,
                     int64_t msg_len);

/* Tangent linear: y = part(x), mdx = M(x) dx, for one state x (n); via libtorch autograd
 * (reverse mode twice: the double-backward trick). y and mdx have n_out values. */
int hyb_part_jvp(hyb_part* part, const double* x, const double* dx, int64_t n, double* y, double* mdx,
                 char* msg, int64_t msg_len);

/* Adjoint: y = part(x), mtdy = M(x)^T dy, for one state x (n), dy (n_out); reverse-mode autograd. */
int hyb_part_vjp(hyb_part* part, const double* x, const double* dy, int64_t n, double* y, double* mtdy,
                 char* msg, int64_t msg_len);

/* n_in and n_out of a loaded part (HYB_ERR_ARG for a NULL handle). */
int hyb_part_sizes(const hyb_part* part, int64_t* n_in, int64_t* n_out);

/* A top-level string value of the manifest (e.g. "kind", "correction_kind", "dtype") into out;
 * HYB_ERR_MANIFEST when the key is absent or not a string. */
int hyb_part_manifest_string(const hyb_part* part, const char* key, char* out, int64_t out_len);

/* Limit libtorch's intra-op threads (hosts that compare bit for bit use 1). */
void hyb_set_num_threads(int threads);

/* Release a handle (NULL is accepted). */
void hyb_part_free(hyb_part* part);

#ifdef __cplusplus
}
#endif

#endif /* HYBRIDA_SHIM_H */
