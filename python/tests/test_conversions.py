"""astype to integer types where C++, NumPy and torch leave the result undefined (NaN,
infinities, values out of range): kiln's result is the one kernels/common/convert.h spells out
and docs/python.md states, on every device kiln has here."""
import numpy as np
import pytest

import kiln

DEVICES = ["cpu"] + (["cuda"] if kiln.device_count("cuda") > 0 else [])
INT32_MIN, INT64_MIN = -2**31, -2**63

# float32 value -> (int32, int64, uint8), as docs/python.md says: truncation toward zero;
# NaN, infinities and values out of range give the type's minimum; uint8 is the low byte of
# the int32 result.
CASES = [
    (np.nan, INT32_MIN, INT64_MIN, 0),
    (np.inf, INT32_MIN, INT64_MIN, 0),
    (-np.inf, INT32_MIN, INT64_MIN, 0),
    (2.9, 2, 2, 2),
    (-2.9, -2, -2, 254),
    (-0.5, 0, 0, 0),
    (300.7, 300, 300, 44),
    (-1.5, -1, -1, 255),
    (255.9, 255, 255, 255),
    (256.0, 256, 256, 0),
    (3e9, INT32_MIN, 3000000000, 0),
    (-3e9, INT32_MIN, -3000000000, 0),
    (2.0**31, INT32_MIN, 2**31, 0),    # the first float32 past int32's range
    (-2.0**31, INT32_MIN, INT32_MIN, 0),  # in range: int32's minimum itself
    (1e19, INT32_MIN, INT64_MIN, 0),
    (-1e19, INT32_MIN, INT64_MIN, 0),
    (2.0**63, INT32_MIN, INT64_MIN, 0),  # the first float32 past int64's range
    (-2.0**63, INT32_MIN, INT64_MIN, 0),  # in range
]


@pytest.mark.parametrize("device", DEVICES)
def test_astype_from_float32_to_integers_gives_what_the_docs_say(device):
    x = kiln.from_dlpack(np.array([c[0] for c in CASES], dtype=np.float32)).to(device)
    for column, dtype in ((1, "int32"), (2, "int64"), (3, "uint8")):
        got = x.astype(dtype)
        assert got.dtype == dtype
        want = [c[column] for c in CASES]
        assert got.to("cpu").numpy().tolist() == want, dtype
    # bfloat16 converts through the same rule.
    b = kiln.from_dlpack(np.array([np.nan, np.inf, -np.inf, 300.7, -1.5], dtype=np.float32)).to(device)
    b = b.astype("bfloat16")
    assert b.astype("int32").to("cpu").numpy().tolist() == [INT32_MIN, INT32_MIN, INT32_MIN, 300, -1]
    assert b.astype("uint8").to("cpu").numpy().tolist() == [0, 0, 0, 44, 255]


@pytest.mark.parametrize("device", DEVICES)
def test_astype_between_integers_wraps(device):
    x = kiln.from_dlpack(np.array([2**40 + 5, -1, 300, -2**40 - 1, 2**63 - 1], dtype=np.int64)).to(device)
    assert x.astype("int32").to("cpu").numpy().tolist() == [5, -1, 300, -1, -1]
    assert x.astype("uint8").to("cpu").numpy().tolist() == [5, 255, 44, 255, 255]
    assert x.astype("int32").astype("int64").to("cpu").numpy().tolist() == [5, -1, 300, -1, -1]


def test_astype_says_what_it_gives():
    doc = kiln.Tensor.astype.__doc__
    assert "truncates toward zero" in doc and "NaN, infinities and values outside the type's range" in doc
    assert "int32 -2**31, int64 -2**63" in doc and "low byte" in doc and "wraps modulo 2**bits" in doc


@pytest.mark.parametrize("device", DEVICES)
def test_tolist_and_item_give_torchs_nesting_and_python_types(device):
    big = 2**62 + 1  # a double would round it
    ints = kiln.from_dlpack(np.array([[big, -3, 0], [1, 2, -big]], dtype=np.int64)).to(device)
    got = ints.tolist()
    assert got == [[big, -3, 0], [1, 2, -big]] and all(type(v) is int for row in got for v in row)
    assert ints[0, 0].item() == big and type(ints[0, 0].item()) is int and ints[1, 2].tolist() == -big
    for dtype in ("int32", "uint8"):
        small = kiln.from_dlpack(np.array([[7], [200]], dtype=np.int64)).astype(dtype).to(device)
        assert small.tolist() == [[7], [200]] and type(small.tolist()[1][0]) is int, dtype
    for dtype in ("float32", "bfloat16"):
        x = kiln.from_dlpack(np.array([[[0.5, -2.0]]], dtype=np.float32)).astype(dtype).to(device)
        assert x.tolist() == [[[0.5, -2.0]]] and type(x.tolist()[0][0][1]) is float, dtype
        assert type(x[0, 0, 0].item()) is float and x.reshape([2])[1].tolist() == -2.0
    assert kiln.zeros([2, 0, 3]).tolist() == [[], []] and kiln.zeros([0]).tolist() == []
    assert kiln.arange(24).reshape([2, 3, 4]).tolist() == np.arange(24.0).reshape(2, 3, 4).tolist()
    with pytest.raises(ValueError, match=r"item\(\): only a one-element tensor converts"):
        ints.item()
