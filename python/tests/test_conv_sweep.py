"""conv2d over random shapes against PyTorch in float64: forward, dx, dw, db, in float32 and
bfloat16 (inputs rounded to bf16 on both sides). A seeded sweep found oneDNN 2.6.3's bf16
kernels giving garbage for strides past the kernel and for taps that only meet padding, on a
Xeon with AMX (kernels/cpu/cpu_conv.cpp); fixed shapes alone had missed them. A float32
convolution runs before each case, so oneDNN's scratchpad is dirty as in a real run."""
import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def draw(rng):
    kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    sh, sw = int(rng.integers(1, 5)), int(rng.integers(1, 9))
    ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
    h = int(rng.integers(max(1, kh - 2 * ph), 24))
    w = int(rng.integers(max(1, kw - 2 * pw), 24)) if rng.random() < 0.7 else max(1, kw - 2 * pw)
    c, o, n = int(rng.choice([3, 16, 64, 130])), int(rng.integers(1, 17)), int(rng.integers(1, 3))
    return n, h, w, c, o, kh, kw, (sh, sw), (ph, pw)


def run_case(rng, dtype):
    n, h, w, c, o, kh, kw, stride, padding = draw(rng)
    cast = (lambda a: torch.from_numpy(a).bfloat16().float().numpy()) if dtype == "bfloat16" else (lambda a: a)
    x = cast(rng.standard_normal((n, h, w, c), dtype=np.float32))
    # np.float32: NumPy 2 (NEP 50) makes float32 / np.float64 a float64 array, which from_dlpack refuses.
    wt = cast(rng.standard_normal((o, kh, kw, c), dtype=np.float32) / np.float32(np.sqrt(kh * kw * c)))
    b = cast(rng.standard_normal((o,), dtype=np.float32))
    # Dirty the scratchpad as a real run's earlier layers would.
    kiln.conv2d(kiln.uniform([2, 9, 9, 8]), kiln.uniform([8, 3, 3, 8]), padding=1)

    kx, kwt, kb = (kiln.from_dlpack(a.copy()).astype(dtype) for a in (x, wt, b))
    for t in (kx, kwt, kb):
        t.requires_grad = True
    y = kiln.conv2d(kx, kwt, kb, stride=stride, padding=padding)
    g = rng.standard_normal(y.shape, dtype=np.float32)
    y.backward(kiln.from_dlpack(cast(g).copy()).astype(dtype))

    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, wt, b))
    ty = torch.nn.functional.conv2d(tx.permute(0, 3, 1, 2), tw.permute(0, 3, 1, 2), tb, stride=stride,
                                    padding=padding).permute(0, 2, 3, 1)
    assert tuple(y.shape) == tuple(ty.shape)
    ty.backward(torch.tensor(cast(g), dtype=torch.float64))
    # The bound scales with the terms each output sums (bf16 keeps 8 bits; fp32 sums in fp32).
    rel = 2.0 ** -6 if dtype == "bfloat16" else 1e-4
    label = f"{dtype} n{n} {h}x{w}x{c} -> {o}, kernel {kh}x{kw}, stride {stride}, padding {padding}"
    for name, got, want, scale in [
        ("y", y, ty, kh * kw * c),
        ("dx", kx.grad, tx.grad, kh * kw * o),
        ("dw", kwt.grad, tw.grad, n * ty.shape[1] * ty.shape[2]),
        ("db", kb.grad, tb.grad, n * ty.shape[1] * ty.shape[2]),
    ]:
        got = np.from_dlpack(got.astype("float32")).astype(np.float64)
        want = want.detach().numpy()
        assert np.isfinite(got).all(), f"{label}: {name} has non-finite values"
        err = np.abs(got - want).max() if want.size else 0.0
        assert err <= rel * (np.abs(want).max() + 1.0) * np.sqrt(scale), f"{label}: {name} off by {err}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv2d_random_shapes_match_torch(dtype):
    rng = np.random.default_rng(20261204)
    for _ in range(60):
        run_case(rng, dtype)


def test_bf16_on_a_cpu_without_avx512_says_so():
    # oneDNN has no bf16 convolution below AVX-512; ONEDNN_MAX_CPU_ISA makes this CPU such a one.
    import os
    import subprocess
    import sys
    code = ("import kiln\n"
            "x = kiln.uniform([1, 8, 8, 3]).astype('bfloat16'); w = kiln.uniform([4, 3, 3, 3]).astype('bfloat16')\n"
            "try:\n    kiln.conv2d(x, w)\nexcept kiln.Error as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"},
                         capture_output=True, text=True, timeout=120).stdout
    assert "no bfloat16 kernel for this CPU (it needs AVX-512)" in out, out
