// Node-API glue: unpacks typed arrays (their own memory, never copied) and numbers, checks that every operand is
// long enough for the sizes given, runs the kernel and turns kernel errors into JavaScript exceptions.
#include <malloc.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <csignal>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <node_api.h>

#include <vector>

#include "kernels.h"

namespace dsv2 {

static int g_threads = 0;

bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f"); }
std::atomic<int> g_isa{cpu_has_avx512() ? 1 : 0};

/** More threads than 8 per core only slow the kernels down, and libgomp fails on absurd counts (10⁵ segfaulted). */
static int max_threads() { return std::max(1, 8 * omp_get_num_procs()); }

int threads() {
  if (g_threads == 0) {
    const char* env = std::getenv("DSV2_THREADS");
    const int n = env ? std::atoi(env) : 0;
    g_threads = n > 0 ? std::min(n, max_threads()) : omp_get_num_procs();
  }
  return g_threads;
}

void set_threads(int n) { g_threads = n > 0 ? std::min(n, max_threads()) : omp_get_num_procs(); }

float* scratch(int slot, size_t floats) {
  struct Buf {
    float* p = nullptr;
    size_t n = 0;
    ~Buf() { std::free(p); }
  };
  thread_local Buf bufs[6];
  Buf& b = bufs[slot];
  if (b.n < floats) {
    std::free(b.p);
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    b.p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!b.p) throw KernelError("out of memory for a packing buffer");
    b.n = floats;
  }
  return b.p;
}

}  // namespace dsv2

namespace {

using namespace dsv2;

struct Call {
  napi_env env;
  napi_value argv[16];
  size_t argc = 16;
  Call(napi_env e, napi_callback_info info) : env(e) { napi_get_cb_info(e, info, &argc, argv, nullptr, nullptr); }

  void* typed(size_t i, napi_typedarray_type want, double need, const char* what) {
    if (i >= argc) throw KernelError(std::string(what) + ": missing argument");
    return typed_value(argv[i], want, need, what, "argument " + std::to_string(i));
  }
  /** The memory of typed array `v`, checked for element type and for holding at least `need` elements. */
  void* typed_value(napi_value v, napi_typedarray_type want, double need, const char* what, const std::string& name) {
    napi_typedarray_type type;
    size_t length;
    void* data;
    bool is;
    napi_is_typedarray(env, v, &is);
    if (!is) throw KernelError(std::string(what) + ": " + name + " is not a typed array");
    napi_get_typedarray_info(env, v, &type, &length, &data, nullptr, nullptr);
    const bool word = want == napi_float32_array && type == napi_int32_array && allow_int;
    if (type != want && !word) throw KernelError(std::string(what) + ": " + name + " has the wrong element type");
    if ((double)length < need)
      throw KernelError(std::string(what) + ": " + name + " holds " + std::to_string(length) + " elements, needs " + std::to_string((i64)need));
    return data;
  }
  /** Element j of the JavaScript array argument i, a Float32Array of at least `need` elements. */
  float* f32_at(size_t i, uint32_t j, double need, const char* what) {
    napi_value v;
    if (i >= argc || napi_get_element(env, argv[i], j, &v) != napi_ok) throw KernelError(std::string(what) + ": argument " + std::to_string(i) + " is not an array");
    return static_cast<float*>(typed_value(v, napi_float32_array, need, what, "item " + std::to_string(j) + " of argument " + std::to_string(i)));
  }
  bool allow_int = false;  // copy moves 4-byte words: int32 tensors go through the float path bit for bit
  float* f32(size_t i, double need, const char* what) { return static_cast<float*>(typed(i, napi_float32_array, need, what)); }
  int32_t* i32(size_t i, double need, const char* what) { return static_cast<int32_t*>(typed(i, napi_int32_array, need, what)); }
  const double* f64(size_t i, double need, const char* what) { return static_cast<const double*>(typed(i, napi_float64_array, need, what)); }
  bool is_null(size_t i) {
    napi_valuetype t;
    napi_typeof(env, argv[i], &t);
    return t == napi_null || t == napi_undefined;
  }
  double num(size_t i) {
    double d = 0;
    napi_get_value_double(env, argv[i], &d);
    return d;
  }
  i64 n(size_t i) { return (i64)num(i); }
  std::string str(size_t i) {
    size_t len = 0;
    if (i >= argc || napi_get_value_string_utf8(env, argv[i], nullptr, 0, &len) != napi_ok) throw KernelError("expected a string argument");
    std::string s(len, '\0');
    napi_get_value_string_utf8(env, argv[i], s.data(), len + 1, &len);
    return s;
  }
  bool flag(size_t i) {
    bool b = false;
    napi_get_value_bool(env, argv[i], &b);
    return b;
  }
};

template <class F>
napi_value guarded(napi_env env, F body) {
  try {
    return body();
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, e.what());
  }
  return nullptr;
}

napi_value undef(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

napi_value string(napi_env env, const char* s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

/** Elements a strided operand reaches: offset + Σ (shape_d − 1)·|stride_d| + 1. */
double reach(i64 off, const i64* strides, const i64* shape, int nd) {
  double r = (double)off;
  for (int d = 0; d < nd; d++) {
    if (shape[d] == 0) return 0;
    r += (double)(shape[d] - 1) * (double)std::llabs(strides[d]);
  }
  return r + 1;
}

#define FN(name) napi_value name(napi_env env, napi_callback_info info)
#define BODY(what, ...) \
  return guarded(env, [&]() -> napi_value { \
    Call c(env, info);                      \
    const char* W = what;                   \
    (void)W;                                \
    __VA_ARGS__                             \
  })

FN(Threads) { return number(env, threads()); }
FN(SetThreads) { BODY("setThreads", set_threads((int)c.n(0)); return undef(env);); }
FN(Avx2) {
  napi_value v;
  napi_get_boolean(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), &v);
  return v;
}

FN(Isa) { return string(env, use_avx512() ? "avx512" : "avx2"); }
FN(Isas) {
  napi_value a;
  napi_create_array(env, &a);
  napi_set_element(env, a, 0, string(env, "avx2"));
  if (cpu_has_avx512()) napi_set_element(env, a, 1, string(env, "avx512"));
  return a;
}
// setIsa(name): "avx2" or "avx512" (refused where the CPU lacks it)
FN(SetIsa) {
  BODY("setIsa", {
    const std::string name = c.str(0);
    if (name == "avx2") g_isa = 0;
    else if (name == "avx512" && cpu_has_avx512()) g_isa = 1;
    else if (name == "avx512") throw KernelError("this CPU lacks AVX-512 (AVX-512F); it runs avx2");
    else throw KernelError("unknown instruction set '" + name + "' (avx2 or avx512)");
    return undef(env);
  });
}

// copy(src, dst, meta): meta = [nd, accumulate, srcOff, dstOff, shape×nd, srcStrides×nd, dstStrides×nd]
FN(Copy) {
  BODY("copy", {
    const double* m = c.f64(2, 4, W);
    const int nd = (int)m[0];
    if (nd > 16) throw KernelError("copy: more than 16 dimensions");
    i64 v[48];
    for (int i = 0; i < 3 * nd; i++) v[i] = (i64)m[4 + i];
    const i64 *shape = v, *ss = v + nd, *ds = v + 2 * nd;
    c.allow_int = m[1] == 0;
    const float* src = c.f32(0, reach((i64)m[2], ss, shape, nd), W);
    float* dst = c.f32(1, reach((i64)m[3], ds, shape, nd), W);
    copy_strided(src, (i64)m[2], ss, dst, (i64)m[3], ds, shape, nd, m[1] != 0);
    return undef(env);
  });
}

FN(Fill) {
  BODY("fill", {
    const i64 n = c.n(1);
    float* out = c.f32(0, n, W);
    std::fill(out, out + n, (float)c.num(2));
    return undef(env);
  });
}

// binary(op, a, b, out, meta): meta = [nd, aOff, bOff, shape×nd, aStrides×nd, bStrides×nd]
FN(Binary) {
  BODY("binary", {
    const double* m = c.f64(4, 3, W);
    const int nd = (int)m[0];
    if (nd > 16) throw KernelError("binary: more than 16 dimensions");
    i64 v[48];
    for (int i = 0; i < 3 * nd; i++) v[i] = (i64)m[3 + i];
    const i64 *shape = v, *as = v + nd, *bs = v + 2 * nd;
    double total = 1;
    for (int d = 0; d < nd; d++) total *= (double)shape[d];
    const float* a = c.f32(1, reach((i64)m[1], as, shape, nd), W);
    const float* b = c.f32(2, reach((i64)m[2], bs, shape, nd), W);
    float* out = c.f32(3, total, W);
    binary((int)c.n(0), a, (i64)m[1], as, b, (i64)m[2], bs, out, shape, nd);
    return undef(env);
  });
}

FN(Unary) {
  BODY("unary", {
    const i64 n = c.n(3);
    unary((int)c.n(0), c.f32(1, n, W), c.f32(2, n, W), n, (float)c.num(4));
    return undef(env);
  });
}

FN(UnaryBackward) {
  BODY("unary backward", {
    const i64 n = c.n(5);
    unary_backward((int)c.n(0), c.f32(1, n, W), c.f32(2, n, W), c.f32(3, n, W), c.f32(4, n, W), n, (float)c.num(6));
    return undef(env);
  });
}

FN(Reduce) {
  BODY("reduce", {
    const i64 O = c.n(4), N = c.n(5), I = c.n(6);
    int32_t* arg = c.is_null(3) ? nullptr : c.i32(3, O * I, W);
    reduce(c.flag(0), c.f32(1, (double)O * N * I, W), c.f32(2, O * I, W), arg, O, N, I);
    return undef(env);
  });
}

FN(ReduceMaxBackward) {
  BODY("reduce-max backward", {
    const i64 O = c.n(3), N = c.n(4), I = c.n(5);
    const int32_t* arg = c.i32(1, O * I, W);
    for (i64 i = 0; i < O * I; i++)
      if (arg[i] < 0 || arg[i] >= N) throw KernelError("reduce-max backward: arg-max index outside the axis");
    reduce_max_backward(c.f32(0, O * I, W), arg, c.f32(2, (double)O * N * I, W), O, N, I);
    return undef(env);
  });
}

// gemm(a, b, c, meta): meta = [batch, M, N, K, aOff, aBS, aRS, aCS, bOff, bBS, bRS, bCS, cOff, cBS, alpha, beta]
GemmArgs gemm_args(const double* m) {
  GemmArgs g{};
  g.batch = (i64)m[0], g.M = (i64)m[1], g.N = (i64)m[2], g.K = (i64)m[3];
  g.aOff = (i64)m[4], g.aBS = (i64)m[5], g.aRS = (i64)m[6], g.aCS = (i64)m[7];
  g.bOff = (i64)m[8], g.bBS = (i64)m[9], g.bRS = (i64)m[10], g.bCS = (i64)m[11];
  g.cOff = (i64)m[12], g.cBS = (i64)m[13], g.alpha = (float)m[14], g.beta = (float)m[15];
  return g;
}

/** Elements each operand of `g` reaches: A, B and C. */
void gemm_reach(const GemmArgs& g, double r[3]) {
  const i64 as[3] = {g.aBS, g.aRS, g.aCS}, ash[3] = {g.batch, g.M, g.K};
  const i64 bs[3] = {g.bBS, g.bRS, g.bCS}, bsh[3] = {g.batch, g.K, g.N};
  const i64 cs[3] = {g.cBS, g.N, 1}, csh[3] = {g.batch, g.M, g.N};
  r[0] = g.K ? reach(g.aOff, as, ash, 3) : 0;
  r[1] = g.K ? reach(g.bOff, bs, bsh, 3) : 0;
  r[2] = reach(g.cOff, cs, csh, 3);
}

FN(Gemm) {
  BODY("gemm", {
    GemmArgs g = gemm_args(c.f64(3, 16, W));
    if (g.batch > 0 && g.M > 0 && g.N > 0) {
      double r[3];
      gemm_reach(g, r);
      g.a = c.f32(0, r[0], W);
      g.b = c.f32(1, r[1], W);
      g.c = c.f32(2, r[2], W);
      gemm(g);
    }
    return undef(env);
  });
}

// gemmMany(as, bs, cs, meta, count): arrays of operands; meta holds `count` gemm metas of 16 numbers each
FN(GemmMany) {
  BODY("gemmMany", {
    const i64 count = c.n(4);
    const double* m = c.f64(3, 16.0 * (double)count, W);
    std::vector<GemmArgs> items;
    items.reserve(count);
    for (i64 i = 0; i < count; i++) {
      GemmArgs g = gemm_args(m + 16 * i);
      if (g.batch <= 0 || g.M <= 0 || g.N <= 0) continue;
      double r[3];
      gemm_reach(g, r);
      g.a = c.f32_at(0, (uint32_t)i, r[0], W);
      g.b = c.f32_at(1, (uint32_t)i, r[1], W);
      g.c = c.f32_at(2, (uint32_t)i, r[2], W);
      items.push_back(g);
    }
    gemm_many(items.data(), (i64)items.size());
    return undef(env);
  });
}

/** A byte array argument (a stored weight) of at least `need` bytes. */
const uint8_t* bytes_arg(Call& c, napi_value v, double need, const char* what) {
  return static_cast<const uint8_t*>(c.typed_value(v, napi_uint8_array, need, what, "the weight"));
}

// qgemmMany(xs, ws, ys, meta, count): meta holds 7 numbers per product: type, M, N, K, xOffset, yOffset, beta
FN(QGemmMany) {
  BODY("qgemm", {
    const i64 count = c.n(4);
    const double* m = c.f64(3, 7.0 * (double)count, W);
    std::vector<QGemmArgs> items;
    items.reserve(count);
    for (i64 i = 0; i < count; i++) {
      const double* q = m + 7 * i;
      QGemmArgs g{(int)q[0], (i64)q[1], (i64)q[2], (i64)q[3], nullptr, nullptr, nullptr, q[6] != 0};
      const i64 be = quant_block_bytes(g.type), bel = quant_block_elems(g.type);
      if (!be) throw KernelError("qgemm: unknown weight type " + std::to_string(g.type));
      if (g.K % bel) throw KernelError("qgemm: rows of " + std::to_string(g.K) + " values do not fill blocks of " + std::to_string(bel));
      if (g.M <= 0 || g.N <= 0) continue;
      const i64 xOff = (i64)q[4], yOff = (i64)q[5];
      napi_value v;
      napi_get_element(env, c.argv[0], (uint32_t)i, &v);
      g.x = static_cast<const float*>(c.typed_value(v, napi_float32_array, (double)xOff + (double)g.M * g.K, W, "x")) + xOff;
      napi_get_element(env, c.argv[1], (uint32_t)i, &v);
      g.w = bytes_arg(c, v, (double)g.N * (double)(g.K / bel) * (double)be, W);
      napi_get_element(env, c.argv[2], (uint32_t)i, &v);
      g.y = static_cast<float*>(c.typed_value(v, napi_float32_array, (double)yOff + (double)g.M * g.N, W, "y")) + yOff;
      items.push_back(g);
    }
    qgemm_many(items.data(), (i64)items.size());
    return undef(env);
  });
}

// dequantRows(type, w, idx, out, M, N, K)
FN(DequantRows) {
  BODY("dequantRows", {
    const int type = (int)c.n(0);
    const i64 M = c.n(4), N = c.n(5), K = c.n(6);
    const i64 be = quant_block_bytes(type), bel = quant_block_elems(type);
    if (!be || K % bel) throw KernelError("dequantRows: bad weight type or row length");
    dequant_rows(type, bytes_arg(c, c.argv[1], (double)N * (double)(K / bel) * (double)be, W), c.i32(2, M, W), c.f32(3, (double)M * K, W), M, N, K);
    return undef(env);
  });
}

// quantizeRows(type, x, out, rows, K)
FN(QuantizeRows) {
  BODY("quantizeRows", {
    const int type = (int)c.n(0);
    const i64 rows = c.n(3), K = c.n(4);
    const i64 be = quant_block_bytes(type), bel = quant_block_elems(type);
    if (!be || type > 7 || K % bel) throw KernelError("quantizeRows: bad weight type or row length");
    const double need = (double)rows * (double)(K / bel) * (double)be;
    uint8_t* out = static_cast<uint8_t*>(c.typed_value(c.argv[2], napi_uint8_array, need, W, "out"));
    quantize_rows(type, c.f32(1, (double)rows * K, W), out, rows, K);
    return undef(env);
  });
}

FN(RmsNorm) {
  BODY("rmsnorm", {
    const i64 R = c.n(4), D = c.n(5);
    rmsnorm(c.f32(0, R * D, W), c.f32(1, D, W), c.f32(2, R * D, W), c.f32(3, R, W), R, D, (float)c.num(6));
    return undef(env);
  });
}

FN(RmsNormBackward) {
  BODY("rmsnorm backward", {
    const i64 R = c.n(6), D = c.n(7);
    rmsnorm_backward(c.f32(0, R * D, W), c.f32(1, D, W), c.f32(2, R, W), c.f32(3, R * D, W), c.f32(4, R * D, W), c.f32(5, D, W), R, D);
    return undef(env);
  });
}

FN(Softmax) {
  BODY("softmax", {
    const i64 R = c.n(2), N = c.n(3);
    softmax(c.f32(0, R * N, W), c.f32(1, R * N, W), R, N, c.flag(4));
    return undef(env);
  });
}

FN(SoftmaxBackward) {
  BODY("softmax backward", {
    const i64 R = c.n(3), N = c.n(4);
    softmax_backward(c.f32(0, R * N, W), c.f32(1, R * N, W), c.f32(2, R * N, W), R, N, c.flag(5));
    return undef(env);
  });
}

FN(Swiglu) {
  BODY("swiglu", {
    const i64 n = c.n(3);
    swiglu(c.f32(0, n, W), c.f32(1, n, W), c.f32(2, n, W), n);
    return undef(env);
  });
}

FN(SwigluBackward) {
  BODY("swiglu backward", {
    const i64 n = c.n(5);
    swiglu_backward(c.f32(0, n, W), c.f32(1, n, W), c.f32(2, n, W), c.f32(3, n, W), c.f32(4, n, W), n);
    return undef(env);
  });
}

FN(CrossEntropy) {
  BODY("cross-entropy", {
    const i64 R = c.n(4), V = c.n(5);
    cross_entropy(c.f32(0, R * V, W), c.i32(1, R, W), c.f32(2, R, W), c.f32(3, R, W), R, V, (int32_t)c.n(6));
    return undef(env);
  });
}

FN(CrossEntropyBackward) {
  BODY("cross-entropy backward", {
    const i64 R = c.n(5), V = c.n(6);
    cross_entropy_backward(c.f32(0, R * V, W), c.i32(1, R, W), c.f32(2, R, W), c.f32(3, R, W), c.f32(4, R * V, W), R, V, (int32_t)c.n(7));
    return undef(env);
  });
}

FN(GatherRows) {
  BODY("gather rows", {
    const i64 M = c.n(3), N = c.n(4), D = c.n(5);
    gather_rows(c.f32(0, N * D, W), c.i32(1, M, W), c.f32(2, M * D, W), M, N, D);
    return undef(env);
  });
}

FN(ScatterAddRows) {
  BODY("scatter-add rows", {
    const i64 M = c.n(3), N = c.n(4), D = c.n(5);
    scatter_add_rows(c.f32(0, M * D, W), c.i32(1, M, W), c.f32(2, N * D, W), M, N, D, c.is_null(6) ? nullptr : c.f32(6, M, W));
    return undef(env);
  });
}

FN(ScatterRows) {
  BODY("scatter rows", {
    const i64 M = c.n(3), N = c.n(4), D = c.n(5);
    scatter_rows(c.f32(0, M * D, W), c.i32(1, M, W), c.f32(2, N * D, W), M, N, D);
    return undef(env);
  });
}

// pagedAttention(q, cache, blockTables, contextLens, out, meta[N, H, Hkv, Dk, Dv, scale, W, kOffset, kHeadStride,
// vOffset, vHeadStride, blockSize, numBlocks, maxBlocks])
FN(PagedAttention) {
  BODY("paged attention", {
    const double* m = c.f64(5, 14, W);
    PagedAttentionArgs a;
    a.N = (i64)m[0], a.H = (i64)m[1], a.Hkv = (i64)m[2], a.Dk = (i64)m[3], a.Dv = (i64)m[4], a.scale = (float)m[5];
    a.W = (i64)m[6], a.kOffset = (i64)m[7], a.kHeadStride = (i64)m[8], a.vOffset = (i64)m[9], a.vHeadStride = (i64)m[10];
    a.blockSize = (i64)m[11], a.numBlocks = (i64)m[12], a.maxBlocks = (i64)m[13];
    if (a.N < 0 || a.H < 1 || a.Hkv < 1 || a.blockSize < 1 || a.maxBlocks < 1) throw KernelError("paged attention: bad sizes");
    if (a.kOffset + (a.Hkv - 1) * a.kHeadStride + a.Dk > a.W || a.vOffset + (a.Hkv - 1) * a.vHeadStride + a.Dv > a.W)
      throw KernelError("paged attention: a key or value slice runs past the cache row");
    a.q = c.f32(0, a.N * a.H * a.Dk, W);
    a.cache = c.f32(1, a.numBlocks * a.blockSize * a.W, W);
    a.blockTables = c.i32(2, a.N * a.maxBlocks, W);
    a.contextLens = c.i32(3, a.N, W);
    paged_attention(a, c.f32(4, a.N * a.H * a.Dv, W));
    return undef(env);
  });
}

// mlaDecode(q, kvB, cache, blockTables, contextLens, out, meta[N, H, dn, dr, dc, dv, scale, blockSize, numBlocks, maxBlocks])
FN(MlaDecode) {
  BODY("mla decode", {
    const double* m = c.f64(6, 10, W);
    MlaDecodeArgs a;
    a.N = (i64)m[0], a.H = (i64)m[1], a.dn = (i64)m[2], a.dr = (i64)m[3], a.dc = (i64)m[4], a.dv = (i64)m[5], a.scale = (float)m[6];
    a.blockSize = (i64)m[7], a.numBlocks = (i64)m[8], a.maxBlocks = (i64)m[9];
    if (a.N < 0 || a.H < 1 || a.dn < 0 || a.dr < 0 || a.dc < 1 || a.dv < 1 || a.blockSize < 1 || a.maxBlocks < 1 || a.numBlocks < 0)
      throw KernelError("mla decode: bad sizes");
    a.q = c.f32(0, a.N * a.H * (a.dn + a.dr), W);
    a.kvB = c.f32(1, a.H * (a.dn + a.dv) * a.dc, W);
    a.cache = c.f32(2, a.numBlocks * a.blockSize * (a.dc + a.dr), W);
    a.blockTables = c.i32(3, a.N * a.maxBlocks, W);
    a.contextLens = c.i32(4, a.N, W);
    mla_decode(a, c.f32(5, a.N * a.H * a.dv, W));
    return undef(env);
  });
}

// scatterAddRowsBackward(dy, idx, src, w, dsrc | null, dw | null, M, N, D)
FN(ScatterAddRowsBackward) {
  BODY("scatter-add rows backward", {
    const i64 M = c.n(6), N = c.n(7), D = c.n(8);
    scatter_add_rows_backward(c.f32(0, N * D, W), c.i32(1, M, W), c.f32(2, M * D, W), c.f32(3, M, W), c.is_null(4) ? nullptr : c.f32(4, M * D, W),
                              c.is_null(5) ? nullptr : c.f32(5, M, W), M, N, D);
    return undef(env);
  });
}

FN(GatherLast) {
  BODY("gather", {
    const i64 R = c.n(3), N = c.n(4), K = c.n(5);
    gather_last(c.f32(0, R * N, W), c.i32(1, R * K, W), c.f32(2, R * K, W), R, N, K);
    return undef(env);
  });
}

FN(ScatterAddLast) {
  BODY("scatter-add", {
    const i64 R = c.n(3), N = c.n(4), K = c.n(5);
    scatter_add_last(c.f32(0, R * K, W), c.i32(1, R * K, W), c.f32(2, R * N, W), R, N, K);
    return undef(env);
  });
}

FN(Topk) {
  BODY("top-k", {
    const i64 R = c.n(2), N = c.n(3), K = c.n(4);
    topk(c.f32(0, R * N, W), c.i32(1, R * K, W), R, N, K);
    return undef(env);
  });
}

FN(Argsort) {
  BODY("argsort", {
    const i64 R = c.n(2), N = c.n(3);
    argsort(c.f32(0, R * N, W), c.i32(1, R * N, W), R, N, c.flag(4));
    return undef(env);
  });
}

FN(Rope) {
  BODY("rope", {
    const i64 B = c.n(4), T = c.n(5), H = c.n(6), D = c.n(7), Bc = c.n(8), P = c.n(10);
    if (D % 2) throw KernelError("rope: odd head dimension");
    if (P < 0) throw KernelError("rope: negative pass-through width");
    rope(c.f32(0, B * T * H * (P + D), W), c.f32(1, Bc * T * D / 2, W), c.f32(2, Bc * T * D / 2, W), c.f32(3, B * T * H * (P + D), W), B, T, H,
         D, Bc, c.flag(9), P);
    return undef(env);
  });
}

// meta = [B, H, Hkv, T, S, Dk, Dv, scale, causal, maskBatch, then (batch, head, row) strides of
//         q, k, v, out, dout, dq, dk, dv]
constexpr size_t kAttnMeta = 10 + 8 * 3;

/** Elements an operand [n0, n1, n2, D] with row strides s reaches (rows never overlap their ends). */
double reach(const i64* s, i64 n0, i64 n1, i64 n2, i64 D) {
  if (n0 == 0 || n1 == 0 || n2 == 0 || D == 0) return 0;
  return (double)(n0 - 1) * s[0] + (double)(n1 - 1) * s[1] + (double)(n2 - 1) * s[2] + D;
}

AttentionArgs attention_args(Call& c, size_t metaAt, const char* W) {
  const double* m = c.f64(metaAt, kAttnMeta, W);
  AttentionArgs p{};
  p.B = (i64)m[0], p.H = (i64)m[1], p.Hkv = (i64)m[2], p.T = (i64)m[3], p.S = (i64)m[4], p.Dk = (i64)m[5], p.Dv = (i64)m[6];
  p.scale = (float)m[7], p.causal = m[8] != 0, p.maskBatch = (i64)m[9];
  i64* strides[8] = {p.qs, p.ks, p.vs, p.os, p.dos, p.dqs, p.dks, p.dvs};
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 3; j++) {
      strides[i][j] = (i64)m[10 + 3 * i + j];
      if (strides[i][j] < 0) throw KernelError("attention: negative stride");
    }
  if (p.Hkv <= 0 || p.H % p.Hkv) throw KernelError("attention: heads must be a multiple of KV heads");
  if (p.causal && p.T > p.S) throw KernelError("attention: more queries than keys under a causal mask");
  p.q = c.f32(0, reach(p.qs, p.B, p.H, p.T, p.Dk), W);
  p.k = c.f32(1, reach(p.ks, p.B, p.Hkv, p.S, p.Dk), W);
  p.v = c.f32(2, reach(p.vs, p.B, p.Hkv, p.S, p.Dv), W);
  p.mask = c.is_null(3) ? nullptr : c.f32(3, (double)p.maskBatch * p.T * p.S, W);
  return p;
}

FN(Attention) {
  BODY("attention", {
    AttentionArgs p = attention_args(c, 6, W);
    attention(p, c.f32(4, reach(p.os, p.B, p.H, p.T, p.Dv), W), c.f32(5, (double)p.B * p.H * p.T, W));
    return undef(env);
  });
}

FN(AttentionBackward) {
  BODY("attention backward", {
    AttentionArgs p = attention_args(c, 10, W);
    attention_backward(p, c.f32(4, reach(p.os, p.B, p.H, p.T, p.Dv), W), c.f32(5, (double)p.B * p.H * p.T, W),
                       c.f32(6, reach(p.dos, p.B, p.H, p.T, p.Dv), W), c.f32(7, reach(p.dqs, p.B, p.H, p.T, p.Dk), W),
                       c.f32(8, reach(p.dks, p.B, p.Hkv, p.S, p.Dk), W), c.f32(9, reach(p.dvs, p.B, p.Hkv, p.S, p.Dv), W));
    return undef(env);
  });
}

// adamw(param, grad, m, v, meta): meta = [n, lr, beta1, beta2, eps, weightDecay, step, gradScale]
FN(AdamW) {
  BODY("adamw", {
    const double* m = c.f64(4, 8, W);
    AdamWArgs a{};
    a.n = (i64)m[0];
    a.param = c.f32(0, a.n, W), a.grad = c.f32(1, a.n, W), a.m = c.f32(2, a.n, W), a.v = c.f32(3, a.n, W);
    a.lr = m[1], a.beta1 = m[2], a.beta2 = m[3], a.eps = m[4], a.weightDecay = m[5], a.step = m[6], a.gradScale = m[7];
    adamw(a);
    return undef(env);
  });
}

// adamwMany(params[], grads[], ms[], vs[], meta, count): meta = [lr, beta1, beta2, eps, step, gradScale, then
// n, weightDecay per tensor]
FN(AdamWMany) {
  BODY("adamwMany", {
    const uint32_t count = (uint32_t)c.n(5);
    const double* m = c.f64(4, 6 + 2.0 * count, W);
    std::vector<AdamWArgs> items(count);
    for (uint32_t i = 0; i < count; i++) {
      AdamWArgs& a = items[i];
      a.n = (i64)m[6 + 2 * i];
      a.param = c.f32_at(0, i, (double)a.n, W), a.grad = c.f32_at(1, i, (double)a.n, W);
      a.m = c.f32_at(2, i, (double)a.n, W), a.v = c.f32_at(3, i, (double)a.n, W);
      a.lr = m[0], a.beta1 = m[1], a.beta2 = m[2], a.eps = m[3], a.step = m[4], a.gradScale = m[5], a.weightDecay = m[7 + 2 * i];
    }
    adamw_many(items.data(), (i64)count);
    return undef(env);
  });
}

// sumsqMany(xs[], ns, count): ns a Float64Array of element counts
FN(SumSqMany) {
  BODY("sumsqMany", {
    const uint32_t count = (uint32_t)c.n(2);
    const double* nd = c.f64(1, count, W);
    std::vector<const float*> xs(count);
    std::vector<i64> ns(count);
    for (uint32_t i = 0; i < count; i++) {
      ns[i] = (i64)nd[i];
      xs[i] = c.f32_at(0, i, (double)ns[i], W);
    }
    return number(env, sumsq_many(xs.data(), ns.data(), (i64)count));
  });
}

FN(SumSq) {
  BODY("sumsq", {
    const i64 n = c.n(1);
    return number(env, sumsq(c.f32(0, n, W), n));
  });
}

// Tensors are large typed arrays. By default glibc serves blocks above a (dynamic, ≤ 32 MiB) threshold with fresh
// mmap pages and trims the heap top after frees, so each training step would page-fault its activations back in.
// Keeping big blocks on a heap that is not trimmed lets uninitialised allocations (allocUninit) reuse warm memory.
// Process-wide, so DSV2_MALLOC_TUNING=0 turns it off.
void tune_malloc() {
  const char* env = std::getenv("DSV2_MALLOC_TUNING");
  if (env && std::strcmp(env, "0") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// Transparent huge pages for the malloc heap, where tune_malloc puts every tensor (Linux, THP in "madvise" mode).
// A training step reads and writes ~1 GB of activations spread over ~700 MB of heap: with 4 KiB pages that is
// ~170,000 pages, far more than the TLBs hold, and a page walk under virtualisation is costly. 2 MiB pages cut
// the walks by 512× (measured: glibc.malloc.hugetlb=1, which does the same for the whole process, +1.5–3%).
// Advising marks the heap so later faults get huge pages; collapsing (MADV_COLLAPSE, Linux ≥ 6.1) converts the
// pages already there, and is done once per stretch of heap. A hint: errors (older kernels, THP off) are ignored.
// Returns the bytes of heap now advised. DSV2_HUGEPAGES=0 turns it off.
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
// lowerPriority(nice): the calling thread and every kernel thread run at this nice value (raising it needs no
// privilege). The server's engine worker uses it so that the HTTP thread, at nice 0, preempts the compute.
void lower_priority(int nice) {
#pragma omp parallel num_threads(threads())
  setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}

FN(LowerPriority) {
  BODY("lowerPriority", {
    lower_priority((int)c.n(0));
    return undef(env);
  });
}

FN(AdviseHugePages) {
  BODY("adviseHugePages", {
    const bool collapse = c.n(0) != 0;
    double advised = 0;
#if defined(__linux__)
    static uintptr_t heap_lo = 0, collapsed_hi = 0;
    static const bool off = [] {
      const char* e = std::getenv("DSV2_HUGEPAGES");
      return e && std::strcmp(e, "0") == 0;
    }();
    if (!off) {
      if (heap_lo == 0) {  // the heap's first address, from /proc/self/maps ("lo-hi rw-p … [heap]")
        if (FILE* f = std::fopen("/proc/self/maps", "r")) {
          char line[512];
          while (std::fgets(line, sizeof line, f))
            if (std::strstr(line, "[heap]")) {
              heap_lo = (uintptr_t)std::strtoull(line, nullptr, 16);
              break;
            }
          std::fclose(f);
        }
      }
      const uintptr_t huge = 2u << 20, hi = (uintptr_t)sbrk(0) & ~(huge - 1), lo = (heap_lo + huge - 1) & ~(huge - 1);
      if (heap_lo != 0 && hi > lo) {
        madvise((void*)lo, hi - lo, MADV_HUGEPAGE);
        advised = (double)(hi - lo);
        const uintptr_t from = std::max(lo, std::min(collapsed_hi, hi));
        if (collapse && hi > from) {
          madvise((void*)from, hi - from, MADV_COLLAPSE);
          collapsed_hi = hi;
        }
      }
    }
#endif
    return number(env, advised);
  });
}

// Stop signals during a synchronous loop (training): JavaScript's signal listeners run only when the event loop
// turns, which a training loop never lets it do. watchStop() installs C handlers for SIGINT and SIGTERM that only
// record the signal; stopSignal() reads it (0: none); unwatchStop() puts the previous handlers back.
static volatile sig_atomic_t g_stop = 0;
static struct sigaction g_old_int, g_old_term;
static bool g_watching = false;
static void on_stop(int sig) { g_stop = sig; }
FN(WatchStop) {
  if (!g_watching) {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &g_old_int);
    sigaction(SIGTERM, &sa, &g_old_term);
    g_watching = true;
  }
  g_stop = 0;
  return undef(env);
}
FN(StopSignal) { return number(env, (double)g_stop); }
FN(UnwatchStop) {
  if (g_watching) {
    sigaction(SIGINT, &g_old_int, nullptr);
    sigaction(SIGTERM, &g_old_term, nullptr);
    g_watching = false;
  }
  return undef(env);
}

// mapFile(path) → ArrayBuffer over a read-only private mapping of the whole file (unmapped when the buffer is
// collected), or null when the file cannot be mapped. Pages are read from disk when first touched.
FN(MapFile) {
  return guarded(env, [&]() -> napi_value {
    Call c(env, info);
    size_t len = 0;
    napi_get_value_string_utf8(env, c.argv[0], nullptr, 0, &len);
    std::string path(len, '\0');
    napi_get_value_string_utf8(env, c.argv[0], path.data(), len + 1, &len);
    napi_value nul;
    napi_get_null(env, &nul);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nul;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) {
      close(fd);
      return nul;
    }
    void* p = mmap(nullptr, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) return nul;
    napi_value ab;
    const size_t size = (size_t)st.st_size;
    auto fin = [](napi_env, void* data, void* hint) { munmap(data, (size_t)(uintptr_t)hint); };
    if (napi_create_external_arraybuffer(env, p, size, fin, (void*)(uintptr_t)size, &ab) != napi_ok) {
      munmap(p, size);
      return nul;
    }
    return ab;
  });
}

napi_value Init(napi_env env, napi_value exports) {
  tune_malloc();
  const napi_property_descriptor props[] = {
#define P(js, fn) {js, nullptr, fn, nullptr, nullptr, nullptr, napi_default, nullptr}
      P("threads", Threads),
      P("setThreads", SetThreads),
      P("adviseHugePages", AdviseHugePages),
      P("lowerPriority", LowerPriority),
      P("avx2", Avx2),
      P("isa", Isa),
      P("isas", Isas),
      P("setIsa", SetIsa),
      P("mapFile", MapFile),
      P("watchStop", WatchStop),
      P("stopSignal", StopSignal),
      P("unwatchStop", UnwatchStop),
      P("copy", Copy),
      P("fill", Fill),
      P("binary", Binary),
      P("unary", Unary),
      P("unaryBackward", UnaryBackward),
      P("reduce", Reduce),
      P("reduceMaxBackward", ReduceMaxBackward),
      P("gemm", Gemm),
      P("gemmMany", GemmMany),
      P("qgemmMany", QGemmMany),
      P("dequantRows", DequantRows),
      P("quantizeRows", QuantizeRows),
      P("rmsnorm", RmsNorm),
      P("rmsnormBackward", RmsNormBackward),
      P("softmax", Softmax),
      P("softmaxBackward", SoftmaxBackward),
      P("swiglu", Swiglu),
      P("swigluBackward", SwigluBackward),
      P("crossEntropy", CrossEntropy),
      P("crossEntropyBackward", CrossEntropyBackward),
      P("gatherRows", GatherRows),
      P("scatterRows", ScatterRows),
      P("scatterAddRows", ScatterAddRows),
      P("pagedAttention", PagedAttention),
      P("mlaDecode", MlaDecode),
      P("scatterAddRowsBackward", ScatterAddRowsBackward),
      P("gatherLast", GatherLast),
      P("scatterAddLast", ScatterAddLast),
      P("topk", Topk),
      P("argsort", Argsort),
      P("rope", Rope),
      P("attention", Attention),
      P("attentionBackward", AttentionBackward),
      P("adamw", AdamW),
      P("sumsq", SumSq),
      P("adamwMany", AdamWMany),
      P("sumsqMany", SumSqMany),
#undef P
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
