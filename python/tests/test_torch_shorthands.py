"""The tensor shorthands torch code is full of (x.size(0), x.dim(), x.T, x.mT, x.t(), x.float(), x.long(),
x.cpu(), x.contiguous(), x.clone().requires_grad_(), x.neg(), zeros_like, dropout's p, ...) against torch's."""
import math

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def test_size_and_dim_read_the_shape_as_torch():
    a = np.zeros((2, 3, 4), np.float32)
    k, t = kiln.from_dlpack(a), torch.from_numpy(a)
    assert k.size() == tuple(t.size()) and isinstance(k.size(), tuple)
    assert [k.size(d) for d in (0, 1, 2, -1, -3)] == [t.size(d) for d in (0, 1, 2, -1, -3)]
    assert k.dim() == t.dim() == 3 and kiln.full([], 1.0).dim() == 0 and kiln.full([], 1.0).size() == ()
    for bad, scalar in [(3, False), (-4, False), (0, True)]:
        with pytest.raises(IndexError, match="out of range"):
            (kiln.full([], 1.0) if scalar else k).size(bad)
    assert k.nbytes == a.nbytes and k.astype("bfloat16").nbytes == 48 and k.is_cuda is False


def test_transposes_match_torch():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    np.testing.assert_array_equal(np.asarray(k.mT), t.mT.numpy())
    np.testing.assert_array_equal(np.asarray(k.T), t.permute(2, 1, 0).numpy())  # torch's .T of rank 3, spelled out
    m = k[0]
    np.testing.assert_array_equal(np.asarray(m.t()), t[0].t().numpy())
    np.testing.assert_array_equal(np.asarray(m.T), t[0].T.numpy())
    v = k[0, 0]
    assert v.t().tolist() == v.tolist() and v.t() is not v  # a view of a vector, as torch's
    v.t().requires_grad_()
    assert not v.requires_grad
    with pytest.raises(ValueError, match="t\\(\\) transposes a matrix: float32\\[2, 3, 4\\]"):
        k.t()
    with pytest.raises(ValueError, match="mT swaps the last two dimensions"):
        v.mT
    x, xt = kiln.from_dlpack(a[0].copy()), torch.from_numpy(a[0].copy()).requires_grad_(True)
    x.requires_grad_()
    g = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    (x.t() * kiln.from_dlpack(g.copy())).sum().backward()
    (xt.t() * torch.from_numpy(g)).sum().backward()
    np.testing.assert_array_equal(np.from_dlpack(x.grad), xt.grad.numpy())


def test_dtype_and_device_shorthands_convert_as_astype_and_to():
    k = kiln.from_dlpack(np.array([1.5, -2.5, 3.0], np.float32))
    assert (k.float().dtype, k.bfloat16().dtype, k.long().dtype, k.int().dtype) == (
        "float32", "bfloat16", "int64", "int32")
    assert k.long().tolist() == torch.tensor([1.5, -2.5, 3.0]).long().tolist() == [1, -2, 3]
    assert k.cpu().device == "cpu" and k.contiguous() is k and k.is_contiguous()
    if kiln.device_count() == 0:
        with pytest.raises(kiln.Error):
            k.cuda()
    else:
        assert k.cuda().device == "cuda:0" and k.cuda().cpu().tolist() == k.tolist()


def test_clone_carries_gradients_as_torchs_and_detach_clone_does_not():
    a = np.random.RandomState(1).randn(3, 4).astype(np.float32)
    k, t = kiln.from_dlpack(a.copy()).requires_grad_(), torch.from_numpy(a.copy()).requires_grad_()
    kc, tc = k.clone(), t.clone()
    assert kc.requires_grad and not kc.is_leaf and kc.data_ptr != k.data_ptr
    (kc * kc).sum().backward()
    (tc * tc).sum().backward()
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)
    kd = k.detach().clone()
    assert not kd.requires_grad and kd.is_leaf and kd.tolist() == k.tolist()
    leaf = kiln.from_dlpack(a.copy()).clone().requires_grad_(True)  # torch's idiom for a fresh leaf
    assert leaf.is_leaf and leaf.requires_grad
    assert kiln.full([], 2.0).clone().shape == () and kiln.zeros([2], dtype="int64").clone().dtype == "int64"


def test_requires_grad_and_neg_as_torch():
    k = kiln.zeros([2])
    assert k.requires_grad_() is k and k.requires_grad
    assert k.requires_grad_(False) is k and not k.requires_grad
    x = kiln.from_dlpack(np.array([1.0, -2.0], np.float32)).requires_grad_()
    y = x.neg()
    assert y.tolist() == [-1.0, 2.0]
    y.sum().backward()
    assert x.grad.tolist() == [-1.0, -1.0]
    with pytest.raises(kiln.Error):
        (x * 2.0).requires_grad_(False)  # only leaves change, as the property
    y2 = x * 2.0
    assert y2.requires_grad_() is y2  # already true: nothing to change, as torch's


def test_like_factories_take_xs_shape_dtype_and_device():
    x = kiln.zeros([2, 3], dtype="bfloat16")
    z, o, f = kiln.zeros_like(x), kiln.ones_like(x), kiln.full_like(x, 2.5)
    assert [(t.shape, t.dtype, t.device) for t in (z, o, f)] == [((2, 3), "bfloat16", "cpu")] * 3
    assert o.tolist() == [[1.0] * 3] * 2 and f.tolist() == [[2.5] * 3] * 2
    i = kiln.full_like(x, fill_value=2**53, dtype="int64")
    assert i.dtype == "int64" and i.tolist()[0][0] == 2**53
    assert kiln.zeros_like(x, dtype="float32", device="cpu").dtype == "float32"
    assert kiln.full_like(x, 2**60 + 1, dtype="int64").tolist()[0][0] == 2**60 + 1  # exact, past a double's 2^53


def test_grad_is_settable_as_torchs():
    x = kiln.ones([2]).requires_grad_()
    (x * x).sum().backward()
    x.grad = None  # torch's way to drop one
    assert x.grad is None
    g = kiln.full([2], 3.0)
    x.grad = g
    assert x.grad.tolist() == [3.0, 3.0] and x.grad.data_ptr == g.data_ptr  # shared, as torch's
    (x * x).sum().backward()  # a backward adds to it
    assert x.grad.tolist() == [5.0, 5.0]
    with pytest.raises(kiln.Error, match="shape and dtype must agree"):
        x.grad = kiln.ones([3])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.0])
def test_dropout_takes_torchs_p_the_probability_of_zeroing(p):
    kiln.manual_seed(3)
    x = kiln.ones([200000]).requires_grad_()
    y = kiln.dropout(x, p)
    a = y.detach().numpy()
    zeroed = float((a == 0).mean())
    assert abs(zeroed - p) < 5 * math.sqrt(p * (1 - p) / a.size) + 1e-9, zeroed  # five standard errors
    assert np.allclose(a[a != 0], 1 / (1 - p))  # the kept ones scaled, as torch's
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a)  # the gradient is the same mask times the scale
    ref = torch.nn.functional.dropout(torch.ones(200000), p).numpy()
    assert abs(float((ref == 0).mean()) - zeroed) < 10 * math.sqrt(p * (1 - p) / a.size) + 1e-9


def test_dropout_defaults_eval_and_the_old_keyword():
    kiln.manual_seed(4)
    x = kiln.ones([100000])
    assert abs(float((kiln.dropout(x).numpy() == 0).mean()) - 0.5) < 0.01  # p=0.5, training, as torch's
    assert kiln.dropout(x, 0.3, False).numpy().tolist() == x.numpy().tolist()  # eval: x itself
    assert kiln.dropout(x, training=False).numpy().tolist() == x.numpy().tolist()
    assert abs(float((kiln.dropout(x, keep_prob=0.8).numpy() == 0).mean()) - 0.2) < 0.01
    assert kiln.dropout(x, 1.0).numpy().tolist() == torch.nn.functional.dropout(torch.ones(100000), 1.0).tolist()
    assert kiln.dropout(x, 1.0, False).numpy().tolist() == x.numpy().tolist()
    with pytest.raises(kiln.Error, match=r"dropout: p must be in \[0, 1\], got -0.1"):
        kiln.dropout(x, -0.1)
    with pytest.raises(kiln.Error, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        kiln.dropout(x, 1.5)
    with pytest.raises(kiln.Error, match=r"dropout: keep_prob must be in \(0, 1\], got 0"):
        kiln.dropout(x, keep_prob=0.0)
    with pytest.raises(kiln.Error, match="give p .* or keep_prob, not both"):
        kiln.dropout(x, 0.2, keep_prob=0.8)


def test_function_forms_take_numbers_and_alpha_as_torch():
    a = np.array([[1.5, -2.0, 3.25]], np.float32)
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    ki, ti = kiln.tensor([4, -7, 9]), torch.tensor([4, -7, 9])
    calls = [("add", (k, 2), {}), ("add", (2, k), {}), ("add", (k, k), {"alpha": 0.5}), ("sub", (k, 1), {"alpha": 3}),
             ("sub", (1.5, k), {}), ("mul", (k, 2.5), {}), ("mul", (3, k), {}), ("div", (k, 4), {}),
             ("div", (2, k), {}), ("add", (ki, ki), {"alpha": 3}), ("sub", (ki, 2**40), {}), ("div", (ki, 2), {}),
             ("mul", (ki, k), {}), ("add", (ki, 0.5), {})]
    for name, args, kw in calls:
        got = getattr(kiln, name)(*args, **kw)
        want = getattr(torch, name)(*[t if x is k else ti if x is ki else x for x in args], **kw)
        assert got.dtype == str(want.dtype).replace("torch.", ""), (name, args, got.dtype, want.dtype)
        np.testing.assert_allclose(np.from_dlpack(got), want.numpy(), rtol=1e-6, err_msg=f"{name}{args}")
    with pytest.raises(TypeError, match="kiln.add: a or b must be a kiln.Tensor"):
        kiln.add(2, 3)
    with pytest.raises(kiln.Error, match="alpha must be an int between integer operands"):
        kiln.add(ki, ki, alpha=0.5)
    with pytest.raises(kiln.Error, match='rounding_mode="floor" is not in kiln'):
        kiln.div(k, 2, rounding_mode="floor")
    with pytest.raises(TypeError, match="kiln does not convert arrays implicitly"):
        kiln.mul(k, a)
    x = kiln.from_dlpack(a.copy()).requires_grad_()
    kiln.sub(x, x * x, alpha=2).sum().backward()
    np.testing.assert_allclose(np.from_dlpack(x.grad), 1 - 4 * a, rtol=1e-6)


def test_to_takes_a_device_a_dtype_both_or_a_tensor_as_torch():
    a = np.array([1.5, -2.5, 3.75], np.float32)
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    ki = kiln.tensor([1, 2])
    pairs = [(k.to("int64"), t.to(torch.int64)), (k.to("cpu", "bfloat16"), t.to("cpu", torch.bfloat16)),
             (k.to(ki), t.to(torch.tensor([1, 2]))), (k.to(dtype="int32"), t.to(dtype=torch.int32)),
             (k.to(device="cpu"), t.to(device="cpu")), (k.to("cpu", non_blocking=True), t.to("cpu", non_blocking=True)),
             (k.to(), t.to())]
    for got, want in pairs:
        assert got.dtype == str(want.dtype).replace("torch.", "") and got.device == "cpu"
        assert got.astype("float32").tolist() == want.float().tolist()
    assert k.to("float32").data_ptr == k.data_ptr  # nothing changes: the same memory
    for args, kwargs, error, message in [
            (("float64",), {}, kiln.Error, "to: 'float64' names no device .* and no dtype"),
            ((3,), {}, TypeError, "Tensor.to takes a device .* or a tensor, not int"),
            ((), {"dtype": "cpu"}, kiln.Error, "unknown dtype 'cpu'"),
            ((), {"device": "int32"}, kiln.Error, "unknown device 'int32'"),
            (("cpu", "float32", "x"), {}, TypeError, "at most a device and a dtype"),
            ((), {"copy": True}, TypeError, "unexpected keyword argument 'copy'")]:
        with pytest.raises(error, match=message):
            k.to(*args, **kwargs)
    x = kiln.from_dlpack(a.copy()).requires_grad_()
    (x.to("bfloat16").to("float32") * 2).sum().backward()  # the conversion passes gradients, as torch's
    assert x.grad.tolist() == [2.0, 2.0, 2.0]


def test_gelu_tanh_softplus_beta_and_var_unbiased_take_torchs_keywords():
    F = torch.nn.functional
    a = (np.random.RandomState(3).randn(2000) * 4).astype(np.float32)
    a[:4] = [0.0, 25.0, -30.0, 0.5]  # 0.5: softplus(beta=2, threshold=1) at its jump
    t = torch.from_numpy(a)
    calls = [(lambda x: kiln.gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
             (lambda x: kiln.gelu(x, "none"), lambda x: F.gelu(x, approximate="none")),
             (lambda x: kiln.softplus(x, 2.0, 1.0), lambda x: F.softplus(x, 2.0, 1.0)),
             (lambda x: kiln.softplus(x, beta=-0.5), lambda x: F.softplus(x, beta=-0.5)),
             (lambda x: kiln.softplus(x, threshold=3), lambda x: F.softplus(x, threshold=3))]
    g = np.random.RandomState(4).randn(2000).astype(np.float32)
    for fk, ft in calls:
        x, xt = kiln.from_dlpack(a.copy()).requires_grad_(), t.clone().requires_grad_()
        y, yt = fk(x), ft(xt)
        # 1 + tanh cancels for x below -3 (an ulp of tanh apart, torch's and kiln's: up to 5e-7 in y)
        np.testing.assert_allclose(np.from_dlpack(y), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        (y * kiln.from_dlpack(g.copy())).sum().backward()
        (yt * torch.from_numpy(g)).sum().backward()
        np.testing.assert_allclose(np.from_dlpack(x.grad), xt.grad.numpy(), rtol=1e-5, atol=5e-6)
    # bfloat16: computed in float32 and rounded once (torch 1.13 rounds between steps, so compare with
    # its float32 result rounded to bfloat16)
    got = kiln.gelu(kiln.from_dlpack(a.copy()).astype("bfloat16"), approximate="tanh").astype("float32")
    want = F.gelu(t.bfloat16().float(), approximate="tanh").bfloat16().float().numpy()
    np.testing.assert_allclose(np.from_dlpack(got), want, rtol=2**-8, atol=1e-6)
    with pytest.raises(kiln.Error, match='gelu: approximate must be "none" or "tanh", got "fast"'):
        kiln.gelu(kiln.from_dlpack(a), approximate="fast")
    with pytest.raises(kiln.Error, match="softplus: beta must be finite and nonzero, got 0"):
        kiln.softplus(kiln.from_dlpack(a), 0.0)
    x = kiln.from_dlpack(a.reshape(40, 50).copy())
    for unbiased in (True, False):
        for fn in ("var", "std"):
            np.testing.assert_allclose(np.from_dlpack(getattr(kiln, fn)(x, 1, unbiased=unbiased)),
                                       getattr(torch, fn)(t.reshape(40, 50), 1, unbiased=unbiased).numpy(), rtol=1e-5)
            np.testing.assert_allclose(getattr(x, fn)(unbiased=unbiased).item(),
                                       getattr(t, fn)(unbiased=unbiased).item(), rtol=1e-5)
            assert getattr(x, fn)(0, unbiased).shape == (50,)  # torch's positional unbiased reads as a correction
    with pytest.raises(kiln.Error, match="var: give correction or unbiased, not both"):
        kiln.var(x, correction=0, unbiased=True)


def test_matmul_takes_vectors_as_torch():
    rs = np.random.RandomState(5)
    for sa, sb in [((5,), (5,)), ((3, 5), (5,)), ((5,), (5, 4)), ((2, 3, 5), (5,)), ((5,), (2, 5, 4))]:
        a, b = rs.randn(*sa).astype(np.float32), rs.randn(*sb).astype(np.float32)
        ka, kb = kiln.from_dlpack(a.copy()).requires_grad_(), kiln.from_dlpack(b.copy()).requires_grad_()
        ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
        y, yt = ka @ kb, ta @ tb
        assert y.shape == tuple(yt.shape)
        np.testing.assert_allclose(np.asarray(y.tolist()), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
        y.sum().backward()
        yt.sum().backward()
        np.testing.assert_allclose(np.from_dlpack(ka.grad), ta.grad.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.from_dlpack(kb.grad), tb.grad.numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(kiln.Error, match=r"matmul: a \[5\] has 5 columns but b \[3\] has 3 rows"):
        kiln.matmul(kiln.zeros(5), kiln.zeros(3))
    with pytest.raises(kiln.Error, match="must each have a dimension or more"):
        kiln.matmul(kiln.zeros([]), kiln.zeros(3))


def _same_values(k, t):
    """kiln tensor k holds torch tensor t's values at its shape (kiln's masks are 0/1 numbers, torch's bools)."""
    got = np.asarray(k.astype("float32").tolist(), np.float32)
    assert got.shape == tuple(t.shape), (got.shape, t.shape)
    np.testing.assert_allclose(got, t.float().numpy(), rtol=1e-6, equal_nan=True)


def test_triangles_masks_and_shorthand_math_match_torch():
    a = np.random.RandomState(6).randn(3, 4, 5).astype(np.float32)
    a[0, 0, :3] = [np.nan, np.inf, -np.inf]
    a[1, 1, 1] = 0
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    for d in (0, 1, -1, 2):
        _same_values(kiln.tril(k, d), torch.tril(t, d))
        _same_values(k.triu(d), t.triu(d))
    _same_values(kiln.tril(kiln.tensor([[1, 2], [3, 4]])), torch.tril(torch.tensor([[1, 2], [3, 4]])))
    causal = kiln.masked_fill(kiln.zeros(3, 3), kiln.eq(kiln.tril(kiln.ones(3, 3)), 0), float("-inf"))
    assert causal.tolist()[0] == [0.0, -math.inf, -math.inf] and causal.tolist()[2] == [0.0, 0.0, 0.0]
    for name in ("square", "reciprocal", "rsqrt", "isnan", "isinf", "isfinite"):
        _same_values(getattr(kiln, name)(k), getattr(torch, name)(t))
        _same_values(getattr(k, name)(), getattr(t, name)())
    ints = torch.tensor([3, -4, 1])
    for name in ("square", "reciprocal", "isnan", "isinf", "isfinite"):
        _same_values(getattr(kiln, name)(kiln.from_dlpack(ints.clone())), getattr(torch, name)(ints))
    assert kiln.tensor([3, -4]).square().dtype == "int64" and kiln.reciprocal(kiln.tensor([2])).dtype == "float32"
    for name in ("all", "any"):
        fk, ft = getattr(kiln, name), getattr(torch, name)
        _same_values(fk(k), ft(t))
        _same_values(getattr(k, name)(1), getattr(t, name)(1))
        _same_values(fk(k, 2, keepdim=True), ft(t, 2, keepdim=True))
        _same_values(fk(kiln.zeros(0)), ft(torch.zeros(0)))  # empty: all is true, any false
        _same_values(fk(kiln.zeros(2, 0), 1), ft(torch.zeros(2, 0), 1))
        _same_values(fk(kiln.tensor([0, 3])), ft(torch.tensor([0, 3])))
    with pytest.raises(kiln.Error, match="tril: x float32\\[3\\] on cpu needs two dimensions or more"):
        kiln.tril(kiln.zeros(3))
    x, xt = kiln.from_dlpack(a[1].copy()).requires_grad_(), torch.from_numpy(a[1].copy()).requires_grad_()
    (kiln.tril(x, 1) * 3).sum().backward()
    (torch.tril(xt, 1) * 3).sum().backward()
    _same_values(x.grad, xt.grad)


def test_repeat_type_as_and_new_factories_match_torch():
    a = np.random.RandomState(7).randn(3, 4, 5).astype(np.float32)
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    _same_values(k.repeat(2, 1, 3), t.repeat(2, 1, 3))
    _same_values(k.repeat([2, 1, 1, 2]), t.repeat(2, 1, 1, 2))
    _same_values(kiln.tensor([1, 2]).repeat(3), torch.tensor([1, 2]).repeat(3))
    with pytest.raises(ValueError, match="Tensor.repeat: 1 repeats for float32\\[3, 4, 5\\]"):
        k.repeat(2)
    x, xt = kiln.from_dlpack(a[1].copy()).requires_grad_(), torch.from_numpy(a[1].copy()).requires_grad_()
    (x.repeat(2, 3) * kiln.arange(15.0).reshape(1, 15)).sum().backward()
    (xt.repeat(2, 3) * torch.arange(15.0).reshape(1, 15)).sum().backward()
    _same_values(x.grad, xt.grad)
    assert k.type_as(kiln.tensor([1])).dtype == "int64" and k.type_as(kiln.tensor([1])).tolist() == t.long().tolist()
    for got, want in [(k.new_zeros(2, 3), t.new_zeros(2, 3)), (k.new_ones([2]), t.new_ones([2])),
                      (k.new_full([2], 7.5), t.new_full([2], 7.5))]:
        assert got.dtype == "float32"
        _same_values(got, want)
    assert kiln.tensor([1]).new_zeros(2).dtype == "int64" and k.new_zeros(2, dtype="int32").dtype == "int32"


def test_review_cases_of_the_torch_forms():
    """What review found in the torch forms: each compared with torch 1.13."""
    F = torch.nn.functional
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    k = kiln.from_dlpack(x.clone())
    for fn in ("var", "std"):  # torch 1.13's var(unbiased): a bool is no dimension
        assert getattr(k, fn)(False).shape == () and getattr(kiln, fn)(k, True).shape == ()
        np.testing.assert_allclose(getattr(k, fn)(False).item(), getattr(x, fn)(False).item(), rtol=1e-6)
    # bfloat16 softplus with a beta computes beta x in float32 (in bfloat16, 3 x 0.334 rounds to 1.0)
    b = torch.tensor([0.333984375, -21.75, -0.6015625]).bfloat16()
    for beta, threshold in [(3.0, 1.0), (3.0, 20.0), (-0.5, 0.3)]:
        got = kiln.softplus(kiln.from_dlpack(b.float().clone()).astype("bfloat16"), beta, threshold)
        want = F.softplus(b, beta, threshold).float().numpy()
        np.testing.assert_allclose(np.from_dlpack(got.astype("float32")), want, rtol=2**-8)
    assert kiln.ones(2, 2).repeat(1, 1, 1, 2, 2).shape == (1, 1, 1, 4, 4)  # 5 repeats: one dimension at a time
    a = torch.arange(24.0).reshape(2, 3, 4)
    _same_values(kiln.from_dlpack(a.clone()).repeat(2, 1, 3, 2), a.repeat(2, 1, 3, 2))
    z = kiln.zeros(3)
    assert z.new_ones(2, requires_grad=True).requires_grad and z.new_zeros(2, 3, device="cpu").shape == (2, 3)
    assert z.new_full([2], 1, dtype="int64").tolist() == [1, 1]
    assert z.new_full((2,), fill_value=3.5).tolist() == [3.5] * 2
    assert kiln.tensor([1]).new_full([1], 2**62 + 1).tolist() == [2**62 + 1]  # exact, as kiln.full
    with pytest.raises(TypeError, match="Tensor.new_ones: dtype must be a dtype's name"):
        z.new_ones(2, dtype=torch.int64)
    with pytest.raises(TypeError, match="new_full: the fill value must be a number, not str"):
        z.new_full([2], "a")
    assert z.type_as(kiln.tensor([1])).dtype == "int64"
    assert kiln.rsqrt(kiln.tensor([4])).tolist() == [0.5]  # an integer x as float32, as torch's
    # bfloat16 rounded once from float32 (at 1.56e-39 the nearer of the two neighbours of 2.5309e19,
    # where torch 1.13's bfloat16 kernel gives the other)
    bf = torch.tensor([1.56e-39, 3.0, 7.0, 1e30]).bfloat16()
    assert kiln.rsqrt(kiln.from_dlpack(bf.float().clone()).astype("bfloat16")).astype("float32").tolist() == \
        torch.rsqrt(bf.float()).bfloat16().float().tolist()
    u8 = kiln.zeros(2, dtype="uint8")
    for name in ("isnan", "isinf", "isfinite", "square", "reciprocal", "rsqrt", "tril"):
        with pytest.raises(kiln.Error, match=f"{name}: x must be float32, bfloat16, int32 or int64, got uint8"):
            getattr(kiln, name)(u8.reshape(1, 2) if name == "tril" else u8)


def test_review_cases_of_the_function_forms_and_promotion():
    f, b = kiln.tensor([0.5]), kiln.tensor([2**30], dtype="int32")
    assert kiln.add(f, b, alpha=4).tolist() == torch.add(torch.tensor([0.5]), torch.tensor([2**30], dtype=torch.int32),
                                                         alpha=4).tolist()  # b * 4 as a float, not wrapped in int32
    assert kiln.sub(0.5, kiln.tensor([2**62]), alpha=4).tolist() == [0.5 - 2.0**64]
    assert kiln.add(kiln.tensor([1, 2]), np.array(2.5), alpha=2.5).tolist() == [7.25, 8.25]  # a 0-d float array
    with pytest.raises(kiln.Error, match="alpha must be an int between integer operands .*got 2.0"):
        kiln.add(kiln.tensor([1]), kiln.tensor([1]), alpha=2.0)
    i32, t32 = kiln.tensor([2**20], dtype="int32"), torch.tensor([2**20], dtype=torch.int32)
    for got, want in [(i32 / 2**40, t32 / 2**40), (2**40 / i32, 2**40 / t32), (kiln.div(i32, 2**70), t32 / 2.0**70)]:
        assert got.dtype == "float32" and got.tolist() == want.tolist()  # division is float32's: any int goes
    ki, ti = kiln.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    for got, want in [(kiln.pow(ki, 2.5), torch.pow(ti, 2.5)), (ki.pow(2.5), ti.pow(2.5)),
                      (kiln.pow(2.5, ki), torch.pow(2.5, ti)), (kiln.pow(kiln.tensor([2.0]), kiln.tensor([3.0])),
                                                                torch.pow(torch.tensor([2.0]), torch.tensor([3.0])))]:
        assert got.dtype == "float32"
        np.testing.assert_allclose(np.from_dlpack(got), want.numpy(), rtol=1e-6)
    with pytest.raises(kiln.Error, match=r"add: b is uint8\[1\] on cpu; kiln's arithmetic takes"):
        kiln.tensor([1.0]) + kiln.tensor([1], dtype="uint8")
    big = 2**54 + 2**30 + 1  # an int rounded once to float32, not through a double first
    assert kiln.add(kiln.zeros(1), big).tolist() == torch.add(torch.zeros(1), big).tolist()
    assert (kiln.zeros(1) + big).tolist() == (torch.zeros(1) + big).tolist()
    assert kiln.zeros(2, device=None).shape == (2,) and kiln.full([2], 3, device=None).dtype == "int64"
    with pytest.raises(kiln.Error, match="full: the fill value is a bool"):
        kiln.full([2], np.bool_(True))
    with pytest.raises(TypeError, match="kiln.zeros: give the shape once"):
        kiln.zeros(size=(2, 3), shape=(4,))
    for args, kwargs in [(("int32", "int64"), {}), (("cpu", "cpu"), {}), (("int32",), {"dtype": "int64"}),
                         ((kiln.zeros(1), "float32"), {})]:
        with pytest.raises(TypeError, match="Tensor.to takes one device and one dtype"):
            kiln.zeros(2).to(*args, **kwargs)


def test_second_review_cases():
    x = kiln.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 11.0]])
    for call in (lambda: kiln.var(x, True, keepdim=True), lambda: x.var(True, True), lambda: kiln.std(x, np.bool_(0))):
        with pytest.raises(TypeError, match="dim must be an int or a list of ints, not bool"):
            call()
    assert x.var(1, True).tolist() == kiln.var(x, 1).tolist() and kiln.var(x, dim=[0, 1]).shape == ()
    with pytest.raises(kiln.Error, match="alpha must be an int between integer operands"):
        kiln.add(kiln.tensor([1, 2]), kiln.tensor([3, 4]), alpha=np.float32(2.5))
    assert kiln.add(kiln.tensor([1, 2]), kiln.tensor([3, 4]), alpha=np.int64(2)).tolist() == [7, 10]
    for alpha in (kiln.tensor([[10.0], [100.0]]), "a", np.array([1.0, 2.0])):
        with pytest.raises(TypeError, match="add: alpha must be a number"):
            kiln.add(kiln.tensor([1.0, 2.0]), kiln.tensor([3.0, 4.0]), alpha=alpha)
    with pytest.raises(TypeError, match="Tensor.to takes one device and one dtype: a tensor gives both"):
        kiln.tensor([1.5]).to("int32", kiln.tensor([1.0]))
    n = 2**60 + 2**36 + 1  # NumPy's and torch's integers rounded once to float32, as Python's
    for big in (np.int64(n), torch.tensor(n)):
        assert (kiln.tensor([0.0]) + big).tolist() == (torch.tensor([0.0]) + big).tolist()
    for args, kwargs in [((), {"size": (2,), "fill_value": 3}), (([2],), {"fill_value": 3}), (([2], 3), {})]:
        assert x.new_full(*args, **kwargs).tolist() == [3.0, 3.0]
    with pytest.raises(TypeError, match="Tensor.new_full takes \\(size, fill_value\\)"):
        x.new_full(fill_value=3)


@pytest.mark.parametrize("p", [2, 1, math.inf, 3, 0.5, "fro"])
def test_norm_matches_torch_with_its_zero_gradient(p):
    a = np.random.RandomState(8).randn(3, 4, 5).astype(np.float32)
    a[1] = 0  # norms of 0: torch's gradient there is 0, not the NaN of sqrt's inf times 0
    g = np.random.RandomState(9)
    for dim, keepdim in ((None, False), (2, False), ((0, 2), True), (-1, True)):
        x, t = kiln.from_dlpack(a.copy()).requires_grad_(), torch.from_numpy(a.copy()).requires_grad_()
        y = x.norm(p) if dim is None else kiln.norm(x, p, dim, keepdim)
        yt = t.norm(p) if dim is None else torch.norm(t, p, dim, keepdim)
        assert y.shape == tuple(yt.shape)
        np.testing.assert_allclose(np.asarray(y.tolist()), yt.detach().numpy(), rtol=1e-5)
        w = np.asarray(g.randn(*yt.shape), np.float32)
        (y * kiln.from_dlpack(w.copy())).sum().backward()
        (yt * torch.from_numpy(w)).sum().backward()
        np.testing.assert_allclose(np.from_dlpack(x.grad), t.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_norm_refusals_and_bfloat16():
    a = np.random.RandomState(10).randn(50).astype(np.float32)
    got = kiln.norm(kiln.from_dlpack(a.copy()).astype("bfloat16")).astype("float32").item()
    assert got == torch.norm(torch.from_numpy(a).bfloat16().float()).bfloat16().float().item()  # rounded once
    for p, message in [(0, "p must be positive or inf, got 0"), (-1, "p must be positive"),
                       ("nuc", 'p must be a number or "fro", got "nuc"')]:
        with pytest.raises(kiln.Error, match=message):
            kiln.norm(kiln.zeros(2), p)
    assert kiln.norm(kiln.zeros(0)).item() == 0.0
    x = kiln.from_dlpack(a.reshape(5, 10).copy())
    assert kiln.norm(x, 2, ()).item() == pytest.approx(torch.norm(torch.from_numpy(a), 2, ()).item(), rel=1e-6)
    assert kiln.norm(x, 2, [], keepdim=True).shape == (1, 1)  # dim=() is every dimension, as torch's
