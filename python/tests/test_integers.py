"""Integer tensors against torch's: the ops that order values (amax, amin, max, min, argmax, argmin),
expand, +, -, *, maximum, minimum and the whole sum on int32 and int64, exact past 2^24 and wrapping
as torch's; and argmax and argmin without a dim (torch's: the flattened position)."""
import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def from_torch(t):
    """A kiln tensor holding a copy of torch tensor t."""
    return kiln.from_dlpack(t.clone())


def same(k, t):
    """Kiln tensor k equals torch tensor t in dtype, shape and every value."""
    got = torch.from_dlpack(k)
    assert got.dtype == t.dtype and got.shape == t.shape, (got.dtype, got.shape, t.dtype, t.shape)
    assert torch.equal(got, t), (got, t)


def wide(shape, dtype, seed=0):
    """Integers within 8 of +-2^40 (int64) or +-2^30 (int32): neighbours float32 cannot tell apart, ties."""
    rng = np.random.RandomState(seed)
    base = 1 << 40 if dtype == torch.int64 else 1 << 30
    v = rng.randint(0, 8, size=shape) + np.where(rng.rand(*shape) < 0.3, -base, base)
    return torch.from_numpy(v.astype(np.int64)).to(dtype)


@pytest.mark.parametrize("shape", [(2, 3), (4, 5, 6), (7,), (3, 1, 40)])
def test_argmax_without_dim_is_the_flattened_position(shape):
    t = torch.from_numpy(np.random.RandomState(1).randn(*shape).astype(np.float32))
    k = from_torch(t)
    for name in ("argmax", "argmin"):
        same(getattr(kiln, name)(k), getattr(torch, name)(t))
        same(getattr(k, name)(), getattr(t, name)())
        same(getattr(k, name)(keepdim=True), getattr(t, name)(keepdim=True))
        same(getattr(kiln, name)(k, None, True), getattr(torch, name)(t, None, True))


def test_argmax_along_a_dim_and_of_a_scalar_nan_and_empty():
    t = torch.tensor([[1.0, 5.0, 2.0], [7.0, float("nan"), 3.0]])
    k = from_torch(t)
    same(kiln.argmax(k, 1), torch.argmax(t, 1))
    same(k.argmin(0, True), t.argmin(0, True))
    same(kiln.argmax(k), torch.argmax(t))  # the NaN wins, as torch's
    same(kiln.argmax(kiln.tensor(3.0)), torch.argmax(torch.tensor(3.0)))
    with pytest.raises(kiln.Error, match=r"argmax: float32\[0, 3\] on cpu holds no element, so it has no maximum"):
        kiln.argmax(kiln.zeros([0, 3]))
    with pytest.raises(kiln.Error, match=r"argmin: dimension 0 of float32\[0, 3\] on cpu is empty"):
        kiln.zeros([0, 3]).argmin(0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("shape", [(6, 40), (5, 7, 3), (3, 1500), (1, 33), (200,)])
def test_integer_extremes_match_torch_exactly(dtype, shape):
    t = wide(shape, dtype, seed=len(shape) * 100 + shape[-1])
    k = from_torch(t)
    same(k.max(), t.max())
    same(kiln.amin(k), torch.amin(t))
    same(k.argmax(), t.argmax())
    same(kiln.argmin(k), torch.argmin(t))
    for d in range(-len(shape), len(shape)):
        same(k.amax(d), t.amax(d))
        same(kiln.amin(k, d, True), torch.amin(t, d, True))
        same(k.argmax(d), t.argmax(d))
        same(kiln.argmin(k, d, True), torch.argmin(t, d, True))
        values, indices = k.max(d)
        same(values, t.max(d).values)
        same(indices, t.max(d).indices)
        same(kiln.min(k, d, True).indices, torch.min(t, d, True).indices)
    if len(shape) == 3:
        same(k.amax([0, 2]), t.amax([0, 2]))
        same(kiln.amin(k, [2, 0], True), torch.amin(t, [2, 0], True))


def test_integer_extremes_at_the_ends_of_the_range():
    for dtype, lo, hi in [(torch.int64, -(1 << 63), (1 << 63) - 1), (torch.int32, -(1 << 31), (1 << 31) - 1)]:
        t = torch.tensor([[0, hi, hi - 1, lo], [lo + 1, lo, hi, hi]], dtype=dtype)
        k = from_torch(t)
        for name in ("amax", "amin", "argmax", "argmin"):
            same(getattr(k, name)(1), getattr(t, name)(1))
            same(getattr(k, name)(), getattr(t, name)())
        same(kiln.tensor(-7, dtype="int64").max(), torch.tensor(-7).max())  # 0-d


def test_integer_expand_and_broadcast_to():
    for dtype in (torch.int64, torch.int32, torch.uint8):
        t = torch.arange(6, dtype=dtype).reshape(2, 1, 3)
        k = from_torch(t)
        same(k.expand(2, 4, 3), t.expand(2, 4, 3))
        same(kiln.broadcast_to(k, [5, 2, 2, 3]), torch.broadcast_to(t, [5, 2, 2, 3]))
    labels = kiln.tensor([3, 1, 2])
    one_hot = kiln.eq(labels.reshape(3, 1).expand(3, 4), kiln.arange(4))
    same(one_hot, (torch.tensor([[3], [1], [2]]) == torch.arange(4)).float())


def test_integer_order_refusals_name_the_dtype():
    u8 = kiln.tensor([1, 2, 3]).astype("uint8")
    for fn, name in [(lambda: u8.max(), "amax"), (lambda: kiln.argmax(u8, 0), "argmax"), (lambda: u8.min(0), "min")]:
        with pytest.raises(kiln.Error, match=name + r": .* must be float32, bfloat16, int32 or int64, got uint8\[3\]"):
            fn()
    with pytest.raises(kiln.Error, match=r"sum_to: input x must be float32 or bfloat16, got int64"):
        kiln.sum_to(kiln.tensor([[1, 2]]), [1, 1])


LIMITS = {torch.int64: (-(1 << 63), (1 << 63) - 1), torch.int32: (-(1 << 31), (1 << 31) - 1)}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_arithmetic_matches_torch_exactly_and_wraps(dtype):
    lo, hi = LIMITS[dtype]
    a = torch.tensor([[0, 1, -1, hi, lo, hi - 5], [7, -7, 1 << 20, lo + 3, 12345, -1]], dtype=dtype)
    b = torch.tensor([3, hi, lo, 2, -2, 1 << 12], dtype=dtype)
    ka, kb = from_torch(a), from_torch(b)
    same(ka + kb, a + b)
    same(ka - kb, a - b)
    same(kb - ka, b - a)
    same(ka * kb, a * b)  # products past the range wrap, as torch's
    same(kiln.maximum(ka, kb), torch.maximum(a, b))
    same(kiln.minimum(kb.reshape(6, 1), ka[0]), torch.minimum(b.reshape(6, 1), a[0]))
    same(ka.sum(), a.sum())  # int64, as torch's, wrapping past the range
    same(kb.sum(), b.sum())
    same(kiln.sum(kiln.zeros([0], dtype=str(dtype).removeprefix("torch."))), torch.zeros(0, dtype=dtype).sum())


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_integer_tensor_with_a_python_int_is_exact(dtype):
    t = torch.tensor([1, -2, 3], dtype=dtype)
    k = from_torch(t)
    n = (1 << 53) + 1 if dtype == torch.int64 else (1 << 30) + 1  # past float32's and (int64) double's integers
    for got, want in [(k + n, t + n), (n + k, n + t), (k - n, t - n), (n - k, n - t), (k * 3, t * 3),
                      (3 * k, 3 * t), (k + True, t + True), (k * np.int64(-2), t * -2), (k + np.array(4), t + 4),
                      (-k, -t), (abs(k), abs(t)), (kiln.abs(-k), torch.abs(-t))]:
        same(got, want)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_a_float_number_promotes_an_integer_tensor_to_float32_as_torch(dtype):
    t = torch.tensor([1, -3, 1 << 24], dtype=dtype)
    k = from_torch(t)
    for got, want in [(k + 3.0000001, t + 3.0000001), (k * 1e-50, t * 1e-50), (k + 2.0, t + 2.0), (2.0 - k, 2.0 - t),
                      (k ** 2.0, t ** 2.0), (k / 2.0, t / 2.0), (k + 16777217.0, t + 16777217.0),
                      (k + torch.tensor(2.5), t + 2.5), (k * np.float32(0.5), t * 0.5), (k + np.array(2.0), t + 2.0)]:
        same(got, want)


def test_integer_promotion_and_extremes_of_the_range_as_torch():
    x32 = torch.tensor([5, -7, 2**31 - 1], dtype=torch.int32)
    k32 = from_torch(x32)
    same(k32 - k32.sum(), x32 - x32.sum())  # a 0-d operand does not widen a dimensioned one
    same(k32 + from_torch(torch.tensor(3)), x32 + torch.tensor(3))
    same(from_torch(torch.tensor(3)) * k32, torch.tensor(3) * x32)
    # Comparisons stay exact: torch wraps the 0-d int64 into int32 here (2^40 -> 0) and says 5 > 2^40.
    same(k32 > from_torch(torch.tensor(2**40)), (x32.long() > torch.tensor(2**40)).float())
    lowest = torch.tensor([-(2**63), 5])
    same(-from_torch(lowest), -lowest)  # wraps: the lowest value is its own negation, as torch's
    same(abs(from_torch(lowest)), abs(lowest))
    same(from_torch(x32).sum(keepdim=True), x32.sum(dim=(0,), keepdim=True))


def test_mixed_int32_and_int64_widen_as_torch():
    a, b = torch.tensor([1 << 30, -5], dtype=torch.int32), torch.tensor([1 << 40, 3])
    same(from_torch(a) + from_torch(b), a + b)
    same(from_torch(b) * from_torch(a), b * a)


@pytest.mark.parametrize("itype", [torch.int32, torch.int64])
@pytest.mark.parametrize("ftype", [torch.float32, torch.bfloat16])
def test_integers_beside_floats_promote_as_torch(itype, ftype):
    i = torch.tensor([[3, -7, 12], [5, 0, -2]], dtype=itype)
    f = torch.tensor([0.5, -1.25, 3.0], dtype=ftype)
    ops = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b]
    for op in ops:
        same(op(from_torch(i), from_torch(f)), op(i, f))
        same(op(from_torch(f), from_torch(i)), op(f, i))
        same(op(from_torch(i), from_torch(f[0])), op(i, f[0]))  # a 0-d float still wins (torch's category rule)
        same(op(from_torch(i[0, 0]), from_torch(f)), op(i[0, 0], f))
    for name in ("maximum", "minimum"):
        same(getattr(kiln, name)(from_torch(i), from_torch(f)), getattr(torch, name)(i, f))
    p = torch.tensor([1.5, 2.0, 0.5], dtype=ftype)
    same(kiln.pow(from_torch(i.abs()), from_torch(p)), torch.pow(i.abs(), p))
    same(kiln.pow(from_torch(p), from_torch(i.abs())), torch.pow(p, i.abs()))
    # true division of integers is float32, as torch's: tensor / tensor, tensor / int, int / tensor
    d = torch.tensor([4, 3, -8], dtype=itype)
    same(from_torch(i) / from_torch(d), i / d)
    same(from_torch(i) / 4, i / 4)
    got = torch.from_dlpack(7 / from_torch(d))  # divided once; torch's is 7 * reciprocal(d), an ulp off at times
    assert got.dtype == torch.float32 and torch.equal(got, torch.tensor([7.0, 7.0, 7.0]) / d.float())
    # the gradient reaches the float operand only
    x = from_torch(f.float()).requires_grad_()
    (from_torch(i) * x).sum().backward()
    same(x.grad, i.float().sum(0))


def test_integer_arithmetic_refusals_say_what_to_do():
    k = kiln.tensor([1, 2, 3])
    cases = [(lambda: k ** k, r"pow: int64\[3\] on cpu and int64\[3\] on cpu are integers, .*\) for pow"),
             (lambda: k ** 2, "for pow"),
             (lambda: k.astype("int32") + 2**40, r"\+: 1099511627776 does not fit the dtype of int32\[3\] on cpu"),
             (lambda: k + 2**64, r"\+: 18446744073709551616 does not fit"),
             (lambda: k.astype("uint8") * k.astype("uint8"), "kiln's arithmetic takes float32, bfloat16, int32"),
             (lambda: k.sum(0), r"sum: int64\[3\] on cpu is integer, which kiln sums whole"),
             (lambda: k.mean(), r"mean: int64\[3\] on cpu is integer; convert it with astype")]
    for fn, message in cases:
        with pytest.raises(kiln.Error, match=message):
            fn()
    with pytest.raises(TypeError, match="kiln does not convert arrays implicitly"):
        k + np.array([1, 2, 3])
