"""Zero-copy sharing with NumPy and PyTorch through DLPack: same memory on both sides, writes
visible both ways, memory kept alive whichever side is dropped first, explicit copies for
layouts kiln does not share, errors for what it cannot take."""
import gc
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import kiln

try:
    import torch
except ImportError:  # the NumPy tests still run
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (apt-get install python3-torch)")


def test_numpy_to_kiln_shares_memory_and_keeps_it_alive():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = kiln.from_dlpack(a)
    assert t.shape == (3, 4) and t.dtype == "float32" and t.device == "cpu"
    assert t.data_ptr == a.ctypes.data
    a[1, 2] = 42.0  # NumPy writes, kiln sees
    assert t.tolist()[1][2] == 42.0
    del a
    gc.collect()
    np.zeros((1 << 20,), dtype=np.float32)  # would reuse freed memory
    assert t.tolist() == [[0, 1, 2, 3], [4, 5, 42, 7], [8, 9, 10, 11]]


def test_kiln_to_numpy_shares_memory_and_keeps_it_alive():
    t = kiln.arange(6.0).reshape([2, 3])
    a = np.from_dlpack(t)  # read-only: NumPy < 2 marks every DLPack import so
    assert a.ctypes.data == t.data_ptr and a.shape == (2, 3)
    n = t.numpy()  # writable, through the same capsule kind
    assert n.ctypes.data == t.data_ptr and n.flags.writeable
    n[0, 0] = -1.0  # NumPy writes, kiln sees
    assert t.tolist()[0][0] == -1.0
    del t
    gc.collect()
    np.zeros((1 << 20,), dtype=np.float32)
    assert a.tolist() == [[-1, 1, 2], [3, 4, 5]] and n.sum() == 14


@needs_torch
def test_torch_round_trip_shares_memory_both_ways():
    x = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    t = kiln.from_dlpack(x)
    assert t.data_ptr == x.data_ptr()
    x[0, 1] = 7.0
    assert t.tolist()[0][1] == 7.0
    y = torch.from_dlpack(t)  # back to torch: still the same memory
    assert y.data_ptr() == x.data_ptr()
    y[1, 3] = 9.0
    assert x[1, 3].item() == 9.0 and t.tolist()[1][3] == 9.0
    del x, y
    gc.collect()
    assert t.tolist() == [[0, 7, 2, 3], [4, 5, 6, 9]]
    # A leaf that requires grad is refused, as torch's own x.numpy() and __dlpack__ refuse it:
    # a write through kiln would give wrong gradients. Its detach() shares.
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(kiln.Error, match="requires grad.*pass x.detach"):
        kiln.from_dlpack(w)
    assert kiln.from_dlpack(w.detach()).data_ptr == w.data_ptr()
    k = kiln.ones([2])
    k.requires_grad = True
    assert kiln.from_dlpack(k).tolist() == [1.0, 1.0]  # kiln's own tensors share as before


@needs_torch
def test_torch_dropped_first_then_kiln_export_outlives_kiln():
    t = kiln.from_dlpack(torch.full((3,), 2.5))  # the torch tensor has no other owner
    gc.collect()
    y = torch.from_dlpack(t)
    del t
    gc.collect()
    torch.zeros(1 << 20)
    assert y.tolist() == [2.5, 2.5, 2.5]


def test_legacy_and_versioned_capsules():
    t = kiln.ones([2, 2])
    assert "dltensor" in repr(t.__dlpack__()) and "versioned" not in repr(t.__dlpack__())
    assert "dltensor_versioned" in repr(t.__dlpack__(max_version=(1, 0)))
    assert t.__dlpack_device__() == (1, 0)

    class Versioned:  # a producer that speaks DLPack 1.0 (what NumPy >= 2.1 does)
        def __init__(self, inner):
            self.inner = inner

        def __dlpack__(self, **kw):
            assert kw.get("max_version") is not None
            return self.inner.__dlpack__(max_version=(1, 0))

        def __dlpack_device__(self):
            return self.inner.__dlpack_device__()

    u = kiln.from_dlpack(Versioned(t))
    assert u.data_ptr == t.data_ptr and u.tolist() == [[1, 1], [1, 1]]


@needs_torch
def test_non_contiguous_needs_the_explicit_copy():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    with pytest.raises(kiln.Error, match="copy_to_contiguous=True"):
        kiln.from_dlpack(x)
    t = kiln.from_dlpack(x, copy_to_contiguous=True)
    assert t.shape == (3, 2) and t.data_ptr != x.data_ptr()
    assert t.tolist() == x.tolist()
    a = np.arange(10, dtype=np.float32)[::2]
    with pytest.raises(kiln.Error, match="not contiguous"):
        kiln.from_dlpack(a)


@needs_torch
def test_nchw_to_nhwc_is_the_named_layout_copy():
    x = torch.randn(2, 3, 4, 5)
    t = kiln.nchw_to_nhwc(x)
    assert t.shape == (2, 4, 5, 3)
    assert np.array_equal(np.from_dlpack(t), x.permute(0, 2, 3, 1).numpy())
    with pytest.raises(kiln.Error, match="N, C, H, W"):
        kiln.nchw_to_nhwc(torch.zeros(3, 4))


def test_nchw_to_nhwc_takes_read_only_arrays_and_names_itself():
    a = np.broadcast_to(np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1), (2, 3, 2, 2))  # read-only
    assert np.array_equal(np.from_dlpack(kiln.nchw_to_nhwc(a)), np.transpose(a, (0, 2, 3, 1)))
    with pytest.raises(kiln.Error, match="nchw_to_nhwc: kiln has no float64"):
        kiln.nchw_to_nhwc(np.zeros((1, 3, 2, 2)))


@needs_torch
def test_dtypes_kiln_has_and_has_not():
    for np_type, name in [(np.float32, "float32"), (np.int32, "int32"), (np.int64, "int64"), (np.uint8, "uint8")]:
        assert kiln.from_dlpack(np.zeros(3, dtype=np_type)).dtype == name
    with pytest.raises(kiln.Error, match="kiln has no float64 .*astype"):
        kiln.from_dlpack(np.zeros(3, dtype=np.float64))
    with pytest.raises(kiln.Error, match="kiln has no float16"):
        kiln.from_dlpack(np.zeros(3, dtype=np.float16))
    with pytest.raises(kiln.Error, match="cannot share this list"):
        kiln.from_dlpack([1.0, 2.0])  # no DLPack, no buffer of a kiln dtype: not silently converted
    with pytest.raises(kiln.Error, match="read-only.*x.copy"):
        kiln.from_dlpack(np.broadcast_to(np.float32(1), (3,)))
    with pytest.raises(kiln.Error, match="native byte order"):
        kiln.from_dlpack(np.zeros(3, dtype=">f4"))


@needs_torch
def test_torch_dtypes_kiln_has_and_has_not():
    assert kiln.from_dlpack(torch.zeros(2, dtype=torch.bfloat16)).dtype == "bfloat16"
    # What torch's own __dlpack__ refuses is named with its dtype and torch's words (torch 1.13
    # exports no bool; torch 2 does, and then kiln names the dtype it lacks).
    with pytest.raises(kiln.Error, match=r"kiln has no bool|dtype torch.bool \(its __dlpack__ says: .*not supported"):
        kiln.from_dlpack(torch.tensor([True, False]))
    with pytest.raises(kiln.Error, match=r"dtype torch.float32 \(its __dlpack__ says: "):
        kiln.from_dlpack(torch.ones(2).to_sparse())


@needs_torch
def test_readme_example_runs():
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme) as f:
        text = f.read()
    section = text[text.index("## From Python"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    code = code[:code.index("```")]
    exec(compile(code, "README.md (From Python)", "exec"), {})


def test_borrowed_memory_released_inside_a_gil_free_call():
    a = np.full(4, 3.0, dtype=np.float32)
    t = kiln.from_dlpack(a)
    t.requires_grad = True
    y = kiln.sum(t * t)  # the graph keeps t's storage, borrowed from a
    del t, a
    gc.collect()
    y.backward()  # frees the graph without the GIL: the release takes it back (no deadlock)
    assert y.item() == 36.0


def test_ops_run_in_threads_without_the_gil():
    import threading

    x = kiln.ones([64, 64])
    out = []

    def work():
        acc = kiln.zeros([64, 64])
        for _ in range(200):
            acc = kiln.add(acc, kiln.linear(x, x))
        out.append(kiln.mean(acc).item())

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out == [200 * 64.0, 200 * 64.0]


def foreign_device_capsule(device_type, data):
    """A legacy DLPack capsule describing `data` (a float32 NumPy array) as if it lived on
    another device: what a GPU or OpenCL producer would hand over. No deleter: `data` stays
    owned by the caller."""
    import ctypes

    class DLTensor(ctypes.Structure):
        _fields_ = [("data", ctypes.c_void_p), ("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32),
                    ("ndim", ctypes.c_int32), ("code", ctypes.c_uint8), ("bits", ctypes.c_uint8),
                    ("lanes", ctypes.c_uint16), ("shape", ctypes.POINTER(ctypes.c_int64)),
                    ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]

    class DLManagedTensor(ctypes.Structure):
        _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]

    shape = (ctypes.c_int64 * 1)(data.size)
    mt = DLManagedTensor(DLTensor(data.ctypes.data, device_type, 0, 1, 2, 32, 1, shape, None, 0), None, None)
    new = ctypes.pythonapi.PyCapsule_New
    new.restype, new.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    capsule = new(ctypes.addressof(mt), b"dltensor", None)

    class Producer:
        def __dlpack__(self, **kw):
            return capsule

        def __dlpack_device__(self):
            return (device_type, 0)

    return Producer(), (mt, shape)  # the second item keeps the structs alive


def test_a_tensor_from_another_device_is_an_error_or_a_device_tensor():
    data = np.zeros(4, dtype=np.float32)
    producer, keep = foreign_device_capsule(4, data)  # kDLOpenCL: no kiln backend
    with pytest.raises(kiln.Error, match="no device for DLPack device type 4"):
        kiln.from_dlpack(producer)
    producer, keep = foreign_device_capsule(2, data)  # kDLCUDA
    try:
        t = kiln.from_dlpack(producer)
    except kiln.Error as e:  # a CPU-only kiln, or no GPU
        assert kiln.device_count() == 0
        assert "cuda:0 but kiln sees 0 CUDA device(s)" in str(e) and "x.cpu()" in str(e)
    else:  # a GPU: a CUDA tensor (never dereferenced here)
        assert t.device == "cuda:0"
        with pytest.raises(kiln.Error):
            t.numpy()
        del t
    del keep


@pytest.mark.skipif(torch is None or kiln.device_count() == 0 or not torch.cuda.is_available(),
                    reason="needs a GPU that kiln and torch see")
def test_cuda_hand_offs_follow_the_stream_protocol():
    # kiln's compute stream is not torch's: each side must see the other's queued writes.
    # Large enough that an unordered read would run while the write is still in flight.
    n = 1 << 26
    t = kiln.full([n], 3.0, device="cuda")
    assert torch.from_dlpack(t).sum().item() == 3.0 * n  # torch's stream waits for kiln's fill
    y = torch.full((n,), 2.0, device="cuda")
    assert kiln.sum(kiln.from_dlpack(y)).item() == 2.0 * n  # kiln's stream waits for torch's fill
    # A capsule dropped by torch: kiln's next allocation may reuse the block only after
    # torch's queued reads of it.
    x = torch.from_dlpack(kiln.full([n], 1.0, device="cuda"))
    s = x * 2.0
    del x
    z = kiln.full([n], 5.0, device="cuda")
    assert s.sum().item() == 2.0 * n and kiln.sum(z).item() == 5.0 * n


@needs_torch
def test_empty_torch_tensors_are_contiguous():
    assert kiln.from_dlpack(torch.zeros(0, 3)).shape == (0, 3)
    assert kiln.from_dlpack(torch.zeros(2, 0, 3)).shape == (2, 0, 3)


def test_bf16_has_no_numpy_view():
    with pytest.raises(kiln.Error, match="NumPy has no bfloat16"):
        kiln.ones([2, 3], dtype="bfloat16").numpy()


def test_a_shared_tensor_alive_at_exit_is_released_not_leaked():
    # Python clears the modules' globals after Py_IsInitialized() turns false: a kiln tensor
    # still sharing another kiln tensor's memory then skipped its release, and nanobind
    # reported every kiln type as leaked at exit.
    code = "import kiln\nt = kiln.uniform([3, 4])\ny = kiln.from_dlpack(t)\ndel t\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "leaked" not in run.stderr, run.stderr


def test_values_a_careless_caller_hands_over_are_refused_or_read_exactly():
    # Found by review (2026-12-05): each was silently wrong before.
    # int() of an integer tensor went through a double: 2**63 - 1 came back as -2**63.
    for v in (2**63 - 1, 2**62 + 1, 2**53 + 1, -5):
        assert int(kiln.from_dlpack(np.array([v], np.int64))) == v
    assert int(kiln.full([1], -2.7)) == -2
    with pytest.raises(ValueError):
        int(kiln.full([1], float("nan")))
    with pytest.raises(OverflowError):
        int(kiln.full([1], float("inf")))
    # A view at an odd byte offset was taken as a misaligned float*; now copied on request.
    u = np.arange(65, dtype=np.uint8)[1:].view(np.float32)
    with pytest.raises(kiln.Error, match="not aligned to its 4-byte elements"):
        kiln.from_dlpack(u)
    assert kiln.from_dlpack(u, copy_to_contiguous=True).tolist() == u.tolist()
    # A read-only source is fine when a copy is asked for (it was refused as read-only).
    b = np.broadcast_to(np.arange(3, dtype=np.float32), (2, 3))
    assert kiln.from_dlpack(b, copy_to_contiguous=True).numpy().tolist() == b.tolist()
    with pytest.raises(kiln.Error, match="read-only"):
        kiln.from_dlpack(b)
    # An int64 range past 2^53 repeated and skipped values (made through doubles); now exact.
    assert kiln.arange(2**53, 2**53 + 4).numpy().tolist() == [2**53 + i for i in range(4)]
    assert kiln.arange(2**52, 2**52 + 3).numpy().tolist() == [2**52, 2**52 + 1, 2**52 + 2]
    # An image size past kiln's largest crop was a MemoryError (std::bad_alloc).
    pil = pytest.importorskip("PIL.Image")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.png")
        pil.new("RGB", (8, 8)).save(path)
        with pytest.raises(kiln.Error, match="image size 100000 is outside 1..16384"):
            kiln.load_image(path, 100000)


@needs_torch
def test_torch_views_with_a_lazy_negation_are_refused():
    # torch 1.13's own DLPack export hands out the memory without the negation: [1, 2] for [-1, -2].
    with pytest.raises(kiln.Error, match="negation is not applied"):
        kiln.from_dlpack(torch._neg_view(torch.tensor([1.0, 2.0])))
    t = kiln.from_dlpack(torch._neg_view(torch.tensor([1.0, 2.0])).resolve_neg())
    assert t.tolist() == [-1.0, -2.0]
    # nchw_to_nhwc copied the memory as stored: [1, 2, 3] for a view holding [-1, -2, -3].
    v = torch.complex(torch.zeros(1, 1, 1, 3), torch.tensor([[[[1.0, 2.0, 3.0]]]])).conj().imag
    with pytest.raises(kiln.Error, match="nchw_to_nhwc: .* negation is not applied"):
        kiln.nchw_to_nhwc(v)
    assert kiln.nchw_to_nhwc(v.resolve_neg()).tolist() == [[[[-1.0], [-2.0], [-3.0]]]]


@needs_torch
def test_producers_that_cannot_say_where_their_memory_is_get_kilns_words():
    with pytest.raises(kiln.Error, match="from_dlpack: .*Unknown device type meta"):
        kiln.from_dlpack(torch.empty(3, device="meta"))
    with pytest.raises(kiln.Error, match="nchw_to_nhwc: .*Unknown device type meta"):
        kiln.nchw_to_nhwc(torch.empty(1, 1, 1, 3, device="meta"))

    class ListDevice:  # __dlpack_device__ must give a (type, index) tuple of ints
        def __dlpack__(self, stream=None):
            return np.zeros(3, np.float32).__dlpack__()

        def __dlpack_device__(self):
            return [1, 0]

    with pytest.raises(kiln.Error, match=r"returned \[1, 0\], not the \(device type, index\) pair"):
        kiln.from_dlpack(ListDevice())
    with pytest.raises(kiln.Error, match="nchw_to_nhwc: kiln cannot read this .*native byte order"):
        kiln.nchw_to_nhwc(np.zeros((1, 2, 2, 2), dtype=">f4"))
