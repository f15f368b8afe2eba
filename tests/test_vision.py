"""Camera image encoders (policies/vision.py): shapes, the smallest image each takes, random shift on in training and
off in evaluation and exports, ONNX parity, spatial-softmax coordinates, and that each one learns."""

import re
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from policies.vision import ENCODERS, RandomShift, SpatialSoftmax, make_encoder
from robodistill.export.exporter import OPSET

# the paper-size ResNet at a quarter of its width where a test trains or exports it: the same layers, 16x cheaper
SMALL = {"cnn": {}, "keypoints": {}, "resnet18": {"width": 16}}


def images(n: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("side", [64, 96])
@pytest.mark.parametrize("name", list(ENCODERS))
def test_each_encoder_maps_uint8_images_to_features(name, side):
    torch.manual_seed(0)
    encoder = make_encoder(name, (side, side, 3), 24)
    features = encoder(images(3, side))
    assert features.shape == (3, 24) and features.dtype == torch.float32 and torch.isfinite(features).all()


def test_non_square_images_and_the_resnet_heads():
    assert make_encoder("keypoints", (64, 96, 3), 8)(images(2, 64)[:, :, :1].expand(2, 64, 96, 3)).shape == (2, 8)
    for head in ("softmax", "avgpool"):
        assert make_encoder("resnet18", (64, 64, 3), 8, head=head, width=16)(images(2, 64)).shape == (2, 8)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_too_small_images_are_refused_naming_the_smallest_size_that_works(name):
    with pytest.raises(ValueError, match=rf"the {name} image encoder takes images of at least \d+x\d+") as info:
        make_encoder(name, (4, 4, 3), 8, **SMALL[name])
    side = int(re.search(r"at least (\d+)x", str(info.value)).group(1))
    # the size named is the smallest that works: one pixel less is refused, even in one direction
    assert torch.isfinite(make_encoder(name, (side, side, 3), 8, **SMALL[name])(images(2, side))).all()
    with pytest.raises(ValueError, match=f"at least {side}x{side}"):
        make_encoder(name, (side + 20, side - 1, 3), 8, **SMALL[name])


def test_unknown_encoder_or_option_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown image encoder 'vit'; choose one of cnn, keypoints, resnet18"):
        make_encoder("vit", (64, 64, 3), 8)
    with pytest.raises(ValueError, match="the cnn image encoder has no option num_keypoints; its options: shift"):
        make_encoder("cnn", (64, 64, 3), 8, num_keypoints=8)
    with pytest.raises(ValueError, match="head must be one of softmax, avgpool"):
        make_encoder("resnet18", (64, 64, 3), 8, head="max")


def test_random_shift_moves_each_image_within_the_pad_in_training_only():
    torch.manual_seed(0)
    image = torch.zeros(32, 12, 12, 3, dtype=torch.uint8)
    image[:, 6, 5] = 255
    shift = RandomShift(2)
    shifted = shift(image)
    assert shifted.dtype == torch.uint8 and shifted.shape == image.shape
    where = (shifted[..., 0] == 255).nonzero()
    assert len(where) == 32  # every image still holds its bright pixel once
    moved = where[:, 1:] - torch.tensor([6, 5])  # (dy, dx) of each image
    assert moved.abs().max() == 2 and len({tuple(m.tolist()) for m in moved}) > 5  # each image its own offset
    # past the border the edge pixels are repeated (replicate padding), not zeros
    ramp = torch.arange(12, dtype=torch.uint8).repeat(32, 12, 1)[..., None]  # (B, H, W, 1): pixel value = column
    cols = shift(ramp)[:, 0, :, 0]
    assert (cols[:, 0] <= 2).all() and ((cols[:, :-1] == cols[:, 1:]) | (cols[:, 1:] - cols[:, :-1] == 1)).all()
    assert (cols[:, 0] == cols[:, 1]).any()  # some images shifted right: their left edge repeats
    shift.eval()
    assert shift(image) is image


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoders_augment_in_training_and_are_deterministic_in_eval(name):
    torch.manual_seed(0)
    encoder = make_encoder(name, (48, 48, 3), 16, **SMALL[name])
    x = images(4, 48)
    assert not torch.equal(encoder(x), encoder(x))
    encoder.eval()
    assert torch.equal(encoder(x), encoder(x))
    unshifted = make_encoder(name, (48, 48, 3), 16, shift=0, **SMALL[name])  # the shift is the only randomness
    assert unshifted.training and torch.equal(unshifted(x), unshifted(x))


@pytest.mark.parametrize("name", list(ENCODERS))
def test_exported_eval_encoder_takes_uint8_images_holds_no_random_op_and_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    encoder = make_encoder(name, (64, 64, 3), 16, **SMALL[name]).eval()
    file = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant shapes and the legacy exporter's notice
        torch.onnx.export(
            encoder,
            (images(2, 64),),
            str(file),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
        )
        traced = torch.jit.trace(encoder, (images(2, 64),), check_trace=False)
    graph = onnx.load(str(file)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert not [n.op_type for n in graph.node if "Random" in n.op_type or n.op_type == "Multinomial"]
    assert "randint" not in str(traced.inlined_graph)
    x = images(7, 64, seed=1)  # another batch size than the trace's
    with torch.no_grad():
        expected = encoder(x).numpy()
        assert np.abs(traced(x).numpy() - expected).max() <= 1e-5
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    (got,) = session.run(["features"], {"image": x.numpy()})
    assert got.shape == (7, 16) and np.abs(got - expected).max() <= 1e-4


def test_spatial_softmax_returns_where_a_one_hot_map_fires():
    maps = torch.zeros(2, 3, 5, 7)  # (B, K, H, W); x runs over the 7 columns, y over the 5 rows, each in [-1, 1]
    maps[0, 0, 2, 3] = maps[0, 1, 0, 6] = maps[0, 2, 4, 0] = 100.0
    maps[1, 0, 1, 1] = maps[1, 1, 3, 5] = maps[1, 2, 0, 0] = 100.0
    points = SpatialSoftmax(3, 3)(maps)
    expected = torch.tensor([[[0.0, 0.0], [1.0, -1.0], [-1.0, 1.0]], [[-2 / 3, -0.5], [2 / 3, 0.5], [-1.0, -1.0]]])
    assert points.shape == (2, 3, 2) and torch.allclose(points, expected, atol=1e-6)
    # a flat map puts its keypoint in the centre; with a projection, K keypoints from C channels
    assert torch.allclose(SpatialSoftmax(3, 3)(torch.zeros(1, 3, 4, 4)), torch.zeros(1, 3, 2), atol=1e-6)
    assert SpatialSoftmax(8, 5)(torch.randn(2, 8, 6, 6)).shape == (2, 5, 2)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_each_encoder_learns_where_a_square_is_on_a_tiny_batch(name):
    """Regress the (x, y) of a bright square in 8 images: the loss must fall by 10x in 40 steps."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = torch.zeros(8, 48, 48, 3, dtype=torch.uint8)
    corners = rng.integers(0, 42, (8, 2))
    for i, (r, c) in enumerate(corners):
        x[i, r : r + 6, c : c + 6] = 255
    target = torch.as_tensor((corners + 2.5) / 23.5 - 1.0, dtype=torch.float32)[:, [1, 0]]  # (x, y) in [-1, 1]
    model = torch.nn.Sequential(make_encoder(name, (48, 48, 3), 32, shift=0, **SMALL[name]), torch.nn.Linear(32, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = ((model(x) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.1 * losses[0], losses
