import numpy as np
import pytest
import torch

from course_lib.shapes import check_shape, describe


def test_check_shape_returns_named_sizes():
    assert check_shape(torch.zeros(2, 3, 4), "B T d_model") == {"B": 2, "T": 3, "d_model": 4}
    assert check_shape(np.zeros((2, 3)), "B, T") == {"B": 2, "T": 3}
    assert check_shape(torch.zeros(2, 1, 5), "B 1 T") == {"B": 2, "T": 5}
    assert check_shape(torch.zeros(7, 2, 3), "... T d") == {"T": 2, "d": 3}
    assert check_shape(torch.zeros(2, 3), "... T d") == {"T": 2, "d": 3}
    assert check_shape(torch.tensor(1.0), "") == {}


def test_check_shape_carries_known_sizes_between_tensors():
    sizes = check_shape(torch.zeros(2, 5, 8), "B T d_k", name="q")
    check_shape(torch.zeros(2, 7, 8), "B S d_k", name="k", B=sizes["B"], d_k=sizes["d_k"])
    with pytest.raises(ValueError, match=r"k: expected d_k=8, got d_k=6 \(shape \(2, 7, 6\) read as B=2, S=7, d_k=6\)"):
        check_shape(torch.zeros(2, 7, 6), "B S d_k", name="k", **sizes)


def test_repeated_name_must_match():
    check_shape(torch.zeros(3, 3), "T T")
    with pytest.raises(ValueError, match="expected T=3, got T=4"):
        check_shape(torch.zeros(3, 4), "T T", name="scores")


def test_wrong_number_of_axes():
    with pytest.raises(ValueError, match=r"x: expected 3 axes \(B, T, d_model\), got shape \(2, 8\) with 2 axes"):
        check_shape(torch.zeros(2, 8), "B T d_model", name="x")
    with pytest.raises(ValueError, match=r"expected 2\+ axes"):
        check_shape(torch.zeros(3), "... T d")


def test_fixed_size_axis():
    with pytest.raises(ValueError, match=r"expected an axis of size 1 in \(B, 1, T\), got shape \(2, 3, 5\)"):
        check_shape(torch.zeros(2, 3, 5), "B 1 T")


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"mask: expected a tensor of shape \(B, T\), got list"):
        check_shape([[1, 2]], "B T", name="mask")


def test_dtype_kinds():
    check_shape(torch.zeros(2), "T", dtype="float")
    check_shape(torch.zeros(2, dtype=torch.bool), "T", dtype="bool")
    check_shape(np.zeros(2, dtype=np.int64), "T", dtype="int")
    with pytest.raises(TypeError, match="mask: expected a bool dtype, got torch.float32"):
        check_shape(torch.zeros(2), "T", name="mask", dtype="bool")
    with pytest.raises(TypeError, match="expected a float dtype, got int64"):
        check_shape(np.zeros(2, dtype=np.int64), "T", dtype="float")
    with pytest.raises(TypeError, match="expected an int dtype"):
        check_shape(torch.zeros(2, dtype=torch.bool), "T", dtype="int")
    with pytest.raises(ValueError, match="dtype kind must be"):
        check_shape(torch.zeros(2), "T", dtype="complex")


def test_bad_pattern():
    with pytest.raises(ValueError, match="'...' may only come first"):
        check_shape(torch.zeros(2, 3), "B ... T")


def test_describe():
    assert describe(torch.zeros(2, 3, 4), "B T d_model") == "(B=2, T=3, d_model=4) float32"
    assert describe(np.zeros((5, 2, 3), dtype=np.float64), "... T d") == "(5, T=2, d=3) float64"
    assert describe(torch.zeros(2, 1), "B 1") == "(B=2, 1) float32"
    with pytest.raises(ValueError):
        describe(torch.zeros(2), "B T")


def test_check_int():
    from course_lib.shapes import check_int

    assert check_int(3, "n", 1) == 3 and check_int(torch.tensor(4), "n") == 4 and check_int(-7, "pad_id") == -7
    with pytest.raises(TypeError, match=r"n must be an int, got 2.5 \(float\)"):
        check_int(2.5, "n")
    with pytest.raises(TypeError, match="n must be an int, got True"):
        check_int(True, "n")
    with pytest.raises(ValueError, match="T must be a positive int, got 0"):
        check_int(0, "T", 1)
    with pytest.raises(ValueError, match="T must be a non-negative int, got -1"):
        check_int(-1, "T", 0)
    with pytest.raises(ValueError, match="d_model must be an int >= 2, got 1"):
        check_int(1, "d_model", 2)
