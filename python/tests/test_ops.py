"""A few ops' forward and gradients from Python against PyTorch (NHWC in kiln, NCHW in torch)."""
import os

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def k(x, grad=True):
    t = kiln.from_dlpack(x.detach().contiguous().clone())
    t.requires_grad = grad
    return t


def close(t, x, tol=1e-4):
    np.testing.assert_allclose(np.from_dlpack(t), x.detach().numpy(), rtol=tol, atol=tol)


def test_linear_relu_cross_entropy_forward_and_gradients():
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    labels = torch.tensor([0, 2, 1, 2])
    kx, kw, kb = k(x), k(w), k(b)
    loss = kiln.softmax_cross_entropy(kiln.relu(kiln.linear(kx, kw, kb)), kiln.from_dlpack(labels))
    for v in (x, w, b):
        v.requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(torch.relu(torch.nn.functional.linear(x, w, b)), labels)
    loss.backward()
    ref.backward()
    assert abs(loss.item() - ref.item()) < 1e-5
    for kt, tt in ((kx, x), (kw, w), (kb, b)):
        close(kt.grad, tt.grad)


def test_conv2d_and_max_pool_nhwc_against_torch_nchw():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)  # NCHW
    w = torch.randn(4, 3, 3, 3, requires_grad=True)  # OIHW
    kx = kiln.nchw_to_nhwc(x.detach())
    kx.requires_grad = True
    kw = kiln.from_dlpack(w.detach().permute(0, 2, 3, 1), copy_to_contiguous=True)  # OHWI
    kw.requires_grad = True
    y = kiln.max_pool2d(kiln.conv2d(kx, kw, stride=1, padding=1))
    ref = torch.nn.functional.max_pool2d(torch.nn.functional.conv2d(x, w, padding=1), 2)
    close(y, ref.permute(0, 2, 3, 1))
    kiln.sum(kiln.mul(y, y)).backward()
    (ref * ref).sum().backward()
    close(kx.grad, x.grad.permute(0, 2, 3, 1), 1e-3)
    close(kw.grad, w.grad.permute(0, 2, 3, 1), 1e-3)


def test_conv2d_and_max_pool_take_h_w_pairs_and_pool_stride_defaults_to_kernel():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 11, 9, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, requires_grad=True)
    kx = kiln.nchw_to_nhwc(x.detach())
    kw = kiln.from_dlpack(w.detach().permute(0, 2, 3, 1), copy_to_contiguous=True)
    y = kiln.conv2d(kx, kw, stride=(2, 1), padding=[1, 0])
    ref = torch.nn.functional.conv2d(x, w, stride=(2, 1), padding=(1, 0))
    close(y, ref.permute(0, 2, 3, 1))
    p = kiln.max_pool2d(kx, 3)  # stride 3, as torch's default
    close(p, torch.nn.functional.max_pool2d(x, 3).permute(0, 2, 3, 1))
    q = kiln.max_pool2d(kx, (3, 2), stride=(2, 1), padding=(1, 0))
    close(q, torch.nn.functional.max_pool2d(x, (3, 2), stride=(2, 1), padding=(1, 0)).permute(0, 2, 3, 1))
    with pytest.raises(kiln.Error, match="stride must be an int or a pair"):
        kiln.conv2d(kx, kw, stride="2")


def test_elementwise_operators_and_no_grad():
    a, b = kiln.full([3], 2.0), kiln.arange(3.0)
    a.requires_grad = True
    y = kiln.sum((a * b + a) * 3.0 - b)
    assert y.item() == pytest.approx(3 * (2 * 3 + 6) - 3)
    y.backward()
    assert a.grad.tolist() == [3.0, 6.0, 9.0]
    with kiln.no_grad():
        z = a * 2.0
    assert not z.requires_grad and kiln.grad_enabled()


def test_broadcasting_and_division_match_torch():
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 3, 4, 5), torch.randn(5), torch.rand(3, 1, 1) + 0.5
    kx, kw, kb = k(x), k(w), k(b)
    y = kiln.sum((kx * kw - kb) / kb + 1.0 / kb + kx / 4.0)
    for v in (x, w, b):
        v.requires_grad_(True)
    ref = ((x * w - b) / b + 1.0 / b + x / 4.0).sum()
    y.backward()
    ref.backward()
    assert y.item() == pytest.approx(ref.item(), rel=1e-5)
    for kv, tv in ((kx, x), (kw, w), (kb, b)):
        assert tuple(kv.grad.shape) == tuple(tv.shape)
        close(kv.grad, tv.grad, 1e-4)
    close(kiln.sum_to(kx, [4, 1]), x.sum_to_size(4, 1))
    close(kiln.broadcast_to(kw, [3, 5]), w.expand(3, 5))
    with pytest.raises(kiln.Error, match=r"shapes \[2, 3, 4, 5\] and \[4\] do not broadcast"):
        kx + kiln.ones([4])
    # s / t on bf16: s stays float32 until the one rounding of the quotient, as in t / s.
    a = torch.linspace(0.5, 4, 200)
    ka = kiln.from_dlpack(a.clone()).astype("bfloat16")
    abf = a.bfloat16().float()
    for s in (0.1, 1 / 3, 7.7):
        want = (torch.tensor(s, dtype=torch.float32) / abf).bfloat16().float()
        assert (s / ka).astype("float32").tolist() == want.tolist()
        want = (torch.tensor(s, dtype=torch.float32) - abf).bfloat16().float()
        assert (s - ka).astype("float32").tolist() == want.tolist()


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "tanh", "sigmoid", "gelu", "silu", "abs", "softplus"])
def test_unary_math_matches_torch_forward_and_gradient(name):
    torch.manual_seed(3)
    x = torch.randn(3, 7) * 2
    if name in ("log", "sqrt"):
        x = x.abs() + 0.2  # the domain, away from 0's steep slope
    kx = k(x)
    y = getattr(kiln, name)(kx)
    kiln.sum(y).backward()
    xt = x.clone().requires_grad_(True)
    ref = (getattr(torch, name, None) or getattr(torch.nn.functional, name))(xt)
    ref.sum().backward()
    close(y, ref, 1e-5)
    close(kx.grad, xt.grad, 1e-5)
    if name == "abs":  # Python's abs() is the same op
        assert abs(kiln.from_dlpack(np.array([-1.5, 2.0], np.float32))).tolist() == [1.5, 2.0]


def test_unary_math_at_infinities_nan_zeros_and_denormals_is_torchs():
    v = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40, 100.0, -100.0, -1.0], np.float32)
    for name in ["exp", "log", "sqrt", "tanh", "sigmoid", "gelu", "silu", "abs", "softplus"]:
        got = getattr(kiln, name)(kiln.from_dlpack(v.copy())).tolist()
        fn = getattr(torch, name, None) or getattr(torch.nn.functional, name)
        # torch in float64, rounded to float32: torch's float sigmoid and silu flush to 0 below
        # -88.7 (e^-x overflows), where kiln's are denormal, as the exact values
        want = fn(torch.from_numpy(v.astype(np.float64))).float().tolist()
        for x, g, w in zip(v.tolist(), got, want):  # NaN where torch has NaN; else within a few ulp
            tiny = abs(w) < np.finfo(np.float32).tiny  # a denormal result: within a spacing (silu's: |x|)
            tol = (1 + abs(x) * (name == "silu")) * np.finfo(np.float32).smallest_subnormal if tiny else 0
            assert (g != g and w != w) or g == pytest.approx(w, rel=1e-6, abs=tol), (name, x, got, want)


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "binary_cross_entropy_with_logits"])
def test_losses_match_torch_forward_and_both_gradients(name):
    torch.manual_seed(4)
    a = torch.randn(5, 3) * 2
    b = torch.rand(5, 3) if name.startswith("binary") else torch.randn(5, 3)
    ka, kb = k(a), k(b)
    loss = getattr(kiln, name)(ka, kb)
    loss.backward()
    at, bt = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref = getattr(torch.nn.functional, name)(at, bt)
    ref.backward()
    close(loss, ref, 1e-5)
    close(ka.grad, at.grad, 1e-5)
    close(kb.grad, bt.grad, 1e-5)
    with pytest.raises(kiln.Error, match="reshape one to match"):
        getattr(kiln, name)(ka, k(b.reshape(15)))


def test_transpose_and_matmul_match_torch_with_gradients():
    torch.manual_seed(5)
    a, b = torch.randn(6, 4), torch.randn(4, 3)
    ka, kb = k(a), k(b)
    y = ka @ kb
    kiln.sum(kiln.mul(y, y)).backward()
    at, bt = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    ref = at @ bt
    (ref * ref).sum().backward()
    close(y, ref, 1e-5)
    close(ka.grad, at.grad, 1e-4)
    close(kb.grad, bt.grad, 1e-4)
    x = torch.randn(2, 3, 5)
    assert kiln.transpose(k(x, grad=False)).tolist() == x.transpose(-2, -1).tolist()
    with pytest.raises(kiln.Error, match=r"a \[6, 4\] has 4 columns but b \[3, 4\] has 3 rows"):
        kiln.matmul(ka, k(b.t()))
    # Batches: every row of a [2, 5, 6] through one [6, 4]; attention's [2, 3, 5, 6] @ [2, 3, 6, 5].
    for sa, sb in [((2, 5, 6), (6, 4)), ((2, 3, 5, 6), (2, 3, 6, 5))]:
        a3, b3 = torch.randn(*sa), torch.randn(*sb)
        ka3, kb3 = k(a3), k(b3)
        ta3, tb3 = a3.clone().requires_grad_(True), b3.clone().requires_grad_(True)
        y3, ref3 = ka3 @ kb3, ta3 @ tb3
        kiln.sum(kiln.mul(y3, y3)).backward()
        (ref3 * ref3).sum().backward()
        close(y3, ref3, 1e-5)
        close(ka3.grad, ta3.grad, 1e-4)
        close(kb3.grad, tb3.grad, 1e-4)
    for sa, sb in [((2, 0, 4), (2, 4, 5)), ((2, 3, 0), (2, 0, 5)), ((2, 3, 0), (0, 5))]:  # empty products, as torch
        a0, b0 = torch.randn(*sa), torch.randn(*sb)
        ka0, kb0 = k(a0), k(b0)
        y0 = ka0 @ kb0
        assert y0.shape == tuple((a0 @ b0).shape)
        close(y0, a0 @ b0, 0)
        kiln.sum(y0).backward()
        assert ka0.grad.shape == sa and kb0.grad.shape == sb
    # Batch dimensions broadcast as torch's, gradients summed back to each operand's shape.
    # Past 8 dimensions where only 1s are added (a view), and a batch padded with 1s.
    for sa, sb in [((2, 1, 3, 4), (5, 4, 2)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (1, 1, 4, 5)), ((1, 3, 4), (2, 4, 5)),
                   ((3, 4), (1,) * 7 + (2, 4, 5)), ((2, 3, 4), (1, 2, 4, 5))]:
        ta, tb = torch.randn(*sa, requires_grad=True), torch.randn(*sb, requires_grad=True)
        ka2, kb2 = k(ta.detach()), k(tb.detach())
        y2, ref2 = ka2 @ kb2, ta @ tb
        assert y2.shape == tuple(ref2.shape)
        close(y2, ref2, 1e-5)
        kiln.sum(kiln.mul(y2, y2)).backward()
        (ref2 * ref2).sum().backward()
        close(ka2.grad, ta.grad, 1e-4)
        close(kb2.grad, tb.grad, 1e-4)
    with pytest.raises(kiln.Error, match=r"batch dimensions that do not broadcast: 2 against 3 at dimension -3"):
        kiln.matmul(k(torch.randn(2, 3, 4), grad=False), k(torch.randn(3, 4, 5), grad=False))
    with pytest.raises(TypeError):
        ka @ b.numpy()


def test_reductions_over_dims_match_torch_with_gradients():
    torch.manual_seed(6)
    x = torch.randn(2, 3, 4)
    for dim, keepdim in [(1, False), (-1, True), ([0, 2], False), ((0, 1), True)]:
        for name in ["sum", "mean"]:
            kx, tx = k(x), x.clone().requires_grad_(True)
            y = getattr(kiln, name)(kx, dim, keepdim=keepdim)
            ref = getattr(torch, name)(tx, dim, keepdim=keepdim)
            assert y.shape == tuple(ref.shape)
            kiln.sum(kiln.mul(y, y)).backward()
            (ref * ref).sum().backward()
            close(y, ref, 1e-5)
            close(kx.grad, tx.grad, 1e-5)
    assert kiln.sum(k(x, grad=False), keepdim=True).shape == (1, 1, 1)
    one = k(torch.randn(3, 1))
    y = kiln.sum(one, 1, keepdim=True)  # the shape stays: still a new tensor, not one itself
    assert y.data_ptr != one.data_ptr
    assert kiln.sum(k(torch.tensor(2.5), grad=False), 0).item() == 2.5  # a scalar's dimension 0, as torch
    with pytest.raises(kiln.Error, match=r"dimension 3 is out of range .* -3 to 2"):
        kiln.sum(k(x), 3)
    with pytest.raises(kiln.Error, match="dimension 1 is named twice"):
        kiln.mean(k(x), [1, -2])


def test_integer_comparisons_are_exact_and_give_an_accuracy():
    # argmax's int64 against a Loader's int64 labels: kiln.eq(...).mean() is the accuracy.
    torch.manual_seed(0)
    logits, labels = torch.randn(50, 7), torch.randint(0, 7, (50,))
    acc = kiln.mean(kiln.eq(kiln.argmax(k(logits, grad=False), -1), kiln.from_dlpack(labels)))
    assert acc.dtype == "float32"
    assert acc.item() == pytest.approx((logits.argmax(-1) == labels).float().mean().item(), abs=1e-7)
    # Exact past 2^24 (and 2^53), int32 beside int64, tensors and Python numbers, operators too.
    big = torch.tensor([2**40, 2**40 + 1, 2**62 + 1, -3, 2], dtype=torch.int64)
    kb, k32 = kiln.from_dlpack(big), kiln.from_dlpack(torch.tensor([1, 2, 3, -3, 2], dtype=torch.int32))
    for name in ["gt", "ge", "lt", "le", "eq", "ne"]:
        f = getattr(torch, name)
        for other, tother in [(2**40 + 1, 2**40 + 1), (2**62 + 1, 2**62 + 1), (2, 2), (2.5, 2.5), (-1e30, -1e30)]:
            got = np.from_dlpack(getattr(kiln, name)(kb, other))
            np.testing.assert_array_equal(got, f(big.double(), tother).float().numpy()
                                          if isinstance(other, float) else f(big, tother).float().numpy())
        np.testing.assert_array_equal(np.from_dlpack(getattr(kiln, name)(k32, kb)),
                                      f(torch.tensor([1, 2, 3, -3, 2]), big).float().numpy())
    assert np.from_dlpack(kb > 2**40).tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert np.from_dlpack(2**40 < kb).tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    # A float past 2^24 is a double, not rounded to float32; NumPy's and torch's integer scalars are
    # integers; an int past int64 is past every element (torch raises there).
    exact = kiln.from_dlpack(torch.tensor([16777217, 2147483647, 2**40 + 1]))
    assert np.from_dlpack(kiln.eq(exact, 16777217.0)).tolist() == [1.0, 0.0, 0.0]
    assert np.from_dlpack(kiln.eq(exact, float(2**40 + 1))).tolist() == [0.0, 0.0, 1.0]
    assert np.from_dlpack(exact > np.int64(16777216)).tolist() == [1.0, 1.0, 1.0]
    assert np.from_dlpack(exact >= torch.tensor(2**40 + 1)).tolist() == [0.0, 0.0, 1.0]
    assert np.from_dlpack(kiln.gt(exact, -2**63 - 1)).tolist() == [1.0, 1.0, 1.0]
    assert np.from_dlpack(kiln.eq(exact, 2**64)).tolist() == [0.0, 0.0, 0.0]
    i32 = kiln.from_dlpack(torch.tensor([2147483647, -5], dtype=torch.int32))
    assert np.from_dlpack(i32 < 2147483647.0).tolist() == [0.0, 1.0]
    assert np.from_dlpack(i32 < 2**31).tolist() == [1.0, 1.0]
    with pytest.raises(kiln.Error, match="eq: a is int64.* and b is float32.*integers compare with integers"):
        kiln.eq(kb, k(torch.zeros(5), grad=False))
    with pytest.raises(TypeError, match="kiln does not convert arrays implicitly"):
        kiln.gt(kb, np.array([[5]]))
    with pytest.raises(TypeError, match="kiln does not convert arrays implicitly"):
        kb > torch.tensor([5])  # a one-element tensor has an __index__, but is no number
    # A float tensor meets an int rounded once to float32, as torch's (not through a double first).
    ft = torch.tensor([2.0**60 + 2**37, 2.0**60])
    v = 2**60 + 2**36 + 1
    np.testing.assert_array_equal(np.from_dlpack(kiln.eq(kiln.from_dlpack(ft), v)), (ft == v).float().numpy())


def test_maximum_minimum_clamp_and_comparisons_match_torch():
    a = torch.tensor([[1.0, -2.0, 3.0, 0.5], [0.0, 4.0, -1.0, 2.0]])
    b = torch.tensor([0.5, -2.0, 5.0, float("nan")])
    for name in ["maximum", "minimum"]:
        ka, kb = k(a), k(b)
        ta, tb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = getattr(kiln, name)(ka, kb)
        ref = getattr(torch, name)(ta, tb)
        np.testing.assert_array_equal(np.from_dlpack(y), ref.detach().numpy())  # NaN where b is NaN, as torch
        w = torch.randn(2, 4)
        kiln.sum(kiln.mul(kiln.maximum(y, k(torch.full((4,), -100.0), grad=False)), k(w, grad=False))).backward()
        (torch.maximum(ref, torch.full((4,), -100.0)) * w).sum().backward()
        close(ka.grad, ta.grad, 1e-6)  # half to each on the tie at column 1, as torch
        close(kb.grad, tb.grad, 1e-6)
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5, float("nan")])
    kx, tx = k(x), x.clone().requires_grad_(True)
    y = kiln.clamp(kx, min=-1.0, max=1.0)
    ref = torch.clamp(tx, min=-1.0, max=1.0)
    np.testing.assert_array_equal(np.from_dlpack(y), ref.detach().numpy())
    kiln.sum(y).backward()
    ref.sum().backward()
    np.testing.assert_array_equal(np.from_dlpack(kx.grad), tx.grad.numpy())  # 1 at the bounds, as torch
    assert kiln.clamp(k(x, grad=False), max=0.0).tolist()[:5] == [-3.0, -1.0, 0.0, 0.0, 0.0]
    with pytest.raises(kiln.Error, match="lo 1 is above hi -1"):
        kiln.clamp(kx, 1.0, -1.0)
    ka, kb = k(a, grad=False), k(b, grad=False)
    for name, op in [("gt", "__gt__"), ("ge", "__ge__"), ("lt", "__lt__"), ("le", "__le__"), ("eq", None),
                     ("ne", None)]:
        want = getattr(torch, name)(a, b).float().numpy()
        np.testing.assert_array_equal(np.from_dlpack(getattr(kiln, name)(ka, kb)), want)
        if op:
            np.testing.assert_array_equal(np.from_dlpack(getattr(ka, op)(kb)), want)
        want_s = getattr(torch, name)(a, 0.5).float().numpy()
        np.testing.assert_array_equal(np.from_dlpack(getattr(kiln, name)(ka, 0.5)), want_s)
    assert (0.5 < ka).tolist() == (a > 0.5).float().tolist()
    assert not (ka > kb).requires_grad and kiln.mean(kiln.eq(ka, ka)).item() == 1.0
    # == stays Python's identity, so `in` never raises (nor finds another wrapper of the same tensor).
    m = kiln.Linear("fc", 3, 2)
    assert m.parameters()["fc/weight"] not in list(m.parameters().values()) and len({ka, kb}) == 2
    # A number meets a bfloat16 tensor rounded to bfloat16, as torch's: bf16's 0.1 equals 0.1.
    hb = torch.tensor([0.1, 0.5]).to(torch.bfloat16)
    kh = kiln.from_dlpack(hb.clone()).clone()
    assert kiln.eq(kh, 0.1).tolist() == [1.0, 0.0] and (kh > 0.1).tolist() == [0.0, 1.0]
    kh.requires_grad = True
    kiln.sum(kiln.clamp(kh, max=0.1), 0).backward()
    assert kh.grad.tolist() == [1.0, 0.0]  # the bound the value was clamped to passes its gradient
    with pytest.raises(kiln.Error, match="give min, max or both"):
        kiln.clamp(ka)
    x3 = torch.randn(2, 3, 4)
    for name in ["amax", "amin"]:
        for dim in [None, 1, [0, 2]]:
            kx, tx = k(x3), x3.clone().requires_grad_(True)
            y = getattr(kiln, name)(kx, dim, keepdim=True)
            ref = getattr(torch, name)(tx, () if dim is None else dim, keepdim=True)
            kiln.sum(y).backward()
            ref.sum().backward()
            close(y, ref, 0)
            close(kx.grad, tx.grad, 0)
    tie = torch.tensor([[1.0, 3.0, 3.0], [float("nan"), 0.0, 2.0]])
    kt, tt = k(tie), tie.clone().requires_grad_(True)
    kiln.sum(kiln.amax(kt, 1)).backward()
    torch.amax(tt, 1).sum().backward()
    np.testing.assert_array_equal(np.from_dlpack(kiln.amax(kt, 1).detach()), torch.amax(tie, 1).numpy())
    np.testing.assert_array_equal(np.from_dlpack(kt.grad), tt.grad.numpy())  # halves at the tie, NaN where NaN won


def same(kt, want):
    """kiln's tensor equals `want` (a torch tensor) element for element, NaN for NaN and -0 for -0."""
    got, want = np.from_dlpack(kt), want.detach().numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_pow_matches_torch_bit_for_bit_at_special_values_with_gradients():
    # Zeros of both signs, infinities, NaN, a denormal and negative bases: a number exponent takes
    # torch's exact forms for 2, 3, 0.5, -0.5, -1, -2 ((-0) ** 0.5 is -0, (-inf) ** 0.5 NaN) and
    # otherwise powf at these bases (the CPU's double power takes only positive finite ones, 1.7 and
    # 0.6 here, and agrees with torch at them); a tensor exponent and a number base take powf
    # everywhere ((-0) ** 0.5 is +0).
    x = torch.tensor([-0.0, 0.0, -float("inf"), float("inf"), -2.0, 2.0, float("nan"), 1e-45, -8.0, 1.7, 0.6])
    for p in [2, 3, 0.5, -0.5, -1, -2, 0, 1, 1.5, 0.25]:
        same(k(x, grad=False) ** p, x ** p)
        same(k(x, grad=False) ** k(torch.full_like(x, p), grad=False), torch.pow(x, torch.full_like(x, p)))
    for base in [2.0, 0.0, -0.0, 0.5]:
        same(base ** k(x, grad=False), base ** x)
    same(k(x, grad=False) ** k(x, grad=False), torch.pow(x, x))
    # Gradients where torch's formulas have their zeros: a ** 0 and 0 ** a, a base of 0 with
    # exponents 0 and 2 (the exponent's gradient there is 0, not NaN), and a negative base.
    a = torch.tensor([-1.5, -1.0, 0.0, 0.0, 0.5, 2.0])
    e = torch.tensor([0.0, 2.0, 0.0, 2.0, -1.0, 0.5])
    for p in [0, 0.5, 2, 3, -1, 1.5]:
        ka, ta = k(a), a.clone().requires_grad_(True)
        (ka ** p).backward(kiln.ones([6]))
        (ta ** p).backward(torch.ones(6))
        same(ka.grad, ta.grad)
    for base in [0.0, -0.0, 2.0, 0.5]:
        ka, ta = k(a), a.clone().requires_grad_(True)
        kiln.sum(base ** ka).backward()
        (base ** ta).sum().backward()
        same(ka.grad, ta.grad)
    # An upstream gradient of inf, NaN and negatives: torch zeroes the base's gradient after the
    # product (0 where b is 0, even for inf) and the exponent's factor before it (inf * 0 is NaN).
    up = torch.tensor([float("inf"), float("nan"), -3.0, -1.0, 2.0, -2.0])
    ka, ke, ta, te = k(a), k(e), a.clone().requires_grad_(True), e.clone().requires_grad_(True)
    kiln.pow(ka, ke).backward(k(up, grad=False))
    torch.pow(ta, te).backward(up)
    same(ka.grad, ta.grad)
    same(ke.grad, te.grad)
    # Broadcast exponent: its gradient is summed over the rows, as torch's.
    b, f = torch.rand(3, 4) + 0.5, torch.randn(4)
    kb, kf, tb, tf = k(b), k(f), b.clone().requires_grad_(True), f.clone().requires_grad_(True)
    y = kiln.pow(kb, kf)
    kiln.sum(y).backward()
    torch.pow(tb, tf).sum().backward()
    close(y, torch.pow(b, f), 1e-6)
    close(kb.grad, tb.grad, 1e-5)
    close(kf.grad, tf.grad, 1e-5)
    assert kiln.pow(2.0, k(f, grad=False)).shape == (4,) and kiln.pow(kb, 2).requires_grad


def test_where_and_masked_fill_match_torch_with_gradients():
    torch.manual_seed(11)
    # A causal mask of -inf under a softmax, as attention uses it: values and the scores' gradient.
    s, causal, w = torch.randn(2, 4, 4), torch.triu(torch.ones(4, 4), 1), torch.randn(2, 4, 4)
    ks, ts = k(s), s.clone().requires_grad_(True)
    y = kiln.softmax(kiln.masked_fill(ks, k(causal, grad=False), float("-inf")))
    ref = torch.softmax(ts.masked_fill(causal.bool(), float("-inf")), -1)
    kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
    (ref * w).sum().backward()
    close(y, ref, 1e-6)
    close(ks.grad, ts.grad, 1e-6)
    # where with a mask of floats (NaN counts as true), integers, and a number on either side.
    cond = torch.tensor([1.0, 0.0, float("nan"), -2.0])
    a, b = torch.randn(3, 4), torch.randn(4)
    ka, kb, ta, tb = k(a), k(b), a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    y = kiln.where(k(cond, grad=False), ka, kb)
    ref = torch.where(cond != 0, ta, tb)
    kiln.sum(kiln.mul(y, y)).backward()
    (ref * ref).sum().backward()
    np.testing.assert_array_equal(np.from_dlpack(y), ref.detach().numpy())
    np.testing.assert_array_equal(np.from_dlpack(ka.grad), ta.grad.numpy())
    close(kb.grad, tb.grad, 1e-6)  # summed over the broadcast rows
    ints = kiln.from_dlpack(torch.tensor([0, 3, 0, 1]))
    assert kiln.where(ints, 1.5, k(b, grad=False)).tolist() == torch.where(torch.tensor([0, 3, 0, 1]) != 0, 1.5,
                                                                            b).tolist()
    assert kiln.where(ints, k(b, grad=False), -1.0).tolist() == torch.where(torch.tensor([0, 3, 0, 1]) != 0, b,
                                                                             -1.0).tolist()
    with pytest.raises(kiln.Error, match=r"masked_fill: mask \[2, 4\] does not broadcast to x's shape \[3, 4\]"):
        kiln.masked_fill(ka, k(torch.ones(2, 4), grad=False), 0.0)
    with pytest.raises(kiln.Error, match="do not broadcast"):
        kiln.where(k(torch.ones(2), grad=False), ka, kb)
    assert kiln.where(ints, 1.0, 0.0).tolist() == [0.0, 1.0, 0.0, 1.0]  # both numbers: float32 of cond's shape


def test_permute_matches_torch_with_gradients_in_any_dtype():
    torch.manual_seed(12)
    for shape, dims in [((2, 3, 4, 5), [0, 2, 1, 3]), ((2, 3, 4), [2, 0, 1]), ((3, 4), [1, 0]), ((2, 1, 3), [-1, 0, 1]),
                        ((2, 3, 2, 2, 3), [4, 3, 2, 1, 0]), ((0, 3), [1, 0])]:
        x, w = torch.randn(*shape), torch.randn(*[shape[d] for d in dims])
        kx, tx = k(x), x.clone().requires_grad_(True)
        y = kiln.permute(kx, dims)
        ref = tx.permute(dims)
        kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
        (ref * w).sum().backward()
        np.testing.assert_array_equal(np.from_dlpack(y), ref.detach().numpy())
        np.testing.assert_array_equal(np.from_dlpack(kx.grad), tx.grad.numpy())
    for t in (torch.arange(24).reshape(2, 3, 4), torch.randint(0, 255, (3, 4, 5), dtype=torch.uint8),
              torch.randn(2, 3, 4).to(torch.bfloat16)):
        y = kiln.permute(kiln.from_dlpack(t.clone()), [1, 2, 0])
        assert torch.equal(torch.from_dlpack(y), t.permute(1, 2, 0))
    kx = k(torch.zeros(2, 3, 4), grad=False)
    with pytest.raises(kiln.Error, match="name each of its 3 once"):
        kiln.permute(kx, [0, 1])
    with pytest.raises(kiln.Error, match="dimension 0 is named twice"):
        kiln.permute(kx, [0, -3, 1])
    with pytest.raises(kiln.Error, match="dimension 3 is out of range"):
        kiln.permute(kx, [0, 1, 3])


def test_var_and_std_match_torch_with_gradients():
    torch.manual_seed(14)
    x, w = torch.randn(2, 5, 3) * 1.5 + 0.7, torch.randn(2, 5, 3)
    for name in ["var", "std"]:
        for dim, correction in [(None, 1), (1, 1), ([0, 2], 0), (-1, 1)]:
            kx, tx = k(x), x.clone().requires_grad_(True)
            y = getattr(kiln, name)(kx, dim, correction=correction, keepdim=True)
            ref = getattr(torch, name)(tx, list(range(3)) if dim is None else dim, unbiased=bool(correction),
                                       keepdim=True)
            kiln.sum(kiln.mul(y, k(w.sum(list(range(3)) if dim is None else dim, keepdim=True), grad=False))).backward()
            (ref * w.sum(list(range(3)) if dim is None else dim, keepdim=True)).sum().backward()
            close(y, ref, 1e-5)
            close(kx.grad, tx.grad, 1e-4)
    close(k(x, grad=False).var(1), x.var(1), 1e-5)
    close(k(x, grad=False).std(), x.std(), 1e-5)
    assert np.isnan(kiln.var(kiln.ones([1]), 0).item())  # one element, unbiased: 0 / 0, as torch's
    # bf16 in float32 (a mean rounded to bf16 first made this 0.2002), correction past the count
    # (inf, not negative), an empty reduction (NaN), std's gradient at zero deviation (0, not NaN).
    hb = torch.tensor([100, 100, 100.5, 100.5, 100.5, 100.5]).to(torch.bfloat16)
    assert torch.from_dlpack(kiln.var(kiln.from_dlpack(hb.clone()))).item() == torch.var(hb).item()
    r = torch.randn(4, 5)
    assert kiln.var(k(r, grad=False), 1, correction=6).tolist() == [float("inf")] * 4
    assert all(np.isnan(kiln.var(kiln.zeros([3, 0]), 1).tolist()))
    flat = kiln.full([2, 3], 2.0)
    flat.requires_grad = True
    kiln.sum(kiln.std(flat, 1)).backward()
    assert flat.grad.tolist() == [[0.0] * 3] * 2
    with pytest.raises(kiln.Error, match="var: correction -1 is negative"):
        kiln.var(k(x, grad=False), 0, correction=-1)


def test_ops_along_a_chosen_dimension_and_tensor_methods_match_torch():
    torch.manual_seed(13)
    x, w = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    for name in ["softmax", "log_softmax"]:
        for dim in [0, 1, -1]:
            kx, tx = k(x), x.clone().requires_grad_(True)
            y = getattr(kiln, name)(kx, dim)
            ref = getattr(torch, name)(tx, dim)
            kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
            (ref * w).sum().backward()
            close(y, ref, 1e-6)
            close(kx.grad, tx.grad, 1e-5)
    for dim in [0, 1, 2, -1]:
        assert torch.equal(torch.from_dlpack(kiln.argmax(k(x, grad=False), dim)), torch.argmax(x, dim))
    # torch's rule at NaN (its first position, in either search) and ties (the first), keepdim, bf16.
    v = torch.tensor([[1.0, 3.0, 3.0, -2.0, -2.0], [0.0, float("nan"), 5.0, float("nan"), -9.0]])
    for name in ("argmax", "argmin"):
        for t in (v, v.bfloat16()):
            got = getattr(kiln, name)(kiln.from_dlpack(t.clone()), 1, keepdim=True)
            assert got.tolist() == getattr(torch, name)(t, 1, keepdim=True).tolist(), (name, t.dtype)
        assert getattr(k(v, grad=False), name)(0).tolist() == getattr(torch, name)(v, 0).tolist(), name
        assert getattr(kiln, name)(kiln.full([], 3.0), -1, keepdim=True).tolist() == 0  # 0-d, as torch's
    # cumsum: torch's CPU sums (float32 in double, bf16 in float), so equal bits; gradient the
    # reverse running sum.
    c = torch.randn(3, 50, 4)
    for dim in (0, 1, -1):
        kc, tc = k(c), c.clone().requires_grad_(True)
        y, want = kc.cumsum(dim), torch.cumsum(tc, dim)
        up = torch.randn(want.shape)
        kiln.sum(kiln.mul(y, k(up, grad=False))).backward()
        (want * up).sum().backward()
        close(y, want, 0)
        close(kc.grad, tc.grad, 0)
        cb = c.bfloat16()
        assert torch.equal(torch.from_dlpack(kiln.cumsum(kiln.from_dlpack(cb.clone()), dim)), torch.cumsum(cb, dim))
    kx, tx = k(x), x.clone().requires_grad_(True)
    y = kiln.transpose(kx, 0, 2)
    kiln.sum(kiln.mul(y, k(w.transpose(0, 2), grad=False))).backward()
    (tx.transpose(0, 2) * w.transpose(0, 2)).sum().backward()
    close(y, tx.transpose(0, 2), 0)
    close(kx.grad, tx.grad, 0)
    close(kiln.transpose(kx), x.transpose(-2, -1), 0)  # the last two by default
    # Methods: each is the module function of the same name.
    t, kt = x, k(x, grad=False)
    pairs = [(kt.sum(), t.sum()), (kt.sum(-1), t.sum(-1)),
             (kt.mean([0, 2], keepdim=True), t.mean([0, 2], keepdim=True)), (kt.amax(1), t.amax(1)), (kt.amin(), t.amin()), (kt.permute(2, 0, 1), t.permute(2, 0, 1)),
             (kt.permute([1, 0, 2]), t.permute([1, 0, 2])), (kt.transpose(0, 1), t.transpose(0, 1)),
             (kt.softmax(1), t.softmax(1)), (kt.log_softmax(-1), t.log_softmax(-1)), (kt.exp(), t.exp()),
             (kt.abs().sqrt(), t.abs().sqrt()), (kt.tanh(), t.tanh()), (kt.sigmoid(), t.sigmoid()),
             (kt.relu(), t.relu()), (kt.abs().log(), t.abs().log()), (kt.pow(2), t.pow(2)),
             (kt.abs().pow(k(w.abs(), grad=False)), t.abs().pow(w.abs())), (kt.clamp(max=0.5), t.clamp(max=0.5)),
             (kt.masked_fill(kt > 0, -1.0), t.masked_fill(t > 0, -1.0)),
             (kt.matmul(k(w.transpose(1, 2), grad=False)), t.matmul(w.transpose(1, 2)))]
    for got, want in pairs:
        close(got, want, 1e-5)
    assert torch.equal(torch.from_dlpack(kt.argmax(1)), t.argmax(1))
    with pytest.raises(kiln.Error, match="clamp: give min, max or both"):
        kt.clamp()
    with pytest.raises(TypeError, match="takes the new order as ints"):
        kt.permute(0.5, 1, 2)
    assert torch.equal(torch.from_dlpack(kt.argmax()), t.argmax())  # torch's: the flattened position
    with pytest.raises(kiln.Error, match=r"argmax: x must be float32, bfloat16, int32 or int64, got uint8\[2, 3\]"):
        kiln.argmax(kiln.from_dlpack(torch.arange(6, dtype=torch.uint8).reshape(2, 3)), 0)  # named as given
    deep = torch.randn([1] * 10 + [2, 3])
    close(kiln.transpose(k(deep, grad=False)), deep.transpose(-2, -1), 0)  # the last two at any rank
    # A bf16 power's gradient starts from the exponent as given, as torch's (2.01 - 1, not bf16(2.01) - 1).
    b = torch.tensor([0.5, 3.0, 8.0]).to(torch.bfloat16)
    kb, tb = kiln.from_dlpack(b.clone()).clone(), b.clone().requires_grad_(True)
    kb.requires_grad = True
    kiln.sum(kb ** 2.01).backward()
    (tb ** 2.01).sum().backward()
    np.testing.assert_allclose(torch.from_dlpack(kb.grad).float().numpy(), tb.grad.float().numpy(), rtol=1 / 128)
    # An exponent that rounds onto an exact form in bf16 (1.001 to 1) keeps the number's gradient.
    z = torch.tensor([0.0, 100.0, -2.0]).to(torch.bfloat16)
    kz, tz = kiln.from_dlpack(z.clone()).clone(), z.clone().requires_grad_(True)
    kz.requires_grad = True
    kiln.sum(kz ** 1.001).backward()
    (tz ** 1.001).sum().backward()
    np.testing.assert_array_equal(torch.from_dlpack(kz.grad).float().numpy(), tz.grad.float().numpy())


def test_narrow_concat_and_stack_match_torch_with_gradients():
    torch.manual_seed(7)
    xs = [torch.randn(2, 3, 4), torch.randn(2, 1, 4), torch.randn(2, 2, 4)]
    ks, ts = [k(x) for x in xs], [x.clone().requires_grad_(True) for x in xs]
    w = torch.randn(2, 6, 4)
    y, ref = kiln.concat(ks, 1), torch.cat(ts, 1)
    assert y.shape == (2, 6, 4)
    kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
    (ref * w).sum().backward()
    close(y, ref, 0)
    for kt, t in zip(ks, ts):
        close(kt.grad, t.grad, 0)
    kx, tx = k(xs[0]), xs[0].clone().requires_grad_(True)
    n, nref = kiln.narrow(kx, -1, 1, 2), tx.narrow(-1, 1, 2)
    kiln.sum(kiln.mul(n, n)).backward()
    (nref * nref).sum().backward()
    close(n, nref, 0)
    close(kx.grad, tx.grad, 0)
    s = kiln.stack([k(xs[0], grad=False), k(xs[0], grad=False)], dim=-1)
    close(s, torch.stack([xs[0], xs[0]], -1), 0)
    labels = kiln.concat([kiln.arange(3), kiln.arange(2)])
    assert labels.dtype == "int64" and labels.tolist() == [0, 1, 2, 0, 1]
    with pytest.raises(kiln.Error, match=r"tensor 1 is .*\[2, 1, 4\].*every extent but dimension 2's must match"):
        kiln.concat(ks[:2], 2)
    with pytest.raises(kiln.Error, match=r"narrow: \[2, 2 \+ 3\) is outside dimension 1"):
        kiln.narrow(kx, 1, 2, 3)


def test_embedding_matches_torch_with_gradients():
    torch.manual_seed(9)
    w = torch.randn(10, 4)
    idx = torch.tensor([[1, 3, 3], [9, 0, 1]])
    kw, tw = k(w), w.clone().requires_grad_(True)
    y, ref = kiln.embedding(kw, k(idx, grad=False)), torch.nn.functional.embedding(idx, tw)
    up = torch.randn(2, 3, 4)
    kiln.sum(kiln.mul(y, k(up, grad=False))).backward()
    (ref * up).sum().backward()
    close(y, ref, 0)
    close(kw.grad, tw.grad, 1e-6)  # rows 1 and 3 twice: summed
    table = kiln.Embedding("tok", 10, 4, seed=1)
    assert repr(table) == "kiln.Embedding('tok', 10 x 4)" and table(k(idx.int(), grad=False)).shape == (2, 3, 4)
    with pytest.raises(kiln.Error, match=r"index 10 at position 1 .* outside the table's 10 rows"):
        kiln.embedding(kw, k(torch.tensor([2, 10]), grad=False))
    with pytest.raises(kiln.Error, match="indices must be int32 or int64"):
        kiln.embedding(kw, k(torch.tensor([2.0]), grad=False))
    with pytest.raises(kiln.Error, match=r"look swapped; kiln takes \(weight, indices\)"):
        kiln.embedding(k(idx, grad=False), kw)


def test_gather_matches_torch_with_gradients_and_picks_label_log_probabilities():
    torch.manual_seed(10)
    logits = torch.randn(6, 5)
    labels = torch.tensor([4, 0, 2, 2, 1, 4])
    kl, tl = k(logits), logits.clone().requires_grad_(True)
    picked = kiln.gather(kiln.log_softmax(kl, 1), 1, k(labels.reshape(-1, 1), grad=False))
    ref = torch.gather(torch.log_softmax(tl, 1), 1, labels.reshape(-1, 1))
    assert picked.shape == (6, 1)
    kiln.mean(picked).backward()
    ref.mean().backward()
    close(picked, ref, 1e-6)
    close(kl.grad, tl.grad, 1e-6)
    x = torch.randn(3, 4, 5)
    idx = torch.tensor([[[3, 0, 3], [1, 1, 0]], [[2, 3, 3], [0, 0, 1]]])  # [2, 2, 3]: x's corner read
    kx, tx = k(x), x.clone().requires_grad_(True)
    y, want = kx.gather(1, k(idx.int(), grad=False)), tx.gather(1, idx)
    up = torch.randn(want.shape)
    kiln.sum(kiln.mul(y, k(up, grad=False))).backward()
    (want * up).sum().backward()
    close(y, want, 0)
    close(kx.grad, tx.grad, 1e-6)  # repeated indices: summed
    with pytest.raises(kiln.Error, match=r"gather: index 5 at position 1 .* outside dimension 1 .* \[0, 4\)"):
        kiln.gather(kx, 1, k(torch.tensor([[[0, 5]]]), grad=False))
    with pytest.raises(kiln.Error, match=r"indices must have x's rank \(3\)"):
        kiln.gather(kx, 1, k(torch.tensor([0]), grad=False))
    with pytest.raises(kiln.Error, match=r"longer than x .* along dimension 2"):
        kiln.gather(kx, 1, k(torch.zeros(1, 1, 6, dtype=torch.int64), grad=False))
    empty = kiln.gather(kx, 0, k(torch.zeros(5, 0, 4, dtype=torch.int64), grad=False))
    assert empty.shape == (5, 0, 4) and empty.dtype == "float32"
    kiln.sum(empty).backward()  # a zero gradient, as torch's
    close(kx.grad, tx.grad, 1e-6)


def test_index_add_and_scatter_add_match_torch_with_gradients():
    torch.manual_seed(11)
    rows, seg = torch.randn(7, 3), torch.tensor([2, 0, 2, 1, 2, 0, 2])  # a sum per segment
    base = torch.zeros(4, 3)
    kr, tr = k(rows), rows.clone().requires_grad_(True)
    kb, tb = k(base), base.clone().requires_grad_(True)
    y, want = kiln.index_add(kb, 0, k(seg, grad=False), kr), torch.index_add(tb, 0, seg, tr)
    up = torch.randn(4, 3)
    kiln.sum(kiln.mul(y, k(up, grad=False))).backward()
    (want * up).sum().backward()
    close(y, want, 1e-6)
    close(kr.grad, tr.grad, 0)  # each row's gradient is its segment's: gathered back
    close(kb.grad, tb.grad, 0)
    x, src = torch.randn(2, 3), torch.randn(2, 5)
    idx = torch.tensor([[2, 2, 0], [1, 0, 1]])  # src's corner [2, 3] read
    # torch 1.13's backward fails on a longer src (a gradient of the corner's shape): its corner stands in.
    kx, tx, ks, ts = k(x), x.clone().requires_grad_(True), k(src), src[:, :3].clone().requires_grad_(True)
    y2, want2 = kx.scatter_add(1, k(idx.int(), grad=False), ks), tx.scatter_add(1, idx, ts)
    kiln.sum(kiln.mul(y2, y2)).backward()
    (want2 * want2).sum().backward()
    close(y2, want2, 1e-6)
    close(ks.grad, torch.cat([ts.grad, torch.zeros(2, 2)], 1), 1e-6)  # nothing reaches the columns not read
    close(kx.grad, tx.grad, 1e-6)
    assert kb.index_add(0, k(seg, grad=False), kr).shape == (4, 3)
    with pytest.raises(kiln.Error, match=r"index_add: src .* must have x's shape \[4, 3\] but 7"):
        kiln.index_add(kb, 0, k(seg, grad=False), k(torch.randn(6, 3)))
    with pytest.raises(kiln.Error, match=r"index_add: index 4 at position 0 .* outside dimension 0"):
        kiln.index_add(kb, 0, k(torch.tensor([4]), grad=False), k(torch.randn(1, 3)))
    # Indices shorter than x in a dimension but dim: torch adds into x's corner, the rest kept.
    kx, tx, ks, ts = k(x), x.clone().requires_grad_(True), k(src[:1, :3]), src[:1, :3].clone().requires_grad_(True)
    y3, want3 = kx.scatter_add(1, k(idx[:1], grad=False), ks), tx.scatter_add(1, idx[:1], ts)
    kiln.sum(kiln.mul(y3, y3)).backward()
    (want3 * want3).sum().backward()
    close(y3, want3, 1e-6)
    close(kx.grad, tx.grad, 1e-6)
    close(ks.grad, ts.grad, 1e-6)
    with pytest.raises(kiln.Error, match=r"scatter_add: indices int64\[3, 3\] on cpu are longer than x .* dimension 0"):
        kiln.scatter_add(kx, 1, k(torch.zeros(3, 3, dtype=torch.long), grad=False), k(torch.randn(3, 5)))
    with pytest.raises(kiln.Error, match="scatter_add: x must be float32 or bfloat16"):
        kiln.scatter_add(k(idx, grad=False), 1, k(idx, grad=False), k(idx, grad=False))


def test_layer_norm_matches_torch_with_gradients():
    torch.manual_seed(8)
    x, g, b = torch.randn(5, 7) * 2 + 1, torch.randn(7), torch.randn(7)
    kx, kg, kb = k(x), k(g), k(b)
    tx, tg, tb = (t.clone().requires_grad_(True) for t in (x, g, b))
    y = kiln.layer_norm(kx, kg, kb)
    ref = torch.nn.functional.layer_norm(tx, (7,), tg, tb)
    w = torch.randn(5, 7)
    kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
    (ref * w).sum().backward()
    close(y, ref, 1e-5)
    for kt, t in [(kx, tx), (kg, tg), (kb, tb)]:
        close(kt.grad, t.grad, 1e-4)
    kx, tx = k(x), x.clone().requires_grad_(True)  # no weight or bias
    y, ref = kiln.layer_norm(kx), torch.nn.functional.layer_norm(tx, (7,))
    kiln.sum(kiln.mul(y, k(w, grad=False))).backward()
    (ref * w).sum().backward()
    close(y, ref, 1e-5)
    close(kx.grad, tx.grad, 1e-4)
    # Only beta trains (a frozen input and gamma): its gradient alone, as torch's.
    kb2, tb2 = k(b), b.clone().requires_grad_(True)
    kiln.sum(kiln.layer_norm(k(x, grad=False), k(g, grad=False), kb2)).backward()
    torch.nn.functional.layer_norm(x, (7,), g, tb2).sum().backward()
    close(kb2.grad, tb2.grad, 1e-6)
    layer = kiln.LayerNorm("ln", 7)
    assert repr(layer) == "kiln.LayerNorm('ln', 7)"
    assert sorted(layer.parameters()) == ["ln/bias", "ln/weight"]
    close(layer(k(x, grad=False)), torch.nn.LayerNorm(7)(x), 1e-5)
    with pytest.raises(kiln.Error, match="does not end in its 7 features"):
        layer(k(torch.randn(7, 5), grad=False))


def test_bce_with_logits_keeps_the_small_loss_of_confident_logits():
    # softplus(x) - x y cancelled: at x = 16, y = 1 the loss rounded to 0, 0.5% off over these four.
    x = np.array([10.0, 16.0, 17.0, 30.0, -12.0, -20.0], np.float32)
    y = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0], np.float32)
    got = kiln.binary_cross_entropy_with_logits(kiln.from_dlpack(x.copy()), kiln.from_dlpack(y.copy())).item()
    xd = x.astype(np.float64)
    want = np.mean(np.where(y == 1, np.log1p(np.exp(-xd)), np.log1p(np.exp(xd))))
    assert got == pytest.approx(want, rel=1e-5)


def test_bce_with_logits_at_zero_logits_has_torchs_gradient():
    # A zero-initialised head starts at logits exactly 0: the gradient is sigmoid(0) - y there.
    x = k(torch.zeros(4))
    y = torch.tensor([0.0, 1.0, 0.25, 1.0])
    kiln.binary_cross_entropy_with_logits(x, k(y)).backward()
    assert x.grad.tolist() == pytest.approx(((0.5 - y) / 4).tolist(), abs=1e-7)


def test_a_scalar_on_the_left_is_one_op_with_torchs_gradient():
    torch.manual_seed(2)
    x = torch.rand(4, 3) + 0.5
    kx = k(x)
    y, z = 1.5 - kx, 3.0 / kx
    assert "grad_fn=rsub_scalar" in repr(y) and "grad_fn=rdiv_scalar" in repr(z)
    kiln.sum(y * z).backward()
    x.requires_grad_(True)
    ((1.5 - x) * (3.0 / x)).sum().backward()
    close(kx.grad, x.grad, 1e-5)
    assert (1.0 / kiln.zeros([1])).tolist() == [float("inf")]


def test_sgd_step_matches_torch():
    lin = kiln.Linear("fc", 4, 2, seed=3)
    params = lin.parameters()
    w = torch.from_dlpack(params["fc/weight"]).clone().requires_grad_(True)
    b = torch.from_dlpack(params["fc/bias"]).clone().requires_grad_(True)
    x = torch.randn(5, 4)
    opt = kiln.SGD(lin, lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([w, b], lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        kiln.mean(lin(kiln.from_dlpack(x))).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.linear(x, w, b).mean().backward()
        topt.step()
    close(params["fc/weight"], w, 1e-6)
    close(params["fc/bias"], b, 1e-6)
    assert opt.steps == 2


def test_scalar_on_the_left_negation_and_numpy_protocol():
    a = kiln.from_dlpack(np.array([1.0, 2.0, 3.0], np.float32))
    a.requires_grad = True
    y = kiln.sum(2.0 - a) + kiln.sum(-a)
    y.backward()
    assert (2.0 - a).tolist() == [1.0, 0.0, -1.0] and (-a).tolist() == [-1.0, -2.0, -3.0]
    assert a.grad.tolist() == [-2.0, -2.0, -2.0]
    view = np.asarray(a.detach())
    assert view.dtype == np.float32 and view.ctypes.data == a.data_ptr  # the memory, not an object array
    assert np.asarray(a.detach(), dtype=np.float64).dtype == np.float64


def test_errors_name_fixes_in_python_words():
    a, b = kiln.ones([2]), kiln.ones([2], dtype="bfloat16")
    with pytest.raises(kiln.Error, match=r'astype\("float32"\) or \.astype\("bfloat16"\)') as e:
        kiln.add(a, b)
    assert "DType::" not in str(e.value)
    x = kiln.ones([2])
    x.requires_grad = True
    y = kiln.sum(kiln.mul(x, x))
    y.backward()
    with pytest.raises(kiln.Error, match=r"backward\(retain_graph=True\)"):
        y.backward()


def test_one_value_tensors_act_as_numbers_and_larger_ones_refuse_truth():
    loss = kiln.sum(kiln.full([2], 1.0))
    assert bool(loss) and float(loss) == 2.0 and int(loss) == 2
    assert not bool(kiln.full([], 0.0))
    with pytest.raises(ValueError, match="ambiguous"):
        bool(kiln.ones([2]))
    with pytest.raises(TypeError, match="0-d"):
        len(kiln.full([], 3.0))
    assert len(kiln.ones([4, 2])) == 4
    for number in (float, int):  # ValueError, as torch and NumPy raise
        with pytest.raises(ValueError, match=r"only a one-element tensor converts.*tolist\(\)"):
            number(kiln.ones([3]))


def test_numpy_on_the_left_keeps_autograd():
    a = kiln.from_dlpack(np.array([1.0, 2.0], np.float32))
    a.requires_grad = True
    y = np.float32(3) * a  # NumPy defers to the Tensor: still a kiln.Tensor on the graph
    assert isinstance(y, kiln.Tensor) and "grad_fn=mul_scalar" in repr(y)
    kiln.sum(y - np.float32(1)).backward()
    assert a.grad.tolist() == [3.0, 3.0]
    with pytest.raises(TypeError):
        np.ones(2, np.float32) + a  # not silently an ndarray without a graph


def test_errors_offer_conversions_that_exist():
    with pytest.raises(kiln.Error, match=r'convert weight w with \.astype\("float32"\)$'):
        kiln.conv2d(kiln.zeros([1, 4, 4, 3]), kiln.zeros([2, 3, 3, 3], dtype="int32"))
    with pytest.raises(kiln.Error, match=r'convert it with \.astype\("float32"\)'):
        kiln.softmax(kiln.zeros([2], dtype="bfloat16"))
    assert kiln.sum(kiln.ones([2], dtype="bfloat16")).item() == 2.0  # every element of a bf16 tensor: a bf16 scalar


def test_reprs_say_what_a_thing_is():
    t = kiln.full([2], 2.0)
    t.requires_grad = True
    assert repr(t) == "kiln.Tensor(float32[2] on cpu, requires_grad)"
    assert repr(t * 2.0).endswith("requires_grad, grad_fn=mul_scalar)")
    assert str(t).endswith("[2., 2.]")  # floats print as floats
    model = kiln.build_model("vgg11", num_classes=3, image_size=32)
    assert repr(model) == "kiln.Sequential('vgg11', 29 layers)"
    assert repr(model[:3]) == "kiln.Sequential('vgg11', 3 layers)"
    assert repr(model[0]) == "kiln.Conv2d('conv1_1', 3 -> 64, kernel 3, stride 1, padding 1)"
    assert repr(model["fc8"]) == "kiln.Linear('fc8', 4096 -> 3)"
    assert repr(model["pool1"]) == "kiln.MaxPool2d('pool1', kernel 2, stride 2)"
    sgd = kiln.SGD(model, lr=0.01, momentum=0.9)
    assert repr(sgd) == "kiln.SGD(lr=0.01, momentum=0.9, weight_decay=0.0, nesterov=False, 22 parameters)"
    assert sgd.lr == 0.01  # the float32 shown as the decimal it was given
    sgd.lr = 0.003
    assert sgd.lr == 0.003
    assert repr(kiln.Adam(model)).startswith("kiln.Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08")


def test_train_eval_and_to_return_the_module():
    model = kiln.build_model("vgg11", num_classes=3, image_size=32).eval()
    assert isinstance(model, kiln.Sequential) and not model.training
    assert model.train() is model and model.training
    assert model.to("cpu") is model


def test_version_and_where_tensors_come_from():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    with open(os.path.join(root, "pyproject.toml")) as f:
        assert f'version = "{kiln.__version__}"' in f.read()
    with pytest.raises(TypeError, match="kiln.from_dlpack"):
        kiln.Tensor([1.0, 2.0])
