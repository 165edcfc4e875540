"""Checks of the Python surface that an audit asked for; each test says what was found."""
import os
import tempfile
import threading

import numpy as np
import pytest

import kiln


def test_an_optimizer_with_nothing_to_train_is_refused():
    net = kiln.Sequential("net")
    net.add(kiln.Linear("fc", 3, 2))
    net.freeze("net/")
    for make in (lambda: kiln.SGD(net, lr=0.1), lambda: kiln.Adam(net, lr=0.1)):
        with pytest.raises(kiln.Error, match="no trainable parameters to update.*unfreeze"):
            make()
    net.unfreeze("net/fc/")
    assert "2 parameters" in repr(kiln.SGD(net, lr=0.1))


def test_requires_grad_changes_only_on_leaves_as_in_torch():
    x = kiln.ones([2])
    x.requires_grad = True
    y = x * 2.0
    for value in (False, True):
        with pytest.raises(kiln.Error, match=r"only leaves can change requires_grad.*mul_scalar.*detach\(\)"):
            y.requires_grad = value
    d = y.detach()
    d.requires_grad = True
    assert d.is_leaf and d.requires_grad


def test_error_locations_are_relative_to_the_repository_root():
    with pytest.raises(kiln.Error) as bound:  # checked in python/src, was /work/main/python/src/...
        kiln.zeros([2], dtype="float64")
    with pytest.raises(kiln.Error) as core:
        kiln.add(kiln.ones([2]), kiln.ones([3]))
    assert bound.value.location.startswith("python/src/tensor.cpp:")
    assert core.value.location.startswith("core/")
