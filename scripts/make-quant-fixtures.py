#!/usr/bin/env python3
"""Writes test/fixtures/quant-gguf.json: for every weight storage type, stored bytes and the values the `gguf`
Python package (llama.cpp's gguf-py) decodes them to, and for the types gguf-py can write, its quantization of a
float row. Run once by hand (python with `gguf` and numpy); the test suite reads the committed JSON only.

  python3 scripts/make-quant-fixtures.py
"""
import base64, json, sys
import numpy as np
import gguf
from gguf.quants import quantize, dequantize
from gguf import GGMLQuantizationType as T

rng = np.random.default_rng(20261202)
K = 512  # two K-quant super-blocks, sixteen 32-blocks
rows = 3
x = (rng.standard_normal((rows, K)) * np.array([[0.02], [1.0], [7.5]])).astype(np.float32)
x[1, 40:72] = 0  # an all-zero block
x[2, 5] = 60.0   # an outlier
b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()
out = {"K": K, "rows": rows, "x": b64(x), "gguf_version": getattr(gguf, "__version__", "?"), "types": {}}
names = {"bf16": T.BF16, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1, "q5_0": T.Q5_0,
         "q5_1": T.Q5_1, "q4_k": T.Q4_K, "q5_k": T.Q5_K, "q6_k": T.Q6_K}
for name, t in names.items():
    entry = {}
    try:
        q = quantize(x, t)
        entry["quantized"] = True
    except Exception as e:  # gguf-py has no quantizer for it: random blocks with sane scales
        block, size = gguf.GGML_QUANT_SIZES[t]
        q = rng.integers(0, 256, (rows, K // block * size), dtype=np.uint8)
        qb = q.reshape(rows, K // block, size)
        halves = np.array([0.013, -0.002], dtype=np.float16).view(np.uint8)
        if t in (T.Q4_K, T.Q5_K):
            qb[:, :, 0:2] = halves[0:2]; qb[:, :, 2:4] = np.array([0.004], dtype=np.float16).view(np.uint8)
        if t == T.Q6_K:
            qb[:, :, 208:210] = halves[0:2]
        entry["quantized"] = False
    entry["bytes"] = b64(q)
    entry["dequantized"] = b64(dequantize(q, t).astype(np.float32))
    out["types"][name] = entry
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/quant-gguf.json", "w"), indent=1)
print("ok", {k: v["quantized"] for k, v in out["types"].items()})
