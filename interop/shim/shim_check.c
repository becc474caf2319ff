/* Plain-C check of the shim's API (compiled as C, so the header is C-clean): every misuse returns an
 * error code and a message, never a crash; forward, jvp and vjp agree with each other.
 * Usage: shim_check CORRECTION.torchscript.pt   (prints one line; exit 0 when every check holds) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "hybrida_shim.h"

#define N 40
static int failures = 0;

static void expect(int got, int want, const char* what, const char* msg) {
  if (got != want) {
    fprintf(stderr, "shim_check: %s: code %d, expected %d (%s)\n", what, got, want, msg);
    ++failures;
  }
}

int main(int argc, char** argv) {
  char msg[512];
  hyb_part* part = NULL;
  double x[2 * N], y[2 * N], dx[N], dy[N], y1[N], mdx[N], mtdy[N];
  if (argc != 2) {
    fprintf(stderr, "usage: shim_check CORRECTION.torchscript.pt\n");
    return 2;
  }
  hyb_set_num_threads(1);
  expect(hyb_part_load(argv[1], "correction", N, NULL, msg, sizeof msg), HYB_ERR_ARG, "NULL handle pointer", msg);
  expect(hyb_part_load("/nonexistent.pt", "", N, &part, msg, sizeof msg), HYB_ERR_FILE, "missing file", msg);
  expect(part == NULL, 1, "handle after a failed load is NULL", "");
  expect(hyb_part_load(argv[1], "surrogate", N, &part, msg, sizeof msg), HYB_ERR_MANIFEST, "wrong kind", msg);
  expect(hyb_part_load(argv[1], "correction", N - 1, &part, msg, sizeof msg), HYB_ERR_SHAPE, "wrong n", msg);
  expect(hyb_part_load(argv[1], "correction", N, &part, NULL, 0), HYB_OK, "load", "");
  for (int i = 0; i < 2 * N; ++i) x[i] = 3.0 + sin(1.0 + i);
  for (int i = 0; i < N; ++i) dx[i] = cos(2.0 * i), dy[i] = sin(3.0 * i);
  expect(hyb_part_forward(NULL, x, 1, N, y, msg, sizeof msg), HYB_ERR_ARG, "forward on NULL", msg);
  expect(hyb_part_forward(part, x, 1, N + 1, y, msg, sizeof msg), HYB_ERR_SHAPE, "forward wrong n", msg);
  expect(hyb_part_forward(part, x, 0, N, y, msg, sizeof msg), HYB_ERR_ARG, "forward batch 0", msg);
  expect(hyb_part_forward(part, x, 2, N, y, msg, sizeof msg), HYB_OK, "forward batch 2", msg);
  expect(hyb_part_jvp(part, x, dx, N, y1, mdx, msg, sizeof msg), HYB_OK, "jvp", msg);
  double same = 0.0, lhs = 0.0, rhs = 0.0;
  for (int i = 0; i < N; ++i) same = fmax(same, fabs(y1[i] - y[i]));
  expect(hyb_part_vjp(part, x, dy, N, y1, mtdy, msg, sizeof msg), HYB_OK, "vjp", msg);
  for (int i = 0; i < N; ++i) lhs += mdx[i] * dy[i], rhs += dx[i] * mtdy[i];
  const double rel = fabs(lhs - rhs) / fmax(fabs(lhs), fabs(rhs));
  expect(same == 0.0, 1, "jvp's y equals forward's", "");
  expect(rel <= 1e-12, 1, "correction adjoint test", "");
  char kind[64];
  expect(hyb_part_manifest_string(part, "correction_kind", kind, sizeof kind), HYB_OK, "manifest string", kind);
  expect(hyb_part_manifest_string(part, "no_such_key", kind, sizeof kind), HYB_ERR_MANIFEST, "absent key", kind);
  hyb_part_free(part);
  hyb_part_free(NULL);
  printf("C shim check: %d failures; correction adjoint test relative difference %.3g\n", failures, rel);
  return failures == 0 ? 0 : 1;
}
