"""The views and cuts torch code leans on (reshape/view with ints one by one, expand, squeeze, unsqueeze,
flip, split, chunk, unbind), logsumexp, and max/min along a dimension, against torch's: values, shapes,
gradients and the errors."""
import math

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def pair(shape, seed=0, dtype="float32"):
    """A kiln tensor and a torch tensor of the same values, both tracking gradients (float32 only)."""
    a = np.asarray(np.random.RandomState(seed).randn(*shape), dtype=np.float32)  # () too
    k = kiln.from_dlpack(a.copy()).astype(dtype)
    t = torch.from_numpy(a.copy())
    if dtype == "float32":
        k.requires_grad = True
        t.requires_grad_(True)
    return k, t


def same(k, t):
    """k equals torch tensor t in shape and values."""
    t = t.detach()
    assert k.shape == tuple(t.shape), (k.shape, tuple(t.shape))
    np.testing.assert_array_equal(np.asarray(k.tolist(), dtype=np.float64).reshape(t.shape), t.double().numpy())


def backward_both(k_out, t_out, seed=1):
    """Backpropagates one random gradient through both results."""
    g = np.random.RandomState(seed).randn(*t_out.shape).astype(np.float32)
    k_out.backward(kiln.from_dlpack(g.copy()))
    t_out.backward(torch.from_numpy(g))


def test_views_take_ints_one_by_one_or_as_a_list_as_torch():
    k, t = pair((2, 3, 4))
    for kv, tv in [(k.reshape(4, 6), t.reshape(4, 6)), (k.reshape([4, -1]), t.reshape([4, -1])),
                   (k.view(-1), t.view(-1)), (k.view((2, 12)), t.view((2, 12))),
                   (k.reshape(2, 1, 12).squeeze(), t.reshape(2, 1, 12).squeeze()),
                   (k.reshape(1, 24, 1).squeeze(0), t.reshape(1, 24, 1).squeeze(0)),
                   (k.squeeze(1), t.squeeze(1)), (kiln.squeeze(k.reshape(1, 24, 1), -1), t.reshape(1, 24, 1).squeeze(-1)),
                   (k.unsqueeze(0), t.unsqueeze(0)), (k.unsqueeze(-1), t.unsqueeze(-1)),
                   (kiln.unsqueeze(k, 2), t.unsqueeze(2)), (k[:, :1].expand(5, -1, 3, 4), t[:, :1].expand(5, -1, 3, 4)),
                   (k[0, :, :1].expand(3, 2), t[0, :, :1].expand(3, 2))]:
        same(kv, tv)
    assert k.reshape(shape=[4, 6]).shape == (4, 6) and k.view(size=(24,)).shape == (24,)
    assert k.permute(dims=(2, 0, 1)).shape == (4, 2, 3)
    assert k.flip(dims=[0]).shape == (2, 3, 4) and k[:1].expand(size=(3, 3, 4)).shape == (3, 3, 4)
    assert k.reshape(np.int64(24)).shape == (24,) and kiln.full([1], 2.0).reshape(()).shape == ()
    scalar = kiln.full([], 2.0)
    assert scalar.squeeze().shape == () and scalar.squeeze(0).shape == () and scalar.unsqueeze(0).shape == (1,)
    y = k.view(6, 4).unsqueeze(1).expand(6, 3, 4)  # gradients through the views and the broadcast copy
    ref = t.view(6, 4).unsqueeze(1).expand(6, 3, 4)
    backward_both(y, ref)
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64"])
def test_split_chunk_and_unbind_cut_as_torch(dtype):
    a = np.arange(5 * 6, dtype=np.float32).reshape(5, 6) - 9.0
    k, t = kiln.from_dlpack(a.copy()).astype(dtype), torch.from_numpy(a)
    cuts = [
        (k.split(2), t.split(2)), (kiln.split(k, [1, 0, 5], 1), torch.split(t, [1, 0, 5], 1)),
        (k.split(4, dim=-1), t.split(4, dim=-1)), (k.chunk(3), t.chunk(3)), (kiln.chunk(k, 4, 1), torch.chunk(t, 4, 1)),
        (k.chunk(9, 0), t.chunk(9, 0)), (k.unbind(1), t.unbind(1)), (kiln.unbind(k), torch.unbind(t)),
        (kiln.zeros([0, 3]).split(2), torch.zeros(0, 3).split(2)),
        (kiln.zeros([0, 3]).chunk(3), torch.zeros(0, 3).chunk(3)),
    ]
    for got, want in cuts:
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            same(g, w)


def test_unused_pieces_give_zeros_and_a_retained_graph_runs_twice():
    k, t = pair((5, 3))
    ku, tu = k.unbind(0), t.unbind(0)
    y, ref = (ku[1] * 2.0 + ku[4]).sum(), (tu[1] * 2.0 + tu[4]).sum()
    y.backward(retain_graph=True)
    y.backward()
    ref.backward(retain_graph=True)
    ref.backward()
    np.testing.assert_array_equal(np.from_dlpack(k.grad), t.grad.numpy())
    assert np.from_dlpack(k.grad)[[0, 2, 3]].tolist() == [[0.0] * 3] * 3


def test_a_backward_per_piece_runs_without_retain_graph_as_torch():
    k, t = pair((3, 4))
    for kp, tp in zip(k.unbind(0), t.unbind(0)):
        (kp * kp).sum().backward()
        (tp * tp).sum().backward()
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)


def test_a_backward_per_piece_of_an_ops_result_runs_as_torch_when_the_op_saved_nothing():
    # The pieces of x + 2 lead back through add's node, which keeps nothing: each piece's
    # backward runs it again without retain_graph, as torch's; exp keeps its result, so a second
    # piece's backward through it is refused in both.
    k, t = pair((3, 4))
    for kp, tp in zip((k + 2.0).unbind(0), (t + 2.0).unbind(0)):
        (kp * kp).sum().backward()
        (tp * tp).sum().backward()
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)
    kp, tp = k.exp().unbind(0), t.exp().unbind(0)
    kp[0].sum().backward()
    tp[0].sum().backward()
    with pytest.raises(kiln.Error, match="already freed"):
        kp[1].sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        tp[1].sum().backward()


def test_a_failed_backward_leaves_nothing_in_the_pieces_next_gradient():
    x = kiln.ones([2, 2]).requires_grad_()
    a, b = x.unbind(0)
    w = kiln.ones([2]).requires_grad_()
    c = w * w
    c.sum().backward()  # frees c's graph
    with pytest.raises(kiln.Error, match="already freed"):
        ((b * c).sum() + (a * 5.0).sum()).backward()  # a's piece may run before the failure
    b.sum().backward()
    assert x.grad.tolist() == [[0.0, 0.0], [1.0, 1.0]]  # torch's; no 5s left from the failed pass


def test_pieces_carry_gradients_back_to_x():
    k, t = pair((4, 6))
    kp, tp = k.split([1, 3, 2], 1), t.split([1, 3, 2], 1)
    ku, tu = k.unbind(0), t.unbind(0)
    kc, tc = k.chunk(2, 0), t.chunk(2, 0)
    y = kp[1].sum() * 2.0 + (kp[2] * kp[2]).sum() + ku[3].sum() * 3.0 + kc[0].sum()
    ref = tp[1].sum() * 2.0 + (tp[2] * tp[2]).sum() + tu[3].sum() * 3.0 + tc[0].sum()
    y.backward()
    ref.backward()
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
def test_flip_reverses_as_torch(dtype):
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 5.0
    k, t = kiln.from_dlpack(a.copy()).astype(dtype), torch.from_numpy(a)
    for kd, td in [((0,), (0,)), ((2, 0), (2, 0)), ((-1,), (-1,)), ((), ()), ((0, 1, 2), (0, 1, 2))]:
        same(kiln.flip(k, list(kd)), torch.flip(t, td))
        same(k.flip(*kd) if kd else k.flip([]), t.flip(td))  # x.flip() with nothing is refused, as torch
    same(k.flip([1]), t.flip([1]))
    same(kiln.flip(k, 1), torch.flip(t, [1]))
    flipped = kiln.flip(k, [])
    torch.from_dlpack(flipped).zero_()  # a copy even where nothing turns, as torch's
    assert k.tolist() == a.tolist()
    same(kiln.flip(kiln.full([], 3.0), [0]), torch.flip(torch.tensor(3.0), [0]))


def test_flip_gradient_is_flipped_back():
    k, t = pair((3, 5))
    y, ref = k.flip(0, 1) * k, t.flip([0, 1]) * t
    backward_both(y, ref)
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dim, keepdim", [(1, False), (-1, True), ([0, 2], False), ((0, 1, 2), True), (0, False)])
def test_logsumexp_matches_torch_with_gradient(dim, keepdim):
    k, t = pair((3, 4, 5), seed=4)
    k2, t2 = k * 30.0, t * 30.0  # exp would overflow float32 unshifted
    y, ref = kiln.logsumexp(k2, dim, keepdim=keepdim), torch.logsumexp(t2, dim, keepdim=keepdim)
    assert y.shape == tuple(ref.shape)
    np.testing.assert_allclose(np.from_dlpack(y), ref.detach().numpy(), rtol=1e-6)
    backward_both(y, ref)
    np.testing.assert_allclose(np.from_dlpack(k.grad), t.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.from_dlpack(k.logsumexp(1)), torch.logsumexp(t, 1).detach().numpy(), rtol=1e-6)


def test_logsumexp_of_infinities_nan_and_empty_rows_is_torchs():
    inf, nan = math.inf, math.nan
    rows = np.array([[1.0, -inf, 2.0], [-inf, -inf, -inf], [inf, 1.0, 0.0], [nan, 1.0, 2.0], [inf, -inf, 0.0]],
                    np.float32)
    got = kiln.logsumexp(kiln.from_dlpack(rows.copy()), 1).numpy()
    np.testing.assert_allclose(got, torch.logsumexp(torch.from_numpy(rows), 1).numpy(), rtol=1e-7)
    assert got[1] == -inf and got[2] == inf and math.isnan(got[3])
    empty = kiln.logsumexp(kiln.zeros([2, 0]), 1)
    assert empty.tolist() == [-inf, -inf]
    assert kiln.logsumexp(kiln.full([], 2.5), 0).item() == 2.5


def test_logsumexp_of_bfloat16_is_computed_in_float32_and_rounded_once():
    a = np.random.RandomState(7).randn(4, 300).astype(np.float32) * 4
    t = torch.from_numpy(a).bfloat16()
    k = kiln.from_dlpack(a.copy()).astype("bfloat16")
    y = kiln.logsumexp(k, 1)
    assert y.dtype == "bfloat16"
    want = torch.logsumexp(t.float(), 1).bfloat16().float().numpy()
    np.testing.assert_array_equal(np.asarray(y.astype("float32")), want)


@pytest.mark.parametrize("op", ["max", "min"])
@pytest.mark.parametrize("dim, keepdim", [(1, False), (0, True), (-1, False)])
def test_max_and_min_along_a_dimension_match_torch(op, dim, keepdim):
    a = np.floor(np.random.RandomState(2).uniform(0, 4, (5, 6, 3))).astype(np.float32)  # ties: the first wins
    a[1, 2, 0] = np.nan  # and a NaN wins its row, as torch's
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    got = getattr(k, op)(dim, keepdim=keepdim)
    want = getattr(torch, op)(t, dim, keepdim=keepdim)
    values, indices = got
    np.testing.assert_array_equal(np.asarray(values), want.values.numpy())
    np.testing.assert_array_equal(np.asarray(indices), want.indices.numpy())
    assert indices.dtype == "int64" and got[0] is not None and got[-1].shape == tuple(want.indices.shape)
    same(getattr(kiln, op)(k, dim, keepdim).values, want.values)


def test_max_gradient_goes_to_the_first_position_not_shared_as_amax():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], np.float32)
    k, t = kiln.from_dlpack(a.copy()), torch.from_numpy(a.copy()).requires_grad_(True)
    k.requires_grad = True
    (k.max(1).values * kiln.from_dlpack(np.array([2.0, 5.0], np.float32))).sum().backward()
    (t.max(1).values * torch.tensor([2.0, 5.0])).sum().backward()
    np.testing.assert_array_equal(np.from_dlpack(k.grad), t.grad.numpy())
    assert np.from_dlpack(k.grad).tolist() == [[0.0, 2.0, 0.0], [5.0, 0.0, 0.0]]


def test_max_and_min_of_everything_or_of_two_tensors_as_torch():
    k, t = pair((3, 4), seed=9)
    same(k.max(), t.max())
    same(kiln.min(k), torch.min(t))
    other_k, other_t = pair((3, 4), seed=10)
    same(k.max(other_k), torch.max(t, other_t))
    same(kiln.min(k, other_k), torch.min(t, other_t))
    scalar = kiln.max(kiln.full([], 4.0), 0)
    assert scalar.values.item() == 4.0 and scalar.indices.item() == 0 and scalar.indices.shape == ()


def test_values_indices_is_a_pair_as_torchs_result():
    s = kiln.sort(kiln.from_dlpack(np.array([3.0, 1.0, 2.0], np.float32)))
    assert repr(s) == "ValuesIndices(values=float32[3] on cpu, indices=int64[3] on cpu)"
    assert len(s) == 2 and len(s[1:]) == 1 and s[1:][0].tolist() == [1, 2, 0]  # sliced as a tuple
    values, indices = s[:]
    assert values.tolist() == [1.0, 2.0, 3.0] and indices.tolist() == [1, 2, 0]
    with pytest.raises(IndexError, match="two tensors"):
        s[-3]
    with pytest.raises(TypeError):
        s["values"]


@pytest.mark.parametrize("call, error, words", [
    (lambda x: x.squeeze(2), kiln.Error, "squeeze: dimension 2 is out of range for float32[2, 1]"),
    (lambda x: x.unsqueeze(3), kiln.Error, "unsqueeze: dimension 3 is out of range"),
    (lambda x: x.flip(0, -2), kiln.Error, "flip: dimension 0 is named twice"),
    (lambda x: x.split(0), kiln.Error, "split: pieces of 0 entries cannot cut dimension 0"),
    (lambda x: x.split([1, 2]), kiln.Error, "split: the sizes given sum to 3, not to 2"),
    (lambda x: x.split([3, -1]), kiln.Error, "split: a piece of -1 entries"),
    (lambda x: x.chunk(0), kiln.Error, "chunk: 0 chunks; give 1 or more"),
    (lambda x: kiln.full([], 1.0).unbind(), kiln.Error, "unbind: needs a tensor of rank >= 1"),
    (lambda x: x.expand(-1, 2, 1), ValueError, "-1 (keep the extent) at position 0 of 3"),
    (lambda x: x.view(1.5), TypeError, "Tensor.view takes the new shape as ints"),
    (lambda x: x.flip("a"), TypeError, "Tensor.flip takes the dimensions as ints"),
    (lambda x: x.astype("int64").logsumexp(0), kiln.Error, "logsumexp: input x must be float32 or bfloat16"),
    (lambda x: kiln.logsumexp(x, [0, 0]), kiln.Error, "logsumexp: dimension 0 is named twice"),
    (lambda x: x.max(2), kiln.Error, "max: dimension 2 is out of range"),
    (lambda x: kiln.zeros([2, 0]).min(1), kiln.Error, "min: dimension 1 of float32[2, 0] on cpu is empty"),
    (lambda x: x.max(keepdim=True), TypeError, "max(x, keepdim=True) needs a dim"),
    (lambda x: kiln.full([], 1.0).max(1), kiln.Error, "max: dimension 1 is out of range for float32[] on cpu, a 0-d"),
    (lambda x: kiln.full([], 1.0).argmin(2), kiln.Error, "argmin: dimension 2 is out of range for float32[] on cpu"),
    (lambda x: x.astype("uint8").max(0), kiln.Error, "max: x must be float32, bfloat16, int32 or int64"),
    (lambda x: x.reshape(), TypeError, "Tensor.reshape takes the new shape as ints"),
    (lambda x: x.view(True, 2), TypeError, "Tensor.view takes the new shape as ints"),
    (lambda x: x.permute(dims=[1, 0], other=1), TypeError, "Tensor.permute takes the new order"),
    (lambda x: kiln.logsumexp(x, []), kiln.Error, "logsumexp: no dimension given"),
])
def test_cut_and_extreme_errors_say_what_is_wrong(call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                       .replace("]", r"\]").replace(".", r"\.").replace("+", r"\+")):
        call(kiln.zeros([2, 1]))


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), (), (0, 2, 3), (2, 1, 3, 1)])
def test_flatten_is_torchs(shape):
    k, t = pair(shape, dtype="float32")
    rank = len(shape)
    spans = [(0, -1)] + [(s, e) for s in range(-rank, rank) for e in range(-rank, rank)
                         if (s + rank) % rank <= (e + rank) % rank]
    for s, e in spans:
        same(kiln.flatten(k, s, e), torch.flatten(t, s, e))
        same(k.flatten(s, e), t.flatten(s, e))
    same(kiln.flatten(k), torch.flatten(t))
    if rank >= 2:
        same(kiln.flatten(k, 1), torch.nn.Flatten()(t))  # kiln.Flatten's and torch.nn.Flatten's [N, rest]
        y = k.flatten(1) * 2.0
        y.sum().backward()
        assert k.grad.shape == shape and k.grad.tolist() == (torch.ones(shape) * 2).tolist()


def test_flatten_refuses_what_torch_refuses():
    k = kiln.zeros([2, 3, 4])
    with pytest.raises(kiln.Error, match=r"flatten: start_dim 2 comes after end_dim 1 in float32\[2, 3, 4\]"):
        k.flatten(2, 1)
    with pytest.raises(kiln.Error, match="flatten: dimension 3 is out of range"):
        kiln.flatten(k, 3)
    with pytest.raises(kiln.Error, match="flatten: dimension 1 is out of range for float32\\[\\] on cpu, a 0-d"):
        kiln.flatten(kiln.zeros([]), 0, 1)
