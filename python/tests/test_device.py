"""Devices and the GPU math switches from Python: counts, names, memory, and set_gpu_math's
all-or-nothing validation (the switches themselves act on a GPU only)."""
import pytest

import kiln


@pytest.fixture
def restore_gpu_math():
    was = kiln.gpu_math()
    yield
    kiln.set_gpu_math(tf32=was["tf32"], conv_search=was["conv_search"], deterministic=was["deterministic"],
                      conv_api=was["conv_api"], conv_fuse=was["conv_fuse"])


def test_devices():
    assert kiln.device_count("cpu") == 1
    assert kiln.device_count() >= 0  # "cuda": 0 without a GPU or a CUDA build
    assert kiln.device_name("cpu") == "cpu"
    stats = kiln.memory_stats("cpu")
    assert set(stats) == {"current_bytes", "peak_bytes", "reserved_bytes"}
    kiln.reset_peak_memory("cpu")
    kiln.synchronize("cpu")
    with pytest.raises(kiln.Error, match="cpu.*cuda"):
        kiln.device_count("tpu")
    with pytest.raises(kiln.Error, match="unknown device"):
        kiln.memory_stats("gpu0")
    n = kiln.device_count()
    with pytest.raises(kiln.Error, match=f"no device cuda:{n}: kiln sees {n} CUDA GPU"):
        kiln.device_name(f"cuda:{n}")


def test_set_gpu_math_applies_and_reports(restore_gpu_math):
    kiln.set_gpu_math(tf32="none", conv_api="graph")
    m = kiln.gpu_math()
    assert m["tf32"] == "none" and m["conv_api"] == "graph"
    assert "KILN_TF32=none" in m["summary"] and "graph API" in m["summary"]
    kiln.set_gpu_math(deterministic=True)  # the others stay
    m = kiln.gpu_math()
    assert m["deterministic"] and m["tf32"] == "none" and m["conv_search"] == "heuristic" and m["conv_fuse"]
    kiln.set_gpu_math(conv_fuse=False)
    m = kiln.gpu_math()
    assert not m["conv_fuse"] and "KILN_CONV_FUSE=0" in m["summary"]


def test_set_gpu_math_is_all_or_nothing(restore_gpu_math):
    before = kiln.gpu_math()
    with pytest.raises(kiln.Error, match="tf32='fast'.*none.*conv.*all"):
        kiln.set_gpu_math(tf32="fast", conv_api="graph")
    with pytest.raises(kiln.Error, match="conv_api='cudnn'"):
        kiln.set_gpu_math(tf32="all", conv_api="cudnn")
    with pytest.raises(kiln.Error, match="do not go together"):
        kiln.set_gpu_math(deterministic=True, conv_search="exhaustive")
    assert kiln.gpu_math() == before


def test_profiler_times_each_op_of_a_block():
    x = kiln.uniform([2, 8, 8, 3])
    w = kiln.uniform([4, 3, 3, 3])
    with kiln.Profiler(by_shape=True) as p:
        kiln.relu(kiln.conv2d(x, w, padding=1))
    rows = p.rows()
    conv = [r for r in rows if r["op"] == "conv2d_forward"]
    assert len(conv) == 1 and conv[0]["calls"] == 1 and conv[0]["shape"] == "float32[2, 8, 8, 3]"
    assert any(r["op"] == "relu" for r in rows)
    assert p.table().startswith("profile: ")
    kiln.relu(x)  # after the block: not counted
    assert sum(r["calls"] for r in p.rows() if r["op"] == "relu") == 1
    with pytest.raises(kiln.Error, match="another profiler"):
        with kiln.Profiler():
            kiln.Profiler()
    # A stopped profiler is not started again: a second `with` over it timed nothing, silently.
    with pytest.raises(kiln.Error, match="has stopped .* make a new one"):
        with p:
            kiln.relu(x)
