"""kiln.cross_entropy and kiln.nll_loss against torch.nn.functional's: every reduction, class
weights, ignore_index, label smoothing, classes second of several dimensions, probability
targets, gradients, and the errors."""
import itertools

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")
F = torch.nn.functional


def both(x, t, fn="cross_entropy", **kw):
    """The loss and the gradient of sum(loss) from kiln and from torch, as NumPy arrays."""
    kx, tx = kiln.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    kt, tt = kiln.tensor(t), torch.tensor(t)
    kk, tk = dict(kw), dict(kw)
    if kw.get("weight") is not None:
        kk["weight"], tk["weight"] = kiln.tensor(kw["weight"]), torch.tensor(kw["weight"])
    kl, tl = getattr(kiln, fn)(kx, kt, **kk), getattr(F, fn)(tx, tt, **tk)
    kiln.sum(kl).backward()
    tl.sum().backward()
    return (kl.numpy(), kx.grad.numpy()), (tl.detach().numpy(), tx.grad.numpy())


def assert_same(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5)).astype(np.float32)
T = np.array([0, 4, -100, 2, 1, -100])
W = RNG.uniform(0.5, 2, 5).astype(np.float32)


@pytest.mark.parametrize("reduction,smoothing,weighted", itertools.product(["mean", "sum", "none"], [0.0, 0.1],
                                                                          [False, True]))
def test_cross_entropy_matches_torch_with_ignored_targets(reduction, smoothing, weighted):
    assert_same(*both(X, T, reduction=reduction, label_smoothing=smoothing, weight=W if weighted else None))


def test_cross_entropy_over_classes_second_probabilities_and_one_sample():
    x = RNG.standard_normal((2, 4, 3, 2)).astype(np.float32)
    t = RNG.integers(0, 4, (2, 3, 2))
    t[0, 1, 1] = 7
    assert_same(*both(x, t, ignore_index=7))  # any ignore_index, as torch's
    assert_same(*both(x, t, reduction="none", label_smoothing=0.2, weight=W[:4], ignore_index=7))
    p = RNG.dirichlet(np.ones(5), 6).astype(np.float32)
    assert_same(*both(X, p))
    assert_same(*both(X, p, ignore_index=-1))  # a negative ignore_index is no index: torch takes it
    assert_same(*both(X, p, label_smoothing=0.3, weight=W, reduction="sum"))
    assert_same(*both(X[0], np.array(3)))
    t32 = kiln.tensor(T.astype(np.int32))  # int32 targets too (torch 1.13's want int64)
    assert float(kiln.cross_entropy(kiln.tensor(X), t32)) == float(kiln.cross_entropy(kiln.tensor(X), kiln.tensor(T)))
    # Every target ignored: mean is 0 / 0, NaN, as torch's; sum is 0.
    (k, _), (r, _) = both(X, np.full(6, -100))
    assert np.isnan(k) and np.isnan(r)
    assert_same(*both(X, np.full(6, -100), reduction="sum"))


def test_ignored_rows_and_empty_means_leave_other_gradients_as_torchs():
    # A -inf or NaN logit in an ignored (padding) row: the loss and every gradient stay torch's.
    x = np.array([[-np.inf, 1, 2], [0.5, -1, 2], [np.nan, 0, 0]], np.float32)
    t = np.array([-100, 2, -100])
    for kw in ({}, {"reduction": "none"}, {"label_smoothing": 0.1}, {"weight": np.array([1, 2, 3], np.float32)}):
        (kl, kg), (tl, tg) = both(x, t, **kw)
        np.testing.assert_allclose(kl, tl, rtol=1e-6)
        np.testing.assert_array_equal(np.isnan(kg), np.isnan(tg))
        np.testing.assert_allclose(np.nan_to_num(kg), np.nan_to_num(tg), rtol=1e-6, atol=1e-7)
    # A mean over no weight is NaN, as torch's; the gradients NaN only where torch's are.
    zero_first = {"weight": np.array([0, 1, 1, 1, 1], np.float32)}
    for kw, target in (({}, np.full(3, -100)), (zero_first, np.array([0, -100, 0]))):
        (kl, kg), (tl, tg) = both(X[:3], target, **kw)
        assert np.isnan(kl) and np.isnan(tl)
        np.testing.assert_array_equal(np.isnan(kg), np.isnan(tg))


@pytest.mark.parametrize("shape", [(6, 5), (5,), (3, 4, 2, 2)])
def test_the_plain_mean_takes_the_fused_kernel_and_matches_torch(shape):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    classes = shape[0] if len(shape) == 1 else shape[1]
    t_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    t = rng.integers(0, classes, size=t_shape).astype(np.int64)
    assert_same(*both(x, t))
    loss = kiln.cross_entropy(kiln.tensor(x, requires_grad=True), kiln.tensor(t))
    assert "grad_fn=softmax_cross_entropy" in repr(loss)
    # Any option, an ignored target or one that is no class keeps the composed path and its errors.
    ignored = t.copy().reshape(-1)
    ignored[0] = -100
    assert_same(*both(x, ignored.reshape(t_shape)))
    bad = t.copy().reshape(-1)
    bad[-1] = classes
    with pytest.raises(kiln.Error, match=f"cross_entropy: target.* is {classes}, not a class index"):
        kiln.cross_entropy(kiln.tensor(x), kiln.tensor(bad.reshape(t_shape)))


def test_the_fused_form_keeps_what_its_backward_reads():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = kiln.tensor([0, 1, 2, 3, 4, 0])
    w = kiln.tensor(x, requires_grad=True)
    opt = kiln.SGD([w], lr=0.1)
    kiln.cross_entropy(w, t).backward()
    loss = kiln.cross_entropy(w, t)
    opt.step()  # changes w in place between this loss's forward and backward, as torch allows
    loss.backward()  # reads the logits of its forward, not the stepped ones
    xg = torch.tensor(x, requires_grad=True)
    F.cross_entropy(xg, torch.tensor([0, 1, 2, 3, 4, 0])).backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * xg.grad.numpy(), rtol=1e-5, atol=1e-7)
    xk = kiln.tensor(x, requires_grad=True)
    loss = kiln.cross_entropy(xk, t)
    xk.detach().numpy()[:] = 0  # a write through NumPy, which no version counter sees
    loss.backward()
    np.testing.assert_allclose(xk.grad.numpy(), xg.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_probability_targets_get_gradients_too():
    p = kiln.tensor(RNG.dirichlet(np.ones(5), 6).astype(np.float32), requires_grad=True)
    tp = torch.tensor(p.numpy(), requires_grad=True)
    kiln.cross_entropy(kiln.tensor(X), p, label_smoothing=0.1).backward()
    F.cross_entropy(torch.tensor(X), tp, label_smoothing=0.1).backward()
    np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_matches_torch(reduction):
    logp = torch.log_softmax(torch.tensor(X), 1).numpy()
    assert_same(*both(logp, T, fn="nll_loss", reduction=reduction, weight=W))


def test_class_losses_refuse_what_torch_refuses_and_say_why():
    x, t = kiln.tensor(X), kiln.tensor(T)
    with pytest.raises(kiln.Error, match=r"target\[1\] is 5, not a class index in \[0, 5\) nor ignore_index \(-100\)"):
        kiln.cross_entropy(x, kiln.tensor([0, 5, 1, 2, 3, 4]))
    with pytest.raises(kiln.Error, match=r"target\[0, 1\] is -1"):
        kiln.cross_entropy(kiln.tensor(RNG.standard_normal((1, 3, 2)).astype(np.float32)), kiln.tensor([[0, -1]]))
    with pytest.raises(kiln.Error, match="does not fit logits"):
        kiln.cross_entropy(x, kiln.tensor([0, 1]))
    with pytest.raises(kiln.Error, match=r"weight must be \[5\], one per class"):
        kiln.cross_entropy(x, t, weight=kiln.ones([4]))
    with pytest.raises(kiln.Error, match=r"label_smoothing must be in \[0, 1\]"):
        kiln.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none'"):
        kiln.cross_entropy(x, t, reduction="avg")
    with pytest.raises(kiln.Error, match="ignore_index 0 applies to class index targets"):
        kiln.cross_entropy(x, kiln.tensor(np.full((6, 5), 0.2, np.float32)), ignore_index=0)
    with pytest.raises(kiln.Error, match="class indices"):
        kiln.nll_loss(x, kiln.tensor(np.full((6, 5), 0.2, np.float32)))
    with pytest.raises(kiln.Error, match=r"target is 7, not a class index"):  # a 0-d target
        kiln.cross_entropy(kiln.tensor(X[0]), kiln.tensor(7))
    with pytest.raises(kiln.Error, match="weight requires grad.*torch's raises too"):
        kiln.cross_entropy(x, t, weight=kiln.ones([5], requires_grad=True))
    with pytest.raises(kiln.Error, match="float32"):
        kiln.cross_entropy(x.bfloat16(), t)
