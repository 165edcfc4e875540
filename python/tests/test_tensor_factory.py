"""kiln.tensor against torch.tensor (shapes, dtypes, values, copies, errors) and the factories'
requires_grad, as torch's."""
import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")

DTYPES = {torch.float32: "float32", torch.int64: "int64", torch.int32: "int32"}


@pytest.mark.parametrize("data", [
    [1, 2, 3], [[1.0, 2], [3, 4]], 3.5, 7, -0.0, [], [[]], [[], []], (1, 2), [(1, 2), [3, 4]],
    [np.float32(1.5), 2], [np.int64(3), 4], [[1, 2, 3]], [[[1], [2]], [[3], [4]]], [2 ** 62, -5], [1e-46, 1e39],
])
def test_tensor_infers_shape_and_dtype_as_torch(data):
    t, r = kiln.tensor(data), torch.tensor(data)
    assert t.shape == tuple(r.shape) and t.dtype == DTYPES[r.dtype]
    assert t.tolist() == r.tolist()  # float32 values compared exactly (inf for 1e39, 0 for 1e-46, as torch)
    assert not t.requires_grad and t.device == "cpu"


def test_tensor_takes_a_dtype_and_copies_arrays():
    assert kiln.tensor([1, 2], dtype="float32").tolist() == [1.0, 2.0]
    assert kiln.tensor([1.7, -2.5], dtype="int64").tolist() == torch.tensor([1.7, -2.5], dtype=torch.int64).tolist()
    assert kiln.tensor([1.0, 3.0], dtype="bfloat16").dtype == "bfloat16"
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = kiln.tensor(a)  # float64, which kiln lacks, is rounded to float32
    a[0, 0] = 99  # a copy: the array's later writes are not seen
    assert t.dtype == "float32" and t.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert kiln.tensor(torch.arange(3, dtype=torch.float64) / 3).tolist() == torch.tensor([0, 1 / 3, 2 / 3]).tolist()
    assert kiln.tensor(torch.ones(2, dtype=torch.int32)).dtype == "int32"
    assert kiln.tensor(np.arange(4).reshape(2, 2)[:, 0]).tolist() == [0, 2]  # strided: copied all the same
    assert kiln.tensor(np.float32(2.5)).shape == () and kiln.tensor(np.array(3.0)).tolist() == 3.0
    x = kiln.ones([2]).requires_grad_()
    y = kiln.tensor(x, dtype="bfloat16")  # detached, as torch.tensor(t) is
    assert y.dtype == "bfloat16" and not y.requires_grad and y.data_ptr != x.data_ptr
    # Copies whether or not the dtype changes (one conversion is the copy; none: a clone).
    z = kiln.tensor(x)
    assert z.dtype == "float32" and z.data_ptr != x.data_ptr
    f = np.ones(3, dtype=np.float32)
    g = kiln.tensor(f)
    f[0] = 7
    assert g.tolist() == [1.0, 1.0, 1.0] and kiln.tensor(f, dtype="int32").tolist() == [7, 1, 1]


def test_tensor_and_factories_take_requires_grad():
    x = kiln.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.is_leaf and x.grad.tolist() == [2.0, 4.0]
    made = [kiln.zeros([2], requires_grad=True), kiln.ones([2], requires_grad=True),
            kiln.full([2], 3.0, requires_grad=True), kiln.zeros_like(x, requires_grad=True),
            kiln.ones_like(x, requires_grad=True), kiln.full_like(x, 2.0, requires_grad=True),
            kiln.arange(3.0, requires_grad=True), kiln.uniform([2], requires_grad=True),
            kiln.normal([2], requires_grad=True)]
    assert all(t.requires_grad and t.is_leaf for t in made)
    assert not kiln.zeros([2]).requires_grad
    with pytest.raises(kiln.Error, match="only floating tensors can require grad"):
        kiln.tensor([1, 2], requires_grad=True)  # int64, as torch refuses
    with pytest.raises(kiln.Error, match="only floating tensors"):
        kiln.zeros([2], dtype="int32", requires_grad=True)


def test_tensor_reads_what_torch_reads():
    class Lazy(list):  # __getitem__ makes a new object each time (once a crash: a dangling handle)
        def __getitem__(self, i):
            return [float(i), 1.0]
    assert kiln.tensor(Lazy([None, None])).tolist() == [[0.0, 1.0], [1.0, 1.0]]
    assert kiln.tensor(range(3)).tolist() == [0, 1, 2]
    nested = [np.array([1.5]), np.array([2.5])]  # arrays inside a list are read as lists, as torch's
    assert kiln.tensor(nested).shape == tuple(torch.tensor(np.stack(nested)).shape) == (2, 1)
    assert kiln.tensor(np.int32(3)).dtype == "int32" and kiln.tensor(np.uint8(7)).tolist() == 7
    p = torch.ones(2, requires_grad=True)  # copying a parameter, as torch.tensor(p) does
    assert kiln.tensor(p).tolist() == [1.0, 1.0] and kiln.tensor(p * 2).tolist() == [2.0, 2.0]
    # Integers exact, past float32's 2^24, from ints, floats and float64 arrays alike.
    for data in ([16777217.0], [16777217, 0.5], np.array([16777217.0])):
        assert kiln.tensor(data, dtype="int64").tolist()[0] == 16777217
    assert kiln.tensor(2 ** 70, dtype="float32").tolist() == float(torch.tensor(2 ** 70, dtype=torch.float32))
    assert kiln.tensor([2 ** 31 - 1], dtype="int32").tolist() == [2 ** 31 - 1]
    assert kiln.tensor([255, 0], dtype="uint8").tolist() == [255, 0]


class BadFloat:
    def __float__(self):
        raise ZeroDivisionError("from __float__")


@pytest.mark.parametrize("data,dtype,error,match", [
    ([2 ** 31], "int32", ValueError, "2147483648 does not fit in int32"),
    ([300, -1], "uint8", ValueError, "300 does not fit in uint8"),
    ([float("nan")], "int64", ValueError, "does not fit in int64"),
    ([1e10], "int32", ValueError, "does not fit in int32"),
    (None, None, TypeError, "data is a NoneType; give a number"),
    ([BadFloat()], None, ZeroDivisionError, "from __float__"),  # its own error, not swallowed
])
def test_tensor_refuses_numbers_that_overflow_as_torch(data, dtype, error, match):
    with pytest.raises(error, match=match):
        kiln.tensor(data, dtype=dtype)


@pytest.mark.parametrize("data,error,match", [
    ([[1, 2], [3]], ValueError, r"data\[1\] has 1 element\(s\), not 2, where the first elements give the shape "
                                r"\(2, 2\)"),
    ([1, [2]], ValueError, r"data\[1\] is a list, not a number"),
    ([[1], 2], ValueError, r"data\[1\] is an int, not a list of 1"),
    ([True, False], TypeError, "no bool tensors"),
    (["a"], TypeError, r"data\[0\] is a str, not a number"),
    ([2 ** 70], ValueError, "does not fit in int64"),
    ([[None]], TypeError, r"data\[0\]\[0\] is a NoneType"),
    ({1: 2}, TypeError, "data is a dict; give a number, nested lists"),
    ("12", TypeError, "data is a str"),
])
def test_tensor_refuses_what_it_cannot_read_naming_where(data, error, match):
    with pytest.raises(error, match=match):
        kiln.tensor(data)


@pytest.mark.parametrize("args", [(4,), (2, 10), (0, 2, 0.5), (10, 2, -3), (1.5,), (0, 1, 0.1), (5, 5), (-3, 4, 2),
                                  (0.5, -2.0, -0.75), (np.int64(3),), (0, 7, np.int32(2)), (1e-3, 1.0, 0.0625)])
def test_arange_is_torchs(args):
    k, t = kiln.arange(*args), torch.arange(*args)
    assert k.dtype == str(t.dtype).removeprefix("torch.") and k.shape == tuple(t.shape)
    assert k.tolist() == t.tolist()
    f = kiln.arange(*args, dtype="float32")
    assert f.dtype == "float32" and f.tolist() == torch.arange(*args, dtype=torch.float32).tolist()


@pytest.mark.parametrize("args", [(2**53 + 1, 2**53 + 4), (2**53 + 1, 2**53 - 2, -1), (-2**53 - 3, -2**53),
                                  (2**63 - 3, 2**63 - 1), (-2**63, -2**63 + 2), (0, 2**53 + 1, 2**52)])
def test_arange_of_large_ints_is_exact(args):
    assert kiln.arange(*args).tolist() == torch.arange(*args).tolist()


@pytest.mark.parametrize("args", [(-1.5, 1.5), (0, 6, 1.5), (2.9,), (-3.7, 2.2, 1.9)])
def test_arange_with_an_integer_dtype_truncates_its_numbers_first_as_torch(args):
    # torch's int64 rule; its int32 counts from the untruncated numbers instead, a quirk kiln does not copy
    assert kiln.arange(*args, dtype="int64").tolist() == torch.arange(*args, dtype=torch.int64).tolist()
    assert kiln.arange(*args, dtype="int32").tolist() == kiln.arange(*args, dtype="int64").tolist()


def test_arange_refuses_what_torch_refuses():
    with pytest.raises(kiln.Error, match="arange: step must be nonzero"):
        kiln.arange(0, 1, 0.3, dtype="int64")  # the step truncates to 0, as torch's
    with pytest.raises(kiln.Error, match="against the sign of step"):
        kiln.arange(2**53 + 1, 2**53)
    with pytest.raises(kiln.Error, match="values, more than kiln allocates"):
        kiln.arange(0, 2**62)
    with pytest.raises(kiln.Error, match="values, more than kiln allocates"):
        kiln.arange(-2**63, 2**63 - 1)  # a count past int64 itself
    with pytest.raises(kiln.Error, match="does not fit int32"):
        kiln.arange(2**54, 2**54 + 3, dtype="int32")
    with pytest.raises(kiln.Error, match="arange: step must be nonzero"):
        kiln.arange(0, 3, 0)
    with pytest.raises(kiln.Error, match="arange: end -5 lies below start 0, against the sign of step 1"):
        kiln.arange(-5)
    with pytest.raises(kiln.Error, match="must be finite"):
        kiln.arange(0, float("inf"))
    with pytest.raises(kiln.Error, match="only floating tensors can require grad"):
        kiln.arange(3, requires_grad=True)  # int64, as torch refuses
    with pytest.raises(TypeError):
        kiln.arange("3")
    with pytest.raises(TypeError):
        kiln.arange(0, 3, 1, "int64")  # dtype is keyword-only, as torch's


def test_zeros_and_ones_take_the_shape_as_torch():
    for make, name in [(kiln.zeros, "zeros"), (kiln.ones, "ones")]:
        want = getattr(torch, name)(2, 3)
        for got in (make(2, 3), make((2, 3)), make([2, 3]), make(size=(2, 3)), make(shape=[2, 3]),
                    make(np.int64(2), 3), make(torch.Size([2, 3]))):
            assert got.shape == (2, 3) and got.dtype == "float32" and got.tolist() == want.tolist()
        assert make(3, dtype="int32").tolist() == getattr(torch, name)(3, dtype=torch.int32).tolist()
        assert make(3, dtype="int32").dtype == "int32" and make(()).shape == () and make(0).shape == (0,)
        assert make(2, 2, requires_grad=True).requires_grad and make(2, dtype=None).dtype == "float32"
        for args, kwargs in [((), {}), ((1.5,), {}), ((True,), {}), ((2,), {"size": 3})]:
            with pytest.raises(TypeError, match=f"kiln.{name} takes the shape as ints, kiln.{name}\\(2, 3\\)"):
                make(*args, **kwargs)
        with pytest.raises(TypeError, match=f"kiln.{name}\\(\\) got an unexpected keyword argument 'foo'"):
            make(2, foo=1)
        with pytest.raises(TypeError, match=f"kiln.{name}: requires_grad must be a bool, not int"):
            make(2, requires_grad=1)
        with pytest.raises(TypeError, match=f"kiln.{name}: dtype must be a dtype's name"):
            make(2, dtype=3)


def test_full_infers_its_dtype_from_the_value_as_torch():
    for value in (7, -2**63, np.int32(3), 2.5, np.float32(3.0)):
        got, want = kiln.full([2], value), torch.full([2], value)
        assert got.dtype == str(want.dtype).replace("torch.", "") and got.tolist() == want.tolist()
    assert kiln.full([2], 7, dtype="float32").dtype == "float32"
    assert kiln.full([2], True, dtype="int32").tolist() == [1, 1]
    with pytest.raises(kiln.Error, match="full: the fill value is a bool; kiln has no bool tensors"):
        kiln.full([2], True)
    with pytest.raises(kiln.Error, match="full: the int 1180591620717411303424 is past int64's range"):
        kiln.full([2], 2**70)
    assert kiln.full([1], 2**70, dtype="float32").tolist() == [float(2**70)]
    with pytest.raises(TypeError, match="full: the fill value must be a number, not str"):
        kiln.full([2], "a")
