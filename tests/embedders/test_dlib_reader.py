"""Our reader of dlib's model format, and the golden test against real dlib (dlib-bin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipelines.embedders.dlib_format import DlibFormatError, Reader, parse, read
from pipelines.embedders.dlib_resnet import default_weights_path, load_dlib_resnet, pad_add


@pytest.mark.parametrize(
    "raw,value",
    [
        (b"\x00", 0),
        (b"\x01\x05", 5),
        (b"\x81\x05", -5),
        (b"\x02\x80\x12", 0x1280),
        (b"\x04\xff\xff\xff\x7f", 2**31 - 1),
        (b"\x88" + (2**63).to_bytes(8, "little"), -(2**63)),
    ],
)
def test_integers(raw, value):
    r = Reader(raw)
    assert r.int() == value and r.done


@pytest.mark.parametrize(
    "raw,value",
    [
        (b"\x03\x0a\xd7\xa3\x81\x1c", 0.04),  # the loss margin in the model file
        (b"\x01\x10\x81\x04", 1.0),
        (b"\x81\x03\x01\x01", -6.0),
        (b"\x01\x00\x01\x0b", 0.0),
        (b"\x01\x00\x02\x00\x7d", math.inf),  # exponent 32000
        (b"\x01\x00\x02\x01\x7d", -math.inf),  # exponent 32001
    ],
)
def test_floats(raw, value):
    assert Reader(raw).float() == pytest.approx(value, rel=1e-6)


def test_nan_and_malformed_input():
    assert math.isnan(Reader(b"\x01\x00\x02\x02\x7d").float())  # exponent 32002
    with pytest.raises(DlibFormatError, match="end of file"):
        Reader(b"\x02\x01").int()
    with pytest.raises(DlibFormatError, match="control byte"):
        Reader(b"\x3f").int()
    with pytest.raises(DlibFormatError, match="not a dlib network"):
        parse(b"\x01\x07")


def test_truncated_model_file_is_refused():
    data = default_weights_path().read_bytes()
    with pytest.raises(DlibFormatError):
        parse(data[: len(data) // 2])


def test_structure_of_the_model_file():
    net = read(default_weights_path())
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    assert net.input["means"] == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    assert (net.input["nr"], net.input["nc"]) == (150, 150)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14
    fc = net.layers[-1]
    assert fc.kind == "fc" and fc.params["weight"].shape == (256, 128)
    assert fc.params["bias"] is None
    model = load_dlib_resnet()
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == 5_607_488  # 5.6 M as published (affine folded into conv biases)


@pytest.mark.parametrize(
    "a,b,shape,corner",
    [
        ((1, 2, 3, 3), (1, 2, 4, 4), (1, 2, 4, 4), 2.0),  # only y (2s) reaches row/col 3
        ((1, 4, 2, 2), (1, 2, 2, 2), (1, 4, 2, 2), 1.0),  # only x (1s) has channel 3
    ],
)
def test_dlib_add_pads_top_left(a, b, shape, corner):
    x, y = torch.ones(a), torch.full(b, 2.0)
    out = pad_add(x, y)
    assert out.shape == shape
    assert out[0, 0, 0, 0] == 3.0  # both present at the top-left
    assert out[0, -1, -1, -1] == corner  # only the larger one at the far corner


@pytest.fixture(scope="module")
def dlib_reference():
    import dlib
    import face_recognition_models  # noqa: F401 - locates the shipped model files

    models = default_weights_path().parent
    return (
        dlib.get_frontal_face_detector(),
        dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def real_chips(data, dlib_reference) -> np.ndarray:
    import dlib

    from pipelines.images import load_image

    detector, shapes, _ = dlib_reference
    files = [data / "known" / n for n in ("obama.jpg", "biden.jpg", "two_people.jpg")]
    files += sorted((data / "lfw").glob("A*/*.jpg"))[:8]
    chips = []
    for f in files:
        img = load_image(f)
        for rect in detector(img, 1):
            chips.append(dlib.get_face_chip(img, shapes(img, rect), size=150, padding=0.25))
    return np.stack(chips)


@pytest.mark.timeout(120)
def test_golden_descriptors_match_real_dlib(data, dlib_reference):
    _, _, facerec = dlib_reference
    chips = real_chips(data, dlib_reference)
    rng = np.random.default_rng(0)
    odd = np.stack(
        [
            rng.integers(0, 256, (150, 150, 3), dtype=np.uint8),
            np.zeros((150, 150, 3), np.uint8),
            np.full((150, 150, 3), 255, np.uint8),
        ]
    )
    chips = np.concatenate([chips, odd])
    assert len(chips) >= 12
    ref = np.stack([np.asarray(facerec.compute_face_descriptor(c)) for c in chips])
    model = load_dlib_resnet()
    with torch.inference_mode():
        ours = model(torch.from_numpy(chips)).numpy()
        single = model(torch.from_numpy(chips[:1])).numpy()
    assert np.abs(ours - ref).max() < 1e-4
    assert np.abs(single[0] - ours[0]).max() < 1e-5  # batching changes nothing
