"""Tensor indexing (t[i], t[a:b], t[::2], t[..., None], t[[2, 0]], t[:, idx]) against torch's: values, shapes,
gradients and the errors for what kiln does not index by."""
import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")

KEYS = [
    None, 0, -1, (1, 2), (slice(None), 1), (Ellipsis, 2), (None, 0), (0, None, slice(1, 3)), slice(1, None),
    (slice(0, 0),), (Ellipsis,), (1, Ellipsis, None), (-2, -3, -4), (np.int64(1),),
    (slice(-2, None), slice(None, -1)), (slice(5, 1),), (slice(None), slice(None), slice(1, 2)),
    (slice(None, None, 2),), (slice(None), slice(None, None, 2), slice(1, None, 3)), (Ellipsis, slice(3, 0, 2)),
    (slice(1, None, 5), None, slice(-3, None, 2)), (0, slice(None, None, 7)),
]


@pytest.mark.parametrize("key", KEYS, ids=repr)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64"])
def test_basic_indexing_matches_torch(key, dtype):
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) - 7.0  # exact in bfloat16 too
    t = kiln.from_dlpack(a).astype(dtype)
    got, want = t[key], torch.from_numpy(a)[key]
    assert got.shape == tuple(want.shape) and got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got.tolist(), dtype=np.float32).reshape(want.shape), want.numpy())


def test_indexing_gradients_flow_back_as_torch_s():
    torch.manual_seed(3)
    x = torch.randn(4, 5, 6, requires_grad=True)
    kx = kiln.from_dlpack(x.detach().clone())
    kx.requires_grad = True
    y = kx[1:3, None, -1, ..., 2:5] * 3.0 + kx[0, 1:4, 3] + kx[::2, None, 4, ::2] * kx[1:4:2, None, :3, 0]
    ref = x[1:3, None, -1, ..., 2:5] * 3.0 + x[0, 1:4, 3] + x[::2, None, 4, ::2] * x[1:4:2, None, :3, 0]
    assert y.shape == tuple(ref.shape)
    g = torch.randn(ref.shape)
    y.backward(kiln.from_dlpack(g.clone()))
    ref.backward(g)
    np.testing.assert_allclose(np.from_dlpack(kx.grad), x.grad.numpy(), rtol=1e-6, atol=1e-6)


def test_a_block_index_is_a_view_a_strided_one_a_copy_and_rows_iterate():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    t = kiln.from_dlpack(a.copy())
    assert [r.tolist() for r in t] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    column = t[:, 1]
    column.numpy()[:] = 9.0  # a copy (torch's is a view): t keeps its values
    assert t.tolist() == a.tolist()
    row = t[1]
    row.numpy()[:] = -1.0  # one block of t: a view of its memory, as torch's
    assert t.tolist() == [[0.0, 1.0], [-1.0, -1.0], [4.0, 5.0]]
    assert t[2, 1:].data_ptr == t.data_ptr + 20 and t[1:3].data_ptr == t.data_ptr + 8
    assert t[:, None].shape == (3, 1, 2) and t[...].shape == (3, 2)
    with pytest.raises(TypeError, match="0-d tensor"):
        iter(kiln.full([], 1.0))


LISTED = [
    [2, 0, 2], [-1], [], (slice(None), [2, -3, 2]), (Ellipsis, [1]), (1, [0, 2]), (None, [1, 1], 0),
    (1, slice(None), [0, 3]), ([1, 0], slice(1, 3), 2),
]


@pytest.mark.parametrize("key", LISTED, ids=repr)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int64"])
def test_indexing_by_a_list_matches_torch(key, dtype):
    a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)[[1, 0, 1]] - 7.0  # [3, 3, 4]
    t = kiln.from_dlpack(np.ascontiguousarray(a)).astype(dtype)
    got, want = t[key], torch.from_numpy(np.ascontiguousarray(a))[key]
    assert got.shape == tuple(want.shape) and got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got.tolist(), dtype=np.float32).reshape(want.shape), want.numpy())


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_indexing_by_a_tensor_and_index_select_sum_repeats_gradients_as_torch(index_dtype):
    torch.manual_seed(5)
    x = torch.randn(3, 6, 2, requires_grad=True)
    kx = kiln.from_dlpack(x.detach().clone())
    kx.requires_grad = True
    idx = torch.tensor([5, 0, 5, 2, 5], dtype=index_dtype)
    ki = kiln.from_dlpack(idx.clone())
    y = kx[:, ki] * 2.0 + kiln.index_select(kx, 1, ki) + kx.index_select(-1, kiln.from_dlpack(torch.tensor([1])))[:, :5]
    ref = x[:, idx.long()] * 2.0 + torch.index_select(x, 1, idx.long()) + x.index_select(-1, torch.tensor([1]))[:, :5]
    assert y.shape == tuple(ref.shape)
    g = torch.randn(ref.shape)
    y.backward(kiln.from_dlpack(g.clone()))
    ref.backward(g)
    np.testing.assert_allclose(np.from_dlpack(kx.grad), x.grad.numpy(), rtol=1e-6, atol=1e-6)
    assert kx[:, kiln.from_dlpack(torch.tensor(4))].shape == (3, 2)  # a 0-d index drops its dimension, as torch


def test_tensor_indices_count_negatives_from_the_end_and_name_the_indexed_tensor():
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    t, ref = kiln.from_dlpack(a.copy()), torch.from_numpy(a)
    k = lambda *v: kiln.from_dlpack(torch.tensor(v[0] if len(v) == 1 else list(v)))  # noqa: E731
    for key, want in [((k(0, -1),), ref[torch.tensor([0, -1])]), ((1, slice(None), k(-5, 4)), ref[1, :, [-5, 4]]),
                      ((k(-1), [1, 2]), ref[-1, [1, 2]]), ((slice(None), k(2)), ref[:, 2])]:
        np.testing.assert_array_equal(np.asarray(t[key]), want.numpy())
    with pytest.raises(IndexError, match=r"index 7 is out of range for dimension 2 of float32\[3, 4, 5\]"):
        t[1, :, k(7)]  # the user's tensor named, not what the int's narrow left
    with pytest.raises(TypeError, match="int32 or int64 indices, not float32"):
        t[kiln.zeros([2])]
    with pytest.raises(IndexError, match=r"one index \(0-d\) or a list of them \(rank 1\)"):
        t[k([0, 1]).reshape([1, 2])]
    assert t[torch.tensor(2), np.array(1), np.int32(-1)].tolist() == a[2, 1, -1]  # 0-d ints from torch and NumPy
    assert t[np.uint8(1)].shape == (4, 5)  # a NumPy uint8 scalar is an int (a uint8 array or tensor a mask)
    with pytest.raises(kiln.Error, match=r"index_select: index -1 at position 0 .* \[0, 3\)"):
        kiln.index_select(t, 0, k(-1))  # torch.index_select refuses it too


@pytest.mark.parametrize("key, error, words", [
    (3, IndexError, "index 3 is out of range for dimension 0"),
    (2**70, IndexError, "index 1180591620717411303424 is out of range"),
    ((0, -3), IndexError, "index -3 is out of range for dimension 1"),
    ((0, 0, 0), IndexError, "too many indices"),
    ((Ellipsis, Ellipsis), IndexError, "one ellipsis"),
    (slice(None, None, -1), ValueError, "step -1 is negative (dimension 0 of float32"),
    (slice(None, None, 0), ValueError, "slice step cannot be zero"),  # Python's words, as torch's
    (slice(None, None, 1.5), TypeError, "slice indices must be integers"),
    ([0, 3], IndexError, "index 3 is out of range for dimension 0 of float32"),
    ([np.True_], TypeError, "a list index holds ints, not <class 'numpy.bool_'>"),
    (np.True_, TypeError, "not <class 'numpy.bool_'>"),
    ([np.array(1), 0], TypeError, "a list index holds ints, not <class 'numpy.ndarray'>"),
    (torch.tensor([1]), TypeError, "kiln.from_dlpack"),  # torch's __index__ takes any one-element tensor
    (torch.tensor(True), TypeError, "not <class 'torch.Tensor'>"),  # a mask in torch
    (np.array([1]), TypeError, "not <class 'numpy.ndarray'>"),
    ([True, False], TypeError, "a list index holds ints, not <class 'bool'>"),
    ([[0], [1]], TypeError, "a list index holds ints, not <class 'list'>"),
    (([0], [1]), IndexError, "one list or tensor of indices at most"),
    (1.5, TypeError, "not <class 'float'>"),
    (True, TypeError, "not <class 'bool'>"),
])
def test_indexing_errors_say_what_is_wrong(key, error, words):
    t = kiln.zeros([3, 2])
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        t[key]


def test_indexed_assignment_writes_t_and_membership_is_refused_with_what_to_use():
    t = kiln.zeros([3, 2])
    t[0] = 1.0
    t[1:, 1] = kiln.tensor([2.0, 3.0])
    assert t.tolist() == [[1.0, 1.0], [0.0, 2.0], [0.0, 3.0]]  # more in test_in_place.py
    with pytest.raises(TypeError, match="kiln.eq"):  # iterating and comparing by identity would say False
        0.0 in t
    with pytest.raises(TypeError, match="takes a number or a kiln.Tensor, not NoneType"):
        t[None] = None


def test_a_whole_index_is_a_view_with_its_own_autograd_state():
    x = kiln.zeros([3, 2])
    x.requires_grad = True
    for y in (x[...], x[:], x[()]):
        assert y is not x and y.shape == (3, 2)
        with pytest.raises(kiln.Error, match="only leaves"):  # a view made by the index, not x itself
            y.requires_grad = False
        assert x.requires_grad
    (x[...] * 2.0).sum().backward()
    assert x.grad.tolist() == [[2.0] * 2] * 3


def test_indices_changed_after_the_forward_pass_are_caught_before_backward_uses_them():
    x = kiln.from_dlpack(torch.randn(3, 4))
    x.requires_grad = True
    idx = kiln.from_dlpack(torch.tensor([0, 2]))
    y = x[idx]
    np.asarray(idx)[1] = 3  # the same memory: the saved indices now point outside x
    with pytest.raises(kiln.Error, match=r"index_select backward: index 3 at position 1 .* changed after it"):
        kiln.sum(y).backward()
    src = kiln.from_dlpack(torch.randn(2, 4))
    src.requires_grad = True
    seg = kiln.from_dlpack(torch.tensor([1, 1]))
    z = kiln.index_add(kiln.zeros([3, 4]), 0, seg, src)
    np.asarray(seg)[0] = -1
    with pytest.raises(kiln.Error, match=r"index_add backward: index -1 at position 0"):
        kiln.sum(z).backward()
