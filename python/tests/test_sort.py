"""kiln.sort, argsort and topk against torch's (stable sort; ties avoided for topk, whose order of
equal entries torch leaves open), their ValuesIndices result, gradients, and errors."""
import numpy as np
import pytest
import torch

import kiln


def k(t):
    return kiln.from_dlpack(t.clone())


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_and_argsort_match_torch_stable_sort_with_nan_and_ties(dim, descending):
    torch.manual_seed(dim + 3 * descending)
    x = torch.randint(-4, 5, (6, 7, 5)).float()  # many ties
    x[1, 2, 3] = float("nan")
    x[0, 0, 0] = -0.0
    want = torch.sort(x, dim=dim, descending=descending, stable=True)
    got = kiln.sort(k(x), dim, descending)
    np.testing.assert_array_equal(np.asarray(got.indices), want.indices.numpy())
    np.testing.assert_array_equal(np.asarray(got.values), want.values.numpy())
    np.testing.assert_array_equal(np.asarray(kiln.argsort(k(x), dim, descending)), want.indices.numpy())
    np.testing.assert_array_equal(np.asarray(k(x).argsort(dim, descending)), want.indices.numpy())


def test_topk_matches_torch_and_its_gradient_reaches_the_chosen_entries():
    torch.manual_seed(0)
    x = torch.randn(5, 40)
    for kk, dim, largest in ((3, -1, True), (2, 0, False), (40, 1, True)):
        want = torch.topk(x, kk, dim=dim, largest=largest)
        values, indices = kiln.topk(k(x), kk, dim, largest)  # unpacks as torch's
        np.testing.assert_array_equal(np.asarray(values), want.values.numpy())
        np.testing.assert_array_equal(np.asarray(indices), want.indices.numpy())
    xt = x.clone().requires_grad_(True)
    g = torch.randn(5, 3)
    torch.topk(xt, 3).values.backward(g)
    kx = k(x)
    kx.requires_grad = True
    kx.topk(3).values.backward(k(g))
    np.testing.assert_array_equal(np.asarray(kx.grad), xt.grad.numpy())


def test_values_indices_is_a_pair_and_says_what_it_holds():
    s = kiln.sort(kiln.from_dlpack(torch.tensor([3.0, 1.0, 2.0])))
    assert len(s) == 2 and s[0] is not None and s[-1].tolist() == [1, 2, 0]
    assert s.values.tolist() == [1.0, 2.0, 3.0] and s.indices.dtype == "int64"
    assert repr(s) == "ValuesIndices(values=float32[3] on cpu, indices=int64[3] on cpu)"
    with pytest.raises(IndexError, match="two tensors"):
        s[2]


def test_top5_accuracy_reads_as_the_docstring_says():
    torch.manual_seed(1)
    logits, labels = torch.randn(64, 10), torch.randint(0, 10, (64,))
    want = (torch.topk(logits, 5).indices == labels[:, None]).any(1).float().mean().item()
    got = kiln.eq(kiln.topk(k(logits), 5).indices, k(labels).reshape([-1, 1])).sum(1).mean()
    assert got.item() == pytest.approx(want)


def test_bf16_sorts_as_its_float32_values():
    torch.manual_seed(2)
    x = torch.randn(4, 33).bfloat16()
    want = torch.sort(x.float(), descending=True, stable=True)
    got = kiln.sort(k(x.float()).astype("bfloat16"), -1, True)
    assert got.values.dtype == "bfloat16"
    np.testing.assert_array_equal(np.asarray(got.indices), want.indices.numpy())


def test_bad_arguments_name_what_is_wrong():
    x = kiln.zeros([3, 5])
    with pytest.raises(kiln.Error, match=r"topk: k = 6 is outside 0 to 5"):
        kiln.topk(x, 6)
    with pytest.raises(kiln.Error, match=r"sort: dimension 2 is out of range"):
        kiln.sort(x, 2)
    with pytest.raises(kiln.Error, match=r"argsort.*int64"):
        kiln.argsort(kiln.from_dlpack(torch.tensor([2, 1])))
