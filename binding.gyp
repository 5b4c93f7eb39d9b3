{
  "targets": [
    {
      "target_name": "dsv2_native",
      "sources": [
        "src/backend/native/csrc/addon.cc",
        "src/backend/native/csrc/gemm.cc",
        "src/backend/native/csrc/elementwise.cc",
        "src/backend/native/csrc/fused.cc",
        "src/backend/native/csrc/indexing.cc",
        "src/backend/native/csrc/attention.cc",
        "src/backend/native/csrc/paged.cc",
        "src/backend/native/csrc/quant.cc",
        "src/backend/native/csrc/avx512.cc"
      ],
      "cflags_cc!": ["-fno-exceptions", "-O2", "-O0"],
      "cflags_cc": ["-std=c++17", "-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-fexceptions", "-Wall", "-Wno-unused-function"],
      "ldflags": ["-fopenmp"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
