"""What both lockstep peer scripts (torch-peer-train.py, torch-peer-decode.py) set up as bench_torch.py does: thread
counts before torch is imported, passive OpenMP waiting, glibc's malloc kept from returning memory, then the peer
model module from ../shared/peers. bench_torch.py parses its own arguments when imported, so this is repeated here."""
import ctypes
import os
import sys


def setup(threads, peer_dir):
    """Returns (torch, torch_dsv2) with the peer's thread and malloc settings applied."""
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, 0)  # M_MMAP_MAX
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    import torch

    sys.path.insert(0, peer_dir)
    import torch_dsv2

    torch.set_num_threads(threads)
    return torch, torch_dsv2


def blas_gflops(torch):
    """A 1024³ float32 matmul's GFLOP/s (best of 3): Debian's python3-torch links whatever libblas.so.3 the system
    provides, and without libopenblas0-pthread that is the reference BLAS, ~20× slower, which would make any race
    against this peer meaningless."""
    import time

    a = torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024**3 / best / 1e9
