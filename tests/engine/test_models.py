"""Backbones: every torchvision family builds, trains a step, reloads; weights from disk
and from torch's cache; input specs; errors that say what to do."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from typer.testing import CliRunner

from mile_engine.config.schema import MODELS, SettingsError
from mile_engine.model_inputs import MIN_SIDE
from mile_engine.models import (
    build_model,
    find_head,
    input_spec,
    resolve_enum,
    torchvision_name,
)
from tests.helpers.hostile import call_unblocked, make_fifo
from tests.helpers.settings import tiny

C = 7
# One model per torchvision family, the side it trains at here (the smallest it takes,
# or a small one), and its classifier head written out by hand from torchvision's
# definitions: the oracle for `find_head` and for where the sigmoid bias goes.
FAMILIES = [
    ("resnet18", 32, "fc"),
    ("convnext_tiny", 32, "classifier.2"),
    ("efficientnet_b0", 32, "classifier.1"),
    ("mobilenet_v2", 32, "classifier.1"),
    ("mobilenet_v3_small", 32, "classifier.3"),
    ("vit_b_16", 32, "heads.head"),
    ("swin_t", 32, "head"),
    ("maxvit_t", 224, "classifier.5"),
    ("densenet121", 32, "classifier"),
    ("squeezenet1_1", 32, "classifier.1"),
    ("shufflenet_v2_x0_5", 32, "fc"),
    ("regnet_y_400mf", 32, "fc"),
    ("mnasnet0_5", 32, "classifier.1"),
    ("googlenet", 32, "fc"),
    ("inception_v3", 75, "fc"),
    ("alexnet", 63, "classifier.6"),
    ("vgg11", 32, "classifier.6"),
]


def _module(model: nn.Module, name: str) -> nn.Module:
    return dict(model.named_modules())[name]


def _bias(model: nn.Module, name: str) -> torch.Tensor:
    bias = _module(model, name).bias
    assert isinstance(bias, torch.Tensor)
    return bias


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any attempt to download fails the test; the hub cache is an empty temp folder."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


@pytest.mark.parametrize(("name", "side", "head"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_builds_trains_and_reloads(
    name: str, side: int, head: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    notes: list[str] = []
    model = build_model(name, C, sigmoid_head=True, image_size=side, report=notes.append)
    assert find_head(model)[0] == head
    if name == "maxvit_t":  # its head has no bias: said, not silently skipped
        assert _module(model, head).bias is None
        assert "has no bias" in notes[0]
    else:
        assert torch.equal(_bias(model, head), torch.full((C,), -math.log(C)))
    # Auxiliary classifiers are off: nothing but the one head is trained.
    assert not [n for n, _ in model.named_parameters() if n.startswith(("aux", "AuxLogits"))]
    if name == "maxvit_t":  # only at 224 px: a forward pass of one image, to stay quick
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, side, side)).shape == (1, C)
    else:
        model.train()
        logits = model(torch.randn(2, 3, side, side))
        assert logits.shape == (2, C)
        # Binary cross-entropy on random labels: every trainable tensor gets a gradient.
        target = torch.randint(0, 2, (2, C)).float()
        nn.functional.binary_cross_entropy_with_logits(logits, target).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    path = tmp_path / "saved.pt"
    torch.save(model.state_dict(), path)
    lines: list[str] = []
    again = build_model(name, C, sigmoid_head=True, weights=str(path), report=lines.append,
                        image_size=side)
    saved = torch.load(path, weights_only=True)
    assert again.state_dict().keys() == saved.keys()
    assert all(torch.equal(v, saved[k]) for k, v in again.state_dict().items())
    assert any(f"head {head!r} loaded" in line for line in lines), lines


def test_every_listed_model_gets_a_head_of_c_classes() -> None:
    # All of torchvision's list, built without memory on the meta device (RegNet computes
    # its widths with tensors, which meta cannot; its family is built for real above).
    listed = torchvision.models.list_models(module=torchvision.models)
    assert set(MODELS) == {"resnet18-10", *listed}
    names = [n for n in MODELS if not n.startswith("regnet")]
    for name in names:
        with torch.device("meta"):
            model = build_model(name, C, sigmoid_head=True, image_size=224)
        head_name, head = find_head(model)
        weight = head.weight
        assert isinstance(weight, torch.Tensor), name
        assert weight.shape[0] == C, name
        # The head is the network's last parametrised layer: nothing trainable after it.
        names_after = [n for n, _ in model.named_parameters()]
        assert names_after[-1].startswith(head_name + "."), (name, names_after[-1])


def test_legacy_names_build_exactly_what_they_built() -> None:
    # resnet18-10 is torchvision's resnet18 with 10 classes, the same random draws, and
    # the sigmoid bias -log(10) on fc: the reference tests depend on every bit of it.
    for name, classes, factory in [("resnet18-10", 10, torchvision.models.resnet18),
                                   ("resnet50", 1000, torchvision.models.resnet50)]:
        torch.manual_seed(3)
        ours = build_model(name, classes, sigmoid_head=True)
        after_ours = torch.rand(1)
        torch.manual_seed(3)
        theirs = factory(weights=None, num_classes=classes)
        after_theirs = torch.rand(1)
        with torch.no_grad():
            theirs.fc.bias.fill_(-math.log(classes))
        assert torch.equal(after_ours, after_theirs)  # the random stream moved alike
        for key, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (name, key)


def test_weights_with_another_head_load_the_body_and_say_so(tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet18(num_classes=1000)
    imagenet.fc.bias.data.fill_(5.0)
    path = tmp_path / "imagenet.pth"
    # Wrapped as this project's checkpoints and DDP's keys are: both are unwrapped.
    torch.save({"student": {f"module.{k}": v for k, v in imagenet.state_dict().items()}}, path)
    lines: list[str] = []
    model = build_model("resnet18", C, sigmoid_head=True, weights=str(path), report=lines.append)
    body = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("fc.")}
    for key, value in body.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert isinstance(model.fc, nn.Linear)
    assert model.fc.weight.shape == (C, 512)
    assert torch.equal(model.fc.bias, torch.full((C,), -math.log(C)))  # fresh head, sigmoid init
    assert lines[0] == f"weights {path}: {len(body)} tensors loaded."
    assert "'fc' starts fresh for 7 classes" in lines[1] and "1000" in lines[1]


def test_weights_of_another_model_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(num_classes=C).state_dict(), path)
    with pytest.raises(SettingsError) as info:
        build_model("resnet18", C, sigmoid_head=False, weights=str(path))
    message = str(info.value)
    assert str(path) in message and "do not fit" in message
    assert "fit nowhere" in message  # resnet50's bottleneck tensors


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "no such file"), (b"not a zip", "not a readable state dict"),
     ({"epoch": 3}, "holds no state dict")],
)
def test_unreadable_weights_files_are_one_line_errors(
    content: object, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "w.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(SettingsError, match=fragment) as info:
        build_model("resnet18", C, sigmoid_head=False, weights=str(path))
    assert "\n" not in str(info.value)


def test_densenet_files_with_torchvision_old_key_names_load(tmp_path: Path) -> None:
    # torchvision's DenseNet files spell "norm1" as "norm.1"; torchvision renames them.
    source = torchvision.models.densenet121(num_classes=C)
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])", r"\1.\2", k): v
           for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert any(".norm.1." in k for k in old)
    path = tmp_path / "densenet.pth"
    torch.save(old, path)
    model = build_model("densenet121", C, sigmoid_head=False, weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_weights_name_absent_from_the_cache_names_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        build_model("resnet18", C, sigmoid_head=False, weights="ResNet18_Weights.IMAGENET1K_V1")
    message = str(info.value)
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message and "never download" in message


def test_weights_name_in_the_cache_loads_without_downloading(tmp_path: Path) -> None:
    torch.manual_seed(2)
    published = torchvision.models.resnet18(num_classes=1000)
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # The file name of torchvision's ResNet18_Weights.IMAGENET1K_V1 (its download URL).
    torch.save(published.state_dict(), cache / "resnet18-f37072fd.pth")
    for weights in ("ResNet18_Weights.IMAGENET1K_V1", "DEFAULT", "IMAGENET1K_V1"):
        lines: list[str] = []
        model = build_model("resnet18-10", C, sigmoid_head=False, weights=weights,
                            report=lines.append)
        assert torch.equal(model.get_parameter("layer4.1.conv2.weight"),
                           published.get_parameter("layer4.1.conv2.weight"))
        assert isinstance(model.fc, nn.Linear) and model.fc.out_features == C
        assert "ResNet18_Weights.IMAGENET1K_V1" in lines[0] and str(cache) in lines[0]


def test_weights_names_of_other_models_or_unknown_members_are_refused() -> None:
    with pytest.raises(SettingsError, match="for another model.*ResNet18_Weights"):
        resolve_enum("ResNet50_Weights.IMAGENET1K_V2", "resnet18")
    with pytest.raises(SettingsError, match="no such member.*IMAGENET1K_V1"):
        resolve_enum("IMAGENET2K", "resnet18")
    with pytest.raises(SettingsError, match="not a torchvision weights name"):
        resolve_enum("Nope_Weights.X", "resnet18")


def test_unknown_model_suggests_the_nearest_names() -> None:
    with pytest.raises(SettingsError, match="convnext_tiny"):
        torchvision_name("convnext_tinny")
    with pytest.raises(SettingsError, match="efficientnet_b0"):
        build_model("efficientnet-b0", C, sigmoid_head=False)
    assert torchvision_name("resnet18-10") == "resnet18"


def test_input_spec_follows_the_weights_and_image_size() -> None:
    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = input_spec(tiny(dataset="folder", model="resnet50"))
    assert (spec.image_size, spec.resize_size, spec.mean, spec.std) == (
        224, 256, imagenet_mean, imagenet_std)
    # torchvision's documented recipes: ResNet-50 V2 evaluates at resize 232 / crop 224,
    # ViT-H/14 SWAG end-to-end at 518 / 518.
    spec = input_spec(tiny(model="resnet50", weights="ResNet50_Weights.IMAGENET1K_V2"))
    assert (spec.image_size, spec.resize_size) == (224, 232)
    spec = input_spec(tiny(model="resnet50", weights="IMAGENET1K_V2", image_size=112))
    assert (spec.image_size, spec.resize_size) == (112, 116)
    spec = input_spec(tiny(model="vit_h_14", weights="ViT_H_14_Weights.IMAGENET1K_SWAG_E2E_V1"))
    assert (spec.image_size, spec.resize_size) == (518, 518)
    # A weights file carries no recipe: ImageNet's.
    spec = input_spec(tiny(model="resnet50", weights="/some/file.pth", image_size=64))
    assert (spec.image_size, spec.resize_size, spec.mean) == (64, 73, imagenet_mean)


@pytest.mark.parametrize("prefix", sorted(MIN_SIDE))
def test_smallest_input_sides_are_what_torch_accepts(prefix: str) -> None:
    name = next(n for n in MODELS if n.startswith(prefix))
    side = MIN_SIDE[prefix]
    model = build_model(name, C, sigmoid_head=False).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, side, side)).shape == (1, C)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, side - 1, side - 1))
    with pytest.raises(SettingsError, match=f"at least {side}x{side}"):
        build_model(name, C, sigmoid_head=False, image_size=side - 1)


def test_input_sides_a_transformer_cannot_take_are_refused() -> None:
    with pytest.raises(SettingsError, match="multiple of its 16-pixel patches.*24"):
        build_model("vit_b_16", C, sigmoid_head=False, image_size=24)
    with pytest.raises(SettingsError, match="multiple of 224"):
        build_model("maxvit_t", C, sigmoid_head=False, image_size=32)


def test_headless_run_with_another_backbone_records_class_names(tmp_path: Path) -> None:
    from mile_engine.reports.inference import load_model
    from mile_engine.runstore.manifest import load_checkpoint
    from mile_tui.cli import app

    weights = tmp_path / "start.pth"
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=1000).state_dict(), weights)
    args = ["run", "--headless", "--set", "model=mobilenet_v3_small", "--set", "image_size=32",
            "--set", f"weights={weights}", "--set", f"checkpoint_path={tmp_path / 'runs'}"]
    for key in ("batch_size=8", "val_size=64", "k_t=3", "k_s=2", "epoch_num=1",
                "device=cpu", "num_workers=0"):
        args += ["--set", key]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"weights {weights}: " in result.output and "tensors loaded" in result.output
    assert "'classifier.3' starts fresh for 10 classes" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    (checkpoint,) = run_dir.glob("*.pt")
    expected = [str(d) for d in range(10)]  # the digits' names
    assert load_checkpoint(checkpoint)["class_names"] == expected
    loaded = load_model(checkpoint)
    assert loaded.class_names == expected
    head_weight = find_head(loaded.student)[1].weight
    assert isinstance(head_weight, torch.Tensor) and head_weight.shape[0] == 10


def test_checkpoint_class_names_recorded_or_derived(tmp_path: Path) -> None:
    from mile_engine.reports.inference import checkpoint_class_names
    from mile_engine.runstore.files import CheckpointError

    path = tmp_path / "c.pt"
    folder = tiny(dataset="folder", data_path="a", val_path="b", model="resnet18")
    assert checkpoint_class_names({"class_names": ["cat", "dog"]}, folder, path) == [
        "cat", "dog"]
    # Older checkpoints: the built-in datasets name their classes; a folder run without
    # names gets one placeholder per row of its head.
    assert checkpoint_class_names({}, tiny(), path) == [str(d) for d in range(10)]
    student = torchvision.models.resnet18(num_classes=3).state_dict()
    assert checkpoint_class_names({"student": student}, folder, path) == [
        "class-0", "class-1", "class-2"]
    with pytest.raises(CheckpointError, match="not a list of names"):
        checkpoint_class_names({"class_names": [1, 2]}, folder, path)


def test_googlenet_weights_skip_the_auxiliary_heads(tmp_path: Path) -> None:
    # torchvision's GoogLeNet file holds two auxiliary classifiers; the run has none, and
    # its inputs are re-normalised inside the network as torchvision does for them.
    published = torchvision.models.googlenet(num_classes=1000, aux_logits=True,
                                             init_weights=False)
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    url = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.url
    torch.save(published.state_dict(), cache / url.rsplit("/", 1)[1])
    lines: list[str] = []
    model = build_model("googlenet", C, sigmoid_head=False, weights="DEFAULT",
                        report=lines.append)
    assert model.aux1 is None and model.aux2 is None and model.transform_input
    assert torch.equal(model.inception5b.branch1.conv.weight,
                       published.inception5b.branch1.conv.weight)
    aux = sum(1 for k in published.state_dict() if k.startswith(("aux1.", "aux2.")))
    assert f"{aux} of auxiliary heads skipped" in lines[0]


def test_vit_weights_at_another_side_get_interpolated_position_embeddings(
    tmp_path: Path,
) -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    from mile_engine.models import _fit_position_embeddings

    def tiny_vit(side: int) -> VisionTransformer:
        return VisionTransformer(image_size=side, patch_size=8, num_layers=1, num_heads=2,
                                 hidden_dim=8, mlp_dim=8, num_classes=C)

    trained = tiny_vit(32)  # a 4x4 grid of patches, plus the class token
    with torch.no_grad():
        trained.encoder.pos_embedding[:, 1:] = 0.25  # a flat grid stays flat
        trained.encoder.pos_embedding[:, 0] = torch.arange(8.0)
    lines: list[str] = []
    model = tiny_vit(64)
    state = _fit_position_embeddings(model, trained.state_dict(), "w", lines.append)
    model.load_state_dict(state)
    pos = model.encoder.pos_embedding
    assert pos.shape == (1, 65, 8)
    assert torch.equal(pos[0, 0], torch.arange(8.0))  # the class token is kept as it is
    assert torch.allclose(pos[0, 1:], torch.full((64, 8), 0.25))
    assert lines == ["position embeddings interpolated from 4x4 to 8x8 patches for 64x64 "
                     "inputs."]
    unchanged = trained.state_dict()
    assert _fit_position_embeddings(tiny_vit(32), unchanged, "w", None) is unchanged


def _poisoned(value: float) -> dict[str, torch.Tensor]:
    state = torchvision.models.resnet18(num_classes=C).state_dict()
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = value
    return state


@pytest.mark.parametrize(("kind", "fragment"), [
    ("nan", r"'layer2.0.conv1.weight' holds NaN or infinite values"),
    ("inf", r"'layer2.0.conv1.weight' holds NaN or infinite values"),
    ("fifo", r"not a regular file \(a named pipe\)"),
    ("device", r"not a regular file \(a device\)"),
])
def test_weights_that_cannot_train_or_would_block_are_refused(
    kind: str, fragment: str, tmp_path: Path
) -> None:
    path = tmp_path / "w.pth"
    fifos: list[Path] = []
    if kind == "nan":
        torch.save(_poisoned(math.nan), path)
    elif kind == "inf":
        torch.save(_poisoned(-math.inf), path)
    elif kind == "fifo":
        fifos.append(make_fifo(path))
    else:
        path = Path("/dev/zero")
    with pytest.raises(SettingsError, match=fragment) as info:
        call_unblocked(lambda: build_model("resnet18", C, sigmoid_head=False,
                                           weights=str(path)), fifos)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
