"""The model zoo: torchvision-compatible structure, parity with the same network in torch.nn
layers, pynn-only compute, and convert()/revert()."""
import copy
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import pynn
from pynn import models

FIXTURES = Path(__file__).parent / "fixtures" / "torchvision"
TORCHVISION_MODELS = sorted(p.stem for p in FIXTURES.glob("*.txt"))


def _read_fixture(name):
    lines = [l.split() for l in (FIXTURES / f"{name}.txt").read_text().splitlines() if not l.startswith("#")]
    return {l[0]: tuple(int(s) for s in l[1:]) for l in lines}


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_state_dict_keys_and_shapes_match_torchvision(name):
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = getattr(models, name)(weights=None, **kwargs)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _read_fixture(name)


def test_weights_other_than_none_are_refused():
    with pytest.raises(ValueError, match="weights=None"):
        models.resnet18(weights="IMAGENET1K_V1")


# ---- parity: the pynn model against the same model with every layer reverted to torch.nn ----

def _torch_twin(model):
    ref = copy.deepcopy(model)
    pynn.revert(ref)
    assert not any(type(m).__module__.startswith("pynn.nn") for m in ref.modules())
    return ref


def _check_parity(model, x, train, rtol=1e-4, atol=1e-5):
    model = model.double()
    x = x.double()
    ref = _torch_twin(model)
    model.train(train)
    ref.train(train)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = model(xa), ref(xb)
    if isinstance(ya, tuple):
        ya, yb = torch.cat([t.flatten() for t in ya]), torch.cat([t.flatten() for t in yb])
    torch.testing.assert_close(ya, yb, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-9, atol=1e-9)
    for (n, pa), pb in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-7, atol=1e-8, msg=lambda m: f"{n}: {m}")
    for (n, ba), bb in zip(model.named_buffers(), ref.buffers()):
        torch.testing.assert_close(ba, bb, rtol=1e-9, atol=1e-9, msg=lambda m: f"{n}: {m}")


ZOO = [
    ("lenet5", lambda: models.lenet5(), (2, 1, 32, 32)),
    ("lenet5_relu_max", lambda: models.lenet5(activation="relu", pooling="max"), (2, 1, 32, 32)),
    ("alexnet_paper", lambda: models.alexnet_paper(num_classes=10, dropout=0.0), (1, 3, 224, 224)),
    ("alexnet_paper_groups", lambda: models.alexnet_paper(num_classes=10, groups=2, dropout=0.0), (1, 3, 224, 224)),
    ("alexnet", lambda: models.alexnet(num_classes=10, dropout=0.0), (1, 3, 64, 64)),
    ("vgg11_bn", lambda: models.vgg11_bn(num_classes=10, dropout=0.0), (2, 3, 32, 32)),
    ("googlenet", lambda: models.googlenet(num_classes=10, init_weights=True, dropout=0.0, dropout_aux=0.0), (2, 3, 64, 64)),
    ("resnet18", lambda: models.resnet18(num_classes=10), (2, 3, 32, 32)),
    ("resnet50", lambda: models.resnet50(num_classes=10, zero_init_residual=True), (2, 3, 32, 32)),
    ("cnn", lambda: models.CNN(3, [8, "M", ("conv", 16, 3, 1, 1), ("lrn", 3), ("avg", 2)], 5, hidden=[12], batch_norm=True, input_size=16), (2, 3, 16, 16)),
]


@pytest.mark.parametrize("name,make,shape", ZOO, ids=[z[0] for z in ZOO])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_model_matches_torch_reference(name, make, shape, train):
    torch.manual_seed(0)
    _check_parity(make(), torch.randn(shape), train)


def test_googlenet_training_outputs_namedtuple():
    m = models.googlenet(num_classes=7, init_weights=False)
    out = m(torch.randn(2, 3, 64, 64))
    assert isinstance(out, models.GoogLeNetOutputs)
    assert [t.shape for t in out] == [(2, 7)] * 3
    m.eval()
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    m2 = models.googlenet(num_classes=7, aux_logits=False, init_weights=False)
    assert m2.aux1 is None and m2(torch.randn(2, 3, 64, 64)).shape == (2, 7)


# ---- pynn-only compute ----

# aten ops that would mean a layer fell back to torch's own kernels.
FORBIDDEN = {
    "convolution", "convolution_backward", "_convolution", "conv2d", "mkldnn_convolution",
    "max_pool2d", "max_pool2d_with_indices", "max_pool2d_with_indices_backward",
    "avg_pool2d", "avg_pool2d_backward", "_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward",
    "adaptive_avg_pool2d", "mean", "native_batch_norm", "native_batch_norm_backward",
    "_native_batch_norm_legit", "_native_batch_norm_legit_functional", "_native_batch_norm_legit_no_training",
    "batch_norm", "cudnn_batch_norm", "relu", "relu_", "threshold_backward", "sigmoid", "sigmoid_backward",
    "tanh", "tanh_backward", "leaky_relu", "leaky_relu_backward", "_softmax", "_softmax_backward_data",
    "_log_softmax", "_log_softmax_backward_data", "addmm", "mm", "bmm", "matmul", "linear",
    "native_dropout", "native_dropout_backward", "bernoulli", "bernoulli_", "nll_loss", "nll_loss_forward",
    "nll_loss2d_forward", "mse_loss", "cross_entropy_loss", "pow", "avg_pool3d", "sum",
}


class _Recorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name,make,shape", [z for z in ZOO if z[0] in
                                             ("lenet5", "alexnet_paper", "vgg11_bn", "googlenet", "resnet18", "resnet50", "cnn")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_forward_and_backward_dispatch_no_torch_compute(name, make, shape):
    torch.manual_seed(0)
    model = make().train()
    x = torch.randn(shape)
    target = torch.randint(0, 5, (shape[0],))
    with _Recorder() as rec:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = pynn.functional.cross_entropy(logits, target)
        loss.backward()
    used = rec.ops & FORBIDDEN
    assert not used, f"{name} dispatched torch compute ops: {sorted(used)}"


# ---- convert / revert ----

def test_convert_and_revert_round_trip():
    torch.manual_seed(0)
    model = models.resnet18(num_classes=10)
    pynn.revert(model)  # every layer now a torch.nn one, as torchvision builds it
    assert not any(type(m).__module__.startswith("pynn.nn") for m in model.modules())
    model.add_module("extra", torch.nn.Sequential(torch.nn.GELU()))
    model.layer1[0].conv1.weight.requires_grad_(False)
    model.eval()
    calls = []
    handle = model.layer2[0].bn1.register_forward_hook(lambda m, i, o: calls.append(type(m).__module__))
    params_before = dict(model.named_parameters())
    tracked_before = model.bn1.num_batches_tracked.item()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)

    report = pynn.convert(model)
    converted = {n for n, _ in report.converted}
    assert {"", "conv1", "bn1", "fc", "layer2.0.downsample.0"} - {""} <= converted
    assert [(n, c) for n, c, _ in report.unsupported] == [("extra.0", "GELU")]
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Sequential, models.ResNet)) or name.startswith("extra"):
            continue
        if not list(m.children()):
            assert type(m).__module__.startswith("pynn.nn"), name
    assert dict(model.named_parameters()) == params_before          # the same Parameter objects
    assert model.layer1[0].conv1.weight.requires_grad is False
    assert not model.training and not model.layer3[1].bn2.training
    with torch.no_grad():
        got = model(x)
    torch.testing.assert_close(got, expected)
    assert calls == ["torch.nn.modules.batchnorm", "pynn.nn.batchnorm"]  # the hook survived
    model.train()
    model(x)
    assert model.bn1.num_batches_tracked.item() == tracked_before + 1

    back = pynn.revert(model)
    assert len(back.converted) == len(report.converted)
    assert not any(type(m).__module__.startswith("pynn.nn") for m in model.modules())
    handle.remove()


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        pynn.convert("resnet")


# ---- training on real data ----

def test_lenet5_learns_handwritten_digits():
    torch.manual_seed(0)
    x, y = pynn.data.load_digits()
    x = torch.from_numpy(x)
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    y = torch.from_numpy(y.copy())
    perm = torch.randperm(len(y))
    x, y = x[perm], y[perm]
    n_val = len(y) // 5
    xv, yv, xt, yt = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    model = models.lenet5(activation="tanh", pooling="avg")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(8):
        model.train()
        for i in range(0, len(yt), 64):
            opt.zero_grad()
            loss = pynn.functional.cross_entropy(model(xt[i:i + 64]), yt[i:i + 64])
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    assert acc >= 0.95, f"validation accuracy {acc:.3f}"


@pytest.mark.parametrize("cls,args,shape", [
    (torch.nn.LSTM, (3, 5, 2), (4, 2, 3)), (torch.nn.RNN, (3, 5), (4, 2, 3)),
    (torch.nn.LSTMCell, (3, 5), (2, 3)), (torch.nn.RNNCell, (3, 5), (2, 3)),
    (torch.nn.MaxPool2d, (3, 2), (1, 2, 9, 9)), (torch.nn.BatchNorm2d, (2,), (3, 2, 4, 4)),
    (torch.nn.LocalResponseNorm, (3,), (1, 4, 5, 5)), (torch.nn.Dropout, (0.0,), (4, 3)),
])
def test_convert_and_revert_single_layers(cls, args, shape):
    torch.manual_seed(0)
    layer = cls(*args)
    x = torch.randn(shape)
    first = lambda out: out[0] if isinstance(out, tuple) else out  # noqa: E731
    expected = first(layer(x)).detach()
    assert len(pynn.convert(layer).converted) == 1
    assert type(layer).__module__.startswith("pynn.nn")
    torch.testing.assert_close(first(layer(x)), expected, rtol=1e-5, atol=1e-6)
    pynn.revert(layer)
    assert type(layer) is cls
    torch.testing.assert_close(first(layer(x)), expected, rtol=1e-5, atol=1e-6)
