"""Training's small parts against torch's: AdamW and Adam's betas, gradient clipping by norm and
by value, the learning-rate schedules, and a schedule driving kiln.train's phase."""
import math
import os
import tempfile

import numpy as np
import pytest

import kiln

torch = pytest.importorskip("torch")


def net(seed=1):
    m = kiln.Sequential("net")
    m.add(kiln.Linear("fc1", 5, 7, seed=seed))
    m.add(kiln.ReLU("relu"))
    m.add(kiln.Linear("fc2", 7, 3, seed=seed + 1))
    return m


def torch_twins(model):
    """torch leaves holding copies of the model's parameters, in parameters() order."""
    return [torch.tensor(np.array(t.numpy()), requires_grad=True) for t in model.parameters().values()]


def backward_both(model, twins, rng):
    """Gives each kiln parameter and its torch twin the same random gradient, via a backward."""
    for (name, p), q in zip(model.parameters().items(), twins):
        g = rng.standard_normal(p.shape).astype(np.float32)
        p.zero_grad()
        kiln.sum(p * kiln.from_dlpack(g)).backward()
        q.grad = torch.from_numpy(g.copy())


def assert_same_params(model, twins, rtol=1e-6):
    for (name, p), q in zip(model.parameters().items(), twins):
        np.testing.assert_allclose(p.numpy(), q.detach().numpy(), rtol=rtol, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("make,make_torch", [
    (lambda m: kiln.AdamW(m, lr=0.01, weight_decay=0.3),
     lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
    (lambda m: kiln.AdamW(m, lr=0.02, betas=(0.8, 0.95)),  # torch's default decay, 0.01
     lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.95))),
    (lambda m: kiln.Adam(m, lr=0.01, betas=(0.85, 0.99), weight_decay=0.1),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.85, 0.99), weight_decay=0.1)),
    (lambda m: kiln.Adam(m, lr=0.01, weight_decay=0.3, decoupled_weight_decay=True),
     lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.3)),
])
def test_adam_and_adamw_follow_torch_step_by_step(make, make_torch):
    model = net()
    twins = torch_twins(model)
    opt, ref = make(model), make_torch(twins)
    rng = np.random.default_rng(0)
    for _ in range(5):
        backward_both(model, twins, rng)
        opt.step()
        ref.step()
        assert_same_params(model, twins)
    assert opt.steps == 5


def test_adamw_says_what_it_is_and_refuses_two_spellings_of_betas():
    model = net()
    assert repr(kiln.AdamW(model)) == ("kiln.AdamW(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01, "
                                       "4 parameters)")
    assert isinstance(kiln.AdamW(model), kiln.Adam)
    assert repr(kiln.Adam(model, weight_decay=0.1, decoupled_weight_decay=True)).endswith(
        "weight_decay=0.1, decoupled_weight_decay=True, 4 parameters)")
    assert repr(kiln.Adam(model, 0.01, 0.8)).startswith("kiln.Adam(lr=0.01, beta1=0.8, beta2=0.999,")  # kiln's order
    with pytest.raises(kiln.Error, match="as float32"):
        kiln.Adam(model, betas=(0.9, 0.99999999))  # 1.0 in float32
    with pytest.raises(kiln.Error, match="weight_decay finite"):
        kiln.AdamW(model, weight_decay=float("inf"))
    assert repr(kiln.Adam(model, betas=(0.8, 0.9))).startswith("kiln.Adam(lr=0.001, beta1=0.8, beta2=0.9,")
    with pytest.raises(TypeError, match="not both"):
        kiln.Adam(model, betas=(0.8, 0.9), beta1=0.7)
    with pytest.raises(kiln.Error, match="beta1"):
        kiln.AdamW(model, betas=(1.0, 0.9))


def grads_of(model):
    return {k: np.array(p.grad.numpy()) for k, p in model.parameters().items()}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_torch(norm_type, max_norm):
    model = net(3)
    twins = torch_twins(model)
    backward_both(model, twins, np.random.default_rng(1))
    total = kiln.clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)  # the dict, as torch's idiom
    ref = torch.nn.utils.clip_grad_norm_(twins, max_norm, norm_type=norm_type)
    assert total.shape == () and total.dtype == "float32"
    assert float(total) == pytest.approx(float(ref), rel=1e-6)
    for (name, p), q in zip(model.parameters().items(), twins):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6, atol=1e-9, err_msg=name)


def test_clip_grad_norm_takes_what_torch_takes_and_skips_missing_gradients():
    model = net(4)
    x = kiln.normal([6, 5], 0, 1)
    kiln.sum(model(x) ** 2).backward()
    params = model.parameters()
    before = grads_of(model)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in before.values()))
    old = params["net/fc1/weight"].grad
    for given in (model, params, list(params.values()), iter(params.values())):
        assert float(kiln.clip_grad_norm_(given, 1e9)) == pytest.approx(norm, rel=1e-6)
    one = params["net/fc2/bias"]
    assert float(kiln.clip_grad_norm_(one, 1e9)) == pytest.approx(np.linalg.norm(before["net/fc2/bias"]), rel=1e-6)
    kiln.clip_grad_norm_(model, 0.1)
    after = grads_of(model)
    scale = 0.1 / (norm + 1e-6)
    for k in before:
        np.testing.assert_allclose(after[k], before[k] * scale, rtol=1e-5, err_msg=k)
    np.testing.assert_array_equal(old.numpy(), after["net/fc1/weight"])  # in place, as torch's mul_
    fresh = kiln.zeros([3]).requires_grad_()  # no gradient: skipped, total 0
    assert float(kiln.clip_grad_norm_([fresh], 1.0)) == 0.0 and fresh.grad is None
    # max_norm inf measures without clipping (torch's idiom); norm_type goes through float(), 'inf' too.
    now = grads_of(model)
    measured = kiln.clip_grad_norm_(model, float("inf"), norm_type="inf")
    assert float(measured) == max(float(np.abs(g).max()) for g in now.values())
    assert all(np.array_equal(now[k], g) for k, g in grads_of(model).items())


def test_clip_grad_norm_refuses_bad_arguments_and_a_nonfinite_norm_when_asked():
    p = kiln.zeros([2]).requires_grad_()
    kiln.sum(p * kiln.from_dlpack(np.array([np.nan, 1], np.float32))).backward()
    with pytest.raises(kiln.Error, match="error_if_nonfinite"):
        kiln.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert math.isnan(float(kiln.clip_grad_norm_([p], 1.0)))  # torch's default: scaled by it anyway
    with pytest.raises(kiln.Error, match="max_norm"):
        kiln.clip_grad_norm_([p], -1.0)
    with pytest.raises(kiln.Error, match="norm_type"):
        kiln.clip_grad_norm_([p], 1.0, norm_type=0.0)
    with pytest.raises(TypeError, match="iterable of Tensors; got float"):
        kiln.clip_grad_norm_(1.0, 1.0)
    with pytest.raises(TypeError, match="item of type ndarray"):
        kiln.clip_grad_norm_([np.zeros(2)], 1.0)
    with pytest.raises(TypeError, match="got str"):
        kiln.clip_grad_value_("net", 1.0)


def test_clipping_in_place_refuses_a_graph_that_saved_the_gradient():
    for clip in (lambda p: kiln.clip_grad_norm_([p], 1.0), lambda p: kiln.clip_grad_value_([p], 1.0)):
        p = kiln.ones([3]).requires_grad_()
        (p * 4.0).sum().backward()
        x = kiln.ones([3]).requires_grad_()
        y = (x * p.grad).sum()  # mul saves the gradient for x's
        clip(p)
        with pytest.raises(kiln.Error, match="backward of mul: a tensor it saved.* was changed in place"):
            y.backward()


def test_clip_grad_value_matches_torch():
    model = net(5)
    twins = torch_twins(model)
    backward_both(model, twins, np.random.default_rng(2))
    held = [p.grad for p in model.parameters().values()]
    kiln.clip_grad_value_(model, 0.7)
    torch.nn.utils.clip_grad_value_(twins, 0.7)
    for (name, p), q, g in zip(model.parameters().items(), twins, held):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy(), err_msg=name)
        np.testing.assert_array_equal(g.numpy(), q.grad.numpy(), err_msg=name)  # in place, as torch's clamp_
    with pytest.raises(kiln.Error, match="clip_value"):
        kiln.clip_grad_value_(model, -0.1)


def torch_rates(make, steps):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


def test_schedules_match_torchs_schedulers_stepped_per_step():
    step = kiln.StepLR(0.1, every=3, gamma=0.5)
    ref = torch_rates(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 12)
    np.testing.assert_allclose([step.lr(s) for s in range(12)], ref, rtol=1e-6)
    cosine = kiln.CosineLR(0.1, steps=10, floor=0.001)
    ref = torch_rates(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.001), 11)
    np.testing.assert_allclose([cosine.lr(s) for s in range(11)], ref, rtol=1e-5)
    warm = kiln.WarmupLR(cosine, warmup=4)
    assert [warm.lr(s) for s in range(4)] == pytest.approx([0.025, 0.05, 0.075, 0.1], rel=1e-6)
    assert warm.lr(4) == cosine.lr(0) and warm.lr(9) == cosine.lr(5)
    assert kiln.ConstantLR(0.3).lr(10 ** 9) == 0.3
    assert repr(warm) == "kiln.WarmupLR(kiln.CosineLR(0.1, steps=10, floor=0.001), warmup=4)"
    assert repr(step) == "kiln.StepLR(0.1, every=3, gamma=0.5)" and repr(kiln.ConstantLR(0.3)) == "kiln.ConstantLR(0.3)"
    with pytest.raises(kiln.Error, match="step must be >= 0"):
        step.lr(-1)
    with pytest.raises(kiln.Error, match="floor"):
        kiln.CosineLR(0.1, steps=10, floor=0.2)
    with pytest.raises(kiln.Error, match="StepLR"):
        kiln.StepLR(0.1, every=0)
    with pytest.raises(kiln.Error, match="finite"):
        kiln.ConstantLR(1e40)  # inf as float32
    with pytest.raises(kiln.Error, match="finite gamma"):
        kiln.StepLR(0.1, 2, gamma=float("inf"))
    assert "gamma: float = 0.1)" in kiln.StepLR.__init__.__doc__  # not 0.10000000149...


def test_a_schedule_drives_an_optimizer_and_a_trainer_phase():
    model = net(6)
    opt = kiln.SGD(model, lr=1.0)
    sched = kiln.StepLR(0.1, every=2, gamma=0.1)
    seen = []
    for _ in range(5):
        opt.lr = sched.lr(opt.steps)
        seen.append(opt.lr)
        kiln.sum(model(kiln.ones([2, 5]))).backward()
        opt.step()
        opt.zero_grad()
    assert seen == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])

    pytest.importorskip("PIL.Image")
    from image_folders import write_splits
    phase = kiln.Phase("head", train=["vgg11/fc8/"], epochs=2, momentum=0.9, schedule=kiln.StepLR(0.01, 1, 0.5))
    assert phase.schedule.lr(1) == 0.005 and "schedule=kiln.StepLR(0.01, every=1, gamma=0.5)" in repr(phase)
    with tempfile.TemporaryDirectory() as d:
        write_splits(d, 6, 2, seed=0)
        vgg = kiln.build_model("vgg11", num_classes=2, image_size=32, seed=1)
        epochs = []
        kiln.train(vgg, "vgg11", [phase], os.path.join(d, "train"), os.path.join(d, "val"), os.path.join(d, "run"),
                   batch_size=4, image_size=32, num_workers=1, seed=3, on_epoch=epochs.append)
    rates = [phase.schedule.lr(s) for s in range(20)]
    # The last step's rate of each epoch, one of the schedule's, falling from epoch to epoch.
    assert epochs[0]["lr"] in rates and epochs[1]["lr"] in rates and epochs[1]["lr"] < epochs[0]["lr"]
    assert "lr=" not in repr(phase)  # the schedule's rate is the one used
    phase.schedule = None
    assert phase.schedule is None and "schedule" not in repr(phase) and "lr=0.001" in repr(phase)
    with pytest.raises(ValueError, match="lr or schedule, not both"):
        kiln.Phase("p", lr=0.1, schedule=kiln.ConstantLR(0.1))


def test_zero_grad_drops_gradients_or_makes_them_zeros():
    model = net(7)
    opt = kiln.SGD(model, lr=0.1)
    kiln.sum(model(kiln.ones([2, 5]))).backward()
    old = model.parameters()["net/fc1/weight"].grad
    opt.zero_grad(set_to_none=False)
    for p in model.parameters().values():
        assert p.grad is not None and not np.any(p.grad.numpy())
    assert np.any(old.numpy())  # a new tensor: the one read before keeps its values
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters().values())


def test_optimizers_take_tensors_of_your_own_as_torchs_do():
    # Research code's weights are often plain tensors or modules held by a Python class: an
    # optimizer takes a dict of them (names for its state and errors) or any iterable.
    rng = np.random.default_rng(3)
    w0, b0 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x = rng.standard_normal((8, 4)).astype(np.float32)

    def make():  # the optimizer alone keeps the tensors alive
        w = kiln.from_dlpack(w0.copy()).requires_grad_()
        b = kiln.from_dlpack(b0.copy()).requires_grad_()
        return w, b, kiln.AdamW({"w": w, "b": b}, lr=0.05, weight_decay=0.2)

    w, b, opt = make()
    tw = torch.tensor(w0, requires_grad=True)
    tb = torch.tensor(b0, requires_grad=True)
    ref = torch.optim.AdamW([tw, tb], lr=0.05, weight_decay=0.2)
    xs = kiln.from_dlpack(x)
    for _ in range(4):
        opt.zero_grad()
        kiln.sum(kiln.tanh(xs @ w + b) ** 2).backward()
        opt.step()
        ref.zero_grad()
        (torch.tanh(torch.from_numpy(x) @ tw + tb) ** 2).sum().backward()
        ref.step()
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert repr(opt).endswith("2 parameters)")
    del w, b
    opt.step()  # still holds both

    lin, norm = kiln.Linear("qkv", 3, 6, seed=1), kiln.LayerNorm("norm", 6)
    both = {**lin.parameters(), **norm.parameters()}  # several modules of one Python class
    sgd = kiln.SGD(both, lr=0.1, momentum=0.9)
    kiln.sum(norm(lin(kiln.ones([2, 3]))) ** 2).backward()
    before = {k: np.array(t.numpy()) for k, t in both.items()}
    sgd.step()
    assert all(not np.array_equal(before[k], t.numpy()) for k, t in both.items())
    loose = kiln.zeros([2])  # requires no grad: held, skipped by step() as torch's
    kiln.SGD([loose, kiln.zeros([1]).requires_grad_()], lr=1.0).step()


def test_optimizers_refuse_tensors_they_cannot_update():
    leaf = kiln.zeros([3]).requires_grad_()
    with pytest.raises(kiln.Error, match=r"'params\[1\]'.*not a leaf"):
        kiln.SGD([leaf, leaf * 2], lr=0.1)
    with pytest.raises(kiln.Error, match="'w' is bfloat16.*float32"):
        kiln.Adam({"w": kiln.zeros([2], dtype="bfloat16")})
    with pytest.raises(kiln.Error, match="same memory"):
        kiln.AdamW([leaf, leaf])
    with pytest.raises(kiln.Error, match="list of tensors is empty"):
        kiln.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="parameter groups are not taken"):
        kiln.SGD([{"params": [leaf]}], lr=0.1)
    with pytest.raises(TypeError, match="a dict with an item of types int: kiln.Tensor"):
        kiln.Adam({0: leaf})
    with pytest.raises(TypeError, match="got float"):
        kiln.SGD(0.5)


@pytest.mark.skipif(kiln.device_count() == 0, reason="no GPU: Module.to('cuda') cannot run here")
def test_an_optimizer_made_before_module_to_follows_the_parameters():
    moved, stay = net(7), net(7)
    opt, ref = kiln.AdamW(moved.parameters(), lr=0.01), kiln.AdamW(stay.parameters(), lr=0.01)  # torch's idiom
    held = moved.parameters()["net/fc1/weight"]
    moved.to("cuda")
    assert held.is_cuda  # in place: the handle taken before sees the move, as torch's
    x = kiln.normal([6, 5], 0, 1)
    for _ in range(2):
        opt.zero_grad()
        ref.zero_grad()
        kiln.sum(moved(x.cuda()) ** 2).backward()
        kiln.sum(stay(x) ** 2).backward()
        opt.step()
        ref.step()
    for (name, p), q in zip(moved.parameters().items(), stay.parameters().values()):
        np.testing.assert_allclose(p.cpu().numpy(), q.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
