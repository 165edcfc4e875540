"""The in-place methods (x.add_, x.mul_, x.zero_, x.copy_, x.clamp_, x += y, ...) against torch's, and
what kiln refuses: writes autograd would need, and writes that kiln's copies (where torch views) would
make differ from torch's."""
import gc

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")

rng = np.random.default_rng(7)


def pair(*shape, dtype=np.float32):
    a = rng.standard_normal(shape).astype(dtype)
    return kiln.from_dlpack(a.copy()), torch.from_numpy(a.copy())


def same(k, t):
    np.testing.assert_array_equal(np.asarray(k.astype("float32") if k.dtype == "bfloat16" else k),
                                  (t.float() if t.dtype == torch.bfloat16 else t).numpy())


@pytest.mark.parametrize("name", ["add_", "sub_", "mul_", "div_"])
def test_arithmetic_matches_torch_bit_for_bit_and_returns_self(name):
    for other_shape in [(3, 4), (4,), (1, 4), ()]:
        k, t = pair(3, 4)
        ko, to = pair(*other_shape)
        out = getattr(k, name)(ko)
        getattr(t, name)(to)
        assert out is k
        same(k, t)
    for number in [2, 0.1, -3.5]:
        k, t = pair(5, 7)
        getattr(k, name)(number)
        getattr(t, name)(number)
        same(k, t)


def test_bfloat16_and_integers_as_torch():
    k, t = pair(4, 8)
    kb, tb = k.astype("bfloat16"), t.bfloat16()
    ko, to = pair(8)
    kb.mul_(ko.astype("bfloat16")).add_(ko.astype("bfloat16"))
    tb.mul_(to.bfloat16()).add_(to.bfloat16())
    same(kb, tb)
    ki, ti = kiln.tensor([[1, -2, 3], [4, 5, -6]]), torch.tensor([[1, -2, 3], [4, 5, -6]])
    ki.add_(2**40).mul_(kiln.tensor([1, 2, 3])).sub_(7, alpha=3)
    ti.add_(2**40).mul_(torch.tensor([1, 2, 3])).sub_(7, alpha=3)
    assert ki.tolist() == ti.tolist() and ki.dtype == "int64"
    k32 = kiln.tensor([1, 2], dtype="int32")
    k32 += 5
    assert k32.tolist() == [6, 7] and k32.dtype == "int32"
    kf, tf = pair(2, 3)
    kf.add_(kiln.tensor([1, 2, 3]))  # an integer operand converted to the float's dtype, as torch's
    tf.add_(torch.tensor([1, 2, 3]))
    same(kf, tf)


def test_alpha_scales_the_operand_as_torch():
    k, t = pair(6, 5)
    ko, to = pair(6, 5)
    k.add_(ko, alpha=-0.01)
    t.add_(to, alpha=-0.01)
    np.testing.assert_allclose(np.asarray(k), t.numpy(), rtol=1e-6, atol=1e-7)  # torch fuses alpha * b + a
    with pytest.raises(TypeError, match="alpha must be a number"):
        k.add_(ko, alpha=k)
    ki = kiln.tensor([1, 2])
    with pytest.raises(kiln.Error, match="alpha must be an int between integer operands"):
        ki.add_(kiln.tensor([1, 1]), alpha=0.5)


def test_results_an_integer_or_smaller_tensor_cannot_hold_are_refused_as_torch():
    ki = kiln.tensor([1, 2, 3])
    for write in [lambda: ki.add_(0.5), lambda: ki.div_(2), lambda: ki.mul_(kiln.ones([3]))]:
        with pytest.raises(kiln.Error, match="int64\\[3\\] on cpu"):
            write()
    assert ki.tolist() == [1, 2, 3]
    x = kiln.zeros([3])
    with pytest.raises(kiln.Error, match="the result has shape \\[2, 3\\]"):
        x.add_(kiln.ones([2, 3]))
    with pytest.raises(TypeError, match="other must be a kiln.Tensor or a number, not str"):
        x.add_("1")
    with pytest.raises(TypeError, match="kiln.from_dlpack"):
        x.add_(np.ones(3, np.float32))
    with pytest.raises(kiln.Error, match="rounding_mode"):
        x.div_(2, rounding_mode="floor")
    ki32 = kiln.tensor([1], dtype="int32")
    with pytest.raises(kiln.Error, match="does not fit"):
        ki32.add_(2**40)
    with pytest.raises(kiln.Error, match="uint8\\[2\\] on cpu takes no arithmetic"):
        kiln.zeros([2], dtype="uint8").add_(1)


def test_autograd_refusals_and_no_grad_updates():
    w = kiln.ones([3], requires_grad=True)
    with pytest.raises(kiln.Error, match="is a leaf that requires grad .* torch refuses it too"):
        w.mul_(2)
    y = w * 2
    with pytest.raises(kiln.Error, match="the tensor written, float32\\[3\\] on cpu, requires grad"):
        y.add_(1)
    buf = kiln.zeros([3])
    with pytest.raises(kiln.Error, match="the operand, float32\\[3\\] on cpu, requires grad"):
        buf.add_(y)
    with kiln.no_grad():
        w.mul_(2).add_(w)  # an update: as torch's under no_grad
    assert w.tolist() == [4.0, 4.0, 4.0] and w.requires_grad and w.is_leaf
    w.detach().zero_()  # detach shares the memory, as torch's
    assert w.tolist() == [0.0, 0.0, 0.0]
    w.data.fill_(3)
    assert w.tolist() == [3.0, 3.0, 3.0]


def test_a_write_after_the_forward_refuses_the_backward_that_saved_the_tensor():
    x = kiln.ones([3], requires_grad=True)
    h = kiln.ones([3]) * 2
    loss = (x * h).sum()  # saves h for x's gradient
    h.add_(1)
    with pytest.raises(kiln.Error, match="changed in place"):
        loss.backward()


def test_views_share_writes_as_torch():
    k = kiln.zeros([3, 4])
    t = torch.zeros(3, 4)
    for kv, tv in [(k[1], t[1]), (k[0:2], t[0:2]), (k[2, 1:3], t[2, 1:3]), (k.reshape([12]), t.reshape(12)),
                   (k.detach(), t.detach()), (k[None], t[None])]:
        kv.add_(1)
        tv.add_(1)
        same(k, t)
    for row in k:
        row.mul_(2)
    for row in t:
        row.mul_(2)
    same(k, t)
    assert k[1].data_ptr == k.data_ptr + 16


VIEWS = {  # kiln's copies where torch views, each written both ways
    "x[:, 1]": lambda x: x[:, 1], "x[::2]": lambda x: x[::2], "x[1, ::2]": lambda x: x[1, ::2],
    "x.T": lambda x: x.T, "x.t()": lambda x: x.t(), "x.mT": lambda x: x.mT,
    "x.transpose(0, 1)": lambda x: x.transpose(0, 1),
    "x.permute(1, 0)": lambda x: x.permute(1, 0), "x[:, None, 1:3]": lambda x: x[:, None, 1:3],
    "narrow(x, 1, 1, 2)": lambda x: (kiln.narrow if isinstance(x, kiln.Tensor) else torch.narrow)(x, 1, 1, 2),
    "x.chunk(2, 1)[1]": lambda x: x.chunk(2, 1)[1], "x.split(1, 1)[3]": lambda x: x.split(1, 1)[3],
    "x.unbind(1)[2]": lambda x: x.unbind(1)[2], "x.T[1:3].T": lambda x: x.T[1:3].T, "x.T.T[::2]": lambda x: x.T.T[::2],
}


@pytest.mark.parametrize("view", list(VIEWS), ids=list(VIEWS))
def test_copies_where_torch_views_stay_in_step_as_torch_views(view):
    make = VIEWS[view]
    k, t = kiln.arange(12.0).reshape([3, 4]), torch.arange(12.0).reshape(3, 4)
    kv, tv = make(k), make(t)
    other, t_other = k.mT, t.mT  # a second copy, kept in step too
    kv.mul_(-2).add_(0.5)  # into the copy: reaches x and x's other copies
    tv.mul_(-2).add_(0.5)
    same(k, t)
    same(other, t_other)
    k.add_(100)  # into x: the copy sees it
    t.add_(100)
    same(kv, tv)
    k[1] = 7.0
    t[1] = 7.0
    same(kv, tv)
    kv.zero_()
    tv.zero_()
    same(k, t)
    kc = kv.clone()  # a clone is a tensor of its own
    kc.add_(1)
    same(k, t)


def test_augmented_assignment_through_an_index_as_torch():
    k, t = kiln.arange(12.0).reshape([3, 4]), torch.arange(12.0).reshape(3, 4)
    keys = [(slice(None), 0), (slice(None, None, 2),), ([2, 0],), (Ellipsis, slice(1, 3)), (1, slice(None, None, 2)),
            (0,), (slice(1, 3), 2), (None, 1)]
    for key in keys:
        k[key] += 10
        t[key] += 10
        k[key] *= kiln.full([], -1.0)
        t[key] *= -1
        same(k, t)
    ki = kiln.zeros([2, 3], dtype="int64")
    ki[:, 1] = 2**62 + 3
    ki[0] = kiln.tensor([1, 2, 3], dtype="int32")
    assert ki.tolist() == [[1, 2, 3], [0, 2**62 + 3, 0]]
    with pytest.raises(kiln.Error, match="does not broadcast to t\\[key\\]'s shape \\[2\\]"):
        ki[:, 0] = kiln.ones([3])
    with pytest.raises(TypeError, match="takes a number or a kiln.Tensor, not list"):
        ki[0] = [1, 2, 3]
    w = kiln.ones([2, 2], requires_grad=True)
    with pytest.raises(kiln.Error, match="is a leaf that requires grad"):
        w[0] = 0.0
    with kiln.no_grad():
        w[:, 0] = 0.0
    assert w.tolist() == [[0.0, 1.0], [0.0, 1.0]]


def test_an_expanded_copy_refuses_writes_as_torch_and_a_graph_needs_the_out_of_place_form():
    k = kiln.ones([3, 4])
    e = k.expand(2, 3, 4)
    with pytest.raises(kiln.Error, match="torch refuses writes into an expanded view"):
        e.add_(1)
    with pytest.raises(RuntimeError):
        torch.ones(3, 4).expand(2, 3, 4).add_(1)
    k.add_(1)  # x itself takes writes; its expanded copy follows
    assert e.sum().item() == 2 * 12 * 2
    x = kiln.ones([2, 3], requires_grad=True)
    h = x * 2
    col = h[:, 0]
    with pytest.raises(kiln.Error, match="is part of another tensor"):
        col += 1  # torch writes h through its view, with a gradient; kiln records no in-place op
    row = h[1]
    with pytest.raises(kiln.Error, match="is part of another tensor"):
        row *= 2  # a real view of h's memory: the same
    del col, row
    gc.collect()
    h += 1  # nothing shares h's writes now: h = h + 1
    h.sum().backward()
    assert x.grad.tolist() == [[2.0] * 3] * 2


def test_in_place_operators():
    k, t = pair(3, 2)
    alias = k
    k += 1
    k *= 2
    k -= 0.5
    k /= 3
    t += 1
    t *= 2
    t -= 0.5
    t /= 3
    assert alias is k
    same(k, t)
    x = kiln.ones([2], requires_grad=True)
    with pytest.raises(kiln.Error, match="is a leaf that requires grad"):
        x += 1
    h = x * 3
    before = h
    h += kiln.ones([2])  # torchvision's out += identity: in a graph, kiln's is h = h + identity
    assert h is not before and before.tolist() == [3.0, 3.0]
    h.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_hand_written_sgd_updates_a_module_as_kiln_sgd_does():
    def model():
        kiln.manual_seed(3)
        return kiln.Linear("fc", 4, 2, True, 11)
    x = kiln.from_dlpack(rng.standard_normal((5, 4)).astype(np.float32))
    a, b = model(), model()
    opt = kiln.SGD(b, lr=0.1)
    for m in (a, b):
        (m(x) ** 2).mean().backward()
    with kiln.no_grad():
        for p in a.parameters().values():
            p -= 0.1 * p.grad
    opt.step()
    for (na, pa), (nb, pb) in zip(sorted(a.parameters().items()), sorted(b.parameters().items())):
        np.testing.assert_array_equal(np.asarray(pa), np.asarray(pb))


def test_fill_zero_and_copy_as_torch():
    k, t = kiln.zeros([2, 3], dtype="int64"), torch.zeros(2, 3, dtype=torch.long)
    k.fill_(2**60 + 1)
    t.fill_(2**60 + 1)
    assert k.tolist() == t.tolist()
    k.fill_(-2.7)
    t.fill_(-2.7)
    assert k.tolist() == t.tolist()
    k.fill_(True)
    assert k.tolist() == [[1] * 3] * 2
    for bad in [float("nan"), 1e30]:
        with pytest.raises(kiln.Error, match="does not fit"):
            k.fill_(bad)
    with pytest.raises(kiln.Error, match="does not fit"):
        kiln.zeros([1], dtype="int32").fill_(2**40)
    f = kiln.ones([2, 2]).fill_(kiln.tensor(0.1))
    assert f.tolist() == [[np.float32(0.1).item()] * 2] * 2
    with pytest.raises(kiln.Error, match="must be 0-d"):
        f.fill_(kiln.ones([1]))
    assert f.zero_() is f and f.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    src = kiln.tensor([1.7, -2.5, 3.0])
    dst = kiln.zeros([2, 3], dtype="int32").copy_(src)  # broadcast, converted as astype (truncation)
    assert dst.tolist() == torch.zeros(2, 3, dtype=torch.int32).copy_(torch.tensor([1.7, -2.5, 3.0])).tolist()
    with pytest.raises(kiln.Error, match="does not broadcast"):
        dst.copy_(kiln.ones([4]))
    with pytest.raises(TypeError, match="src must be a kiln.Tensor"):
        dst.copy_(np.ones(3))
    r = kiln.arange(4.0)
    r[1:].copy_(r[:3])  # overlapping: read before written (torch asks for a clone here)
    assert r.tolist() == [0.0, 0.0, 1.0, 2.0]


def test_clamp_unary_and_pow_in_place_as_torch():
    for name in ["neg_", "abs_", "exp_", "tanh_", "sigmoid_", "relu_", "square_", "reciprocal_"]:
        k, t = pair(4, 5)
        assert getattr(k, name)() is k
        getattr(t, name)()
        np.testing.assert_allclose(np.asarray(k), t.numpy(), rtol=3e-7, atol=1e-30, err_msg=name)
    k, t = pair(4, 5)
    k.abs_().sqrt_().log_().rsqrt_()
    t.abs_().sqrt_().log_().rsqrt_()
    np.testing.assert_allclose(np.asarray(k), t.numpy(), rtol=1e-6)
    k, t = pair(4, 5)
    k.clamp_(-0.5, 0.25).pow_(2)
    t.clamp_(-0.5, 0.25).pow_(2)
    same(k, t)
    k.clamp_(max=0.01)
    t.clamp_(max=0.01)
    same(k, t)
    ki = kiln.tensor([1, 2])
    with pytest.raises(kiln.Error, match="the result is float32, which int64\\[2\\] on cpu cannot store"):
        ki.reciprocal_()  # torch's reciprocal_ of an integer tensor refuses too
    ki.neg_().abs_().square_()
    assert ki.tolist() == [1, 4]


def test_addcmul_and_addcdiv_make_a_hand_written_adam_step_as_torch():
    kp, tp = pair(8, 3)
    kg, tg = pair(8, 3)
    km, tm = kiln.zeros([8, 3]), torch.zeros(8, 3)
    kv, tv = kiln.zeros([8, 3]), torch.zeros(8, 3)
    for _ in range(3):
        km.mul_(0.9).add_(kg, alpha=0.1)
        kv.mul_(0.999).addcmul_(kg, kg, value=0.001)
        kp.addcdiv_(km, kv.sqrt().add_(1e-8), value=-0.01)
        tm.mul_(0.9).add_(tg, alpha=0.1)
        tv.mul_(0.999).addcmul_(tg, tg, value=0.001)
        tp.addcdiv_(tm, tv.sqrt().add_(1e-8), value=-0.01)
    np.testing.assert_allclose(np.asarray(kp), tp.numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="tensor1 and tensor2 must be kiln tensors"):
        kp.addcmul_(kg, 2.0)


def test_random_fills_draw_from_the_default_generator():
    kiln.manual_seed(5)
    want = kiln.uniform([1000], -2.0, 3.0)
    kiln.manual_seed(5)
    x = kiln.zeros([10, 100])
    assert x.uniform_(-2, 3) is x
    assert x.reshape([-1]).tolist() == want.tolist()
    b = kiln.zeros([4000], dtype="bfloat16").normal_(1.0, 2.0)
    values = np.asarray(b.float())
    assert abs(values.mean() - 1.0) < 0.2 and abs(values.std() - 2.0) < 0.2
    with pytest.raises(kiln.Error, match="not a float tensor"):
        kiln.zeros([2], dtype="int64").uniform_()
    with pytest.raises(TypeError, match="generator= takes None only"):
        x.normal_(generator=object())


def test_what_torch_copies_of_a_strided_view_is_a_tensor_of_its_own():
    k, t = kiln.arange(6.0).reshape([2, 3]), torch.arange(6.0).reshape(2, 3)
    for make in [lambda x: x.T.contiguous(), lambda x: x[:, 1:].reshape(-1), lambda x: x.T.flatten(),
                 lambda x: x.repeat(1, 1), lambda x: x[:, 1].contiguous()]:
        ky, ty = make(k), make(t)
        ky.add_(100)
        ty.add_(100)
        same(k, t)
        k.mul_(2)
        t.mul_(2)
        same(ky, ty)
    kv, tv = k.T.unsqueeze(0), t.T.unsqueeze(0)  # extents of 1 only: a view in torch, kept in step here
    k.add_(1)
    t.add_(1)
    same(kv, tv)


def test_copies_stay_in_step_after_the_tensor_they_came_from_is_gone():
    k, t = kiln.arange(4.0).reshape([2, 2]), torch.arange(4.0).reshape(2, 2)
    ka, kb, ta, tb = k.T, k.T, t.T, t.T
    kc, tc = ka[:, 1], ta[:, 1]
    del k, t
    gc.collect()
    ka.add_(10)
    ta.add_(10)
    same(kb, tb)
    same(kc, tc)
    x = kiln.ones([3])
    e = kiln.broadcast_to(x, [2, 3])  # torch.broadcast_to is a view too
    x.add_(1)
    assert e.tolist() == [[2.0] * 3] * 2
    with pytest.raises(kiln.Error, match="expanded view"):
        e.add_(1)


def test_the_operators_in_a_graph_refuse_what_x_equals_x_plus_y_would_get_wrong():
    w = kiln.ones([2, 3], requires_grad=True)
    h = w * 2
    v = h.reshape([6])
    with pytest.raises(kiln.Error, match="shares its memory with another tensor"):
        v += 1  # torch's write reaches h through the view
    g = w * 3
    with pytest.raises(kiln.Error, match="the result has shape \\[2, 2, 3\\]"):
        g += kiln.ones([2, 2, 3])
    i = kiln.ones([2, 3], dtype="int64")
    with pytest.raises(kiln.Error, match="the result is float32, which int64\\[2, 3\\] on cpu cannot store"):
        i += w
    b = kiln.full([2], 2.0)
    with pytest.raises(kiln.Error, match="pow_: the operand, float32\\[2, 3\\] on cpu, requires grad"):
        b.pow_(w)


def test_fill_and_assignment_edges_as_torch():
    x = kiln.zeros([3])
    for bad in [1e39, -1e39]:
        with pytest.raises(kiln.Error, match="does not fit float32\\[3\\]"):
            x.fill_(bad)
    with pytest.raises(kiln.Error, match="does not fit uint8"):
        kiln.zeros([2], dtype="uint8").fill_(-0.1)
    m, tm = kiln.zeros([2, 3]), torch.zeros(2, 3)
    m[1] = kiln.ones([1, 1, 3])  # a value's leading extents of 1 are dropped, as torch's
    tm[1] = torch.ones(1, 1, 3)
    same(m, tm)
    b = kiln.zeros([200000], dtype="bfloat16").uniform_(0, 1)
    assert np.asarray(b.float()).max() < 1.0  # [from, to) in bfloat16 too
