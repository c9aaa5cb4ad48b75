"""Evaluating and predicting from checkpoints, and the pseudo-label statistics."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from mile_engine.checkpoints import RunCheckpointer
from mile_engine.config.schema import SettingsError
from mile_engine.data.tiles import to_model_input
from mile_engine.metrics import METRIC_NAMES
from mile_engine.reports import inference as inf
from mile_engine.reports import inspection
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny
from tests.helpers.trained import TrainedRun, sure_checkpoint, train_tiny


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    return train_tiny(tmp_path_factory.mktemp("runs"), lr=0.005)


def test_eval_reproduces_recorded_metrics(run: TrainedRun) -> None:
    loaded = inf.load_model(run.checkpoint)
    assert loaded.recorded is not None and loaded.teacher is not None
    rhos = [float(r) for r in run.sweep]
    rows = inf.evaluate_checkpoint(loaded, rhos)
    for row in rows:
        expected = run.sweep[str(row["rho"])]
        for name in METRIC_NAMES:
            assert row[name] == pytest.approx(expected[name], abs=1e-9), name
    first = rows[0]
    for name in (*METRIC_NAMES, "ref_f1_all", "ref_f1_label", "map", "map_classes_left_out"):
        assert first[name] == pytest.approx(run.recorded[name], abs=1e-9), name
    assert {row["map"] for row in rows} == {first["map"]}  # mAP reads no threshold


def test_threshold_sweep_is_monotone_in_coverage(run: TrainedRun) -> None:
    rhos = [0.02, 0.05, 0.1, 0.25, 0.5, 0.75, 0.95]
    rows = inf.evaluate_checkpoint(inf.load_model(run.checkpoint), rhos)
    coverage = [r["coverage"] for r in rows]
    assert all(a >= b for a, b in zip(coverage, coverage[1:], strict=False))
    assert all(c >= 1.0 for c in coverage)  # the argmax is always predicted


def test_eval_settings_allow_data_changes_and_refuse_model_changes(run: TrainedRun) -> None:
    saved = run.trainer.settings.to_dict()
    settings = inf.eval_settings(saved, {"val_size": 32, "lr": 9.0}, ["rho=0.1"])
    assert (settings.val_size, settings.rho, settings.lr) == (32, 0.1, saved["lr"])
    with pytest.raises(SettingsError, match="belongs to the checkpoint"):
        inf.eval_settings(saved, None, ["k_t=7"])
    with pytest.raises(SettingsError):
        inf.eval_settings(saved, None, ["model=resnet18"])


def _save_grid(image: torch.Tensor, path: Path) -> Path:
    Image.fromarray(image.numpy(), mode="L").save(path)
    return path


def test_predict_png_matches_the_models_own_logits(run: TrainedRun, tmp_path: Path) -> None:
    loaded = inf.load_model(run.checkpoint)
    source = run.trainer.source
    images, paths = [], []
    for i in range(4):
        image, _, _ = source.val_sample(i)  # type: ignore[attr-defined]
        images.append(image)
        paths.append(_save_grid(image, tmp_path / f"grid{i}.png"))
    got = inf.predict_files(loaded, paths, rho=0.1)
    x = to_model_input(torch.stack(images), loaded.settings.image_size)
    logits = inf.run_model(loaded.student, x, loaded.device, loaded.dtype)
    expected = inf.label_sets(logits, 0.1, True, loaded.class_names)
    for result, labels in zip(got, expected, strict=True):
        assert result.error is None
        assert [lab.index for lab in result.labels] == [lab.index for lab in labels]
        assert [lab.prob for lab in result.labels] == pytest.approx([lab.prob for lab in labels])
        probs = [lab.prob for lab in result.labels]
        assert probs == sorted(probs, reverse=True)


def test_predict_returns_the_classes_the_model_is_sure_of_and_reports_bad_files(
    run: TrainedRun, tmp_path: Path
) -> None:
    ck = sure_checkpoint(run.checkpoint, tmp_path / "sure" / "sure.pt", {7: 6.0, 2: 3.0})
    loaded = inf.load_model(ck)
    image, _, _ = run.trainer.source.val_sample(0)  # type: ignore[attr-defined]
    png = _save_grid(image, tmp_path / "a.png")
    jpeg = tmp_path / "b.jpg"
    Image.fromarray(image.numpy(), mode="L").resize((60, 60)).convert("RGB").save(jpeg)
    corrupt = tmp_path / "c.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    results = inf.predict_files(loaded, [png, tmp_path / "missing.png", jpeg, corrupt])
    assert [lab.name for lab in results[0].labels] == ["7", "2"]
    assert results[0].labels[0].prob > 0.99
    assert results[1].error is not None and "no such file" in results[1].error
    assert [lab.name for lab in results[2].labels] == ["7", "2"]
    assert results[3].error is not None and "not a readable image" in results[3].error
    assert results[3].to_json()["error"] == results[3].error


def test_softmax_sets_hold_the_argmax_alone() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.9], [1.0, 0.0, 0.0]])
    sets = inf.label_sets(logits, 0.01, False, ["a", "b", "c"])
    assert [[lab.name for lab in s] for s in sets] == [["b"], ["a"]]
    assert sets[0][0].prob == pytest.approx(torch.softmax(logits[0], 0)[1].item())


def test_pseudo_label_table_matches_a_per_image_count(run: TrainedRun) -> None:
    loaded = inf.load_model(run.checkpoint)
    assert loaded.teacher is not None
    source = run.trainer.source
    rho = 0.3
    table = inspection.pseudo_label_table(loaded.teacher, source, rho, loaded.device, loaded.dtype,
                                   max_images=40)
    assert table.images == 40
    added = torch.zeros(10, dtype=torch.int64)
    correct = torch.zeros(10, dtype=torch.int64)
    pairs = torch.zeros(10, 10)
    batch = next(iter(source.val_batches(40)))
    logits = inf.run_model(loaded.teacher, batch.images, loaded.device, loaded.dtype)
    assert batch.real is not None
    for i in range(40):  # the reference: one image at a time
        label = int(batch.labels[i])
        for c in (torch.sigmoid(logits[i]) > rho).nonzero().flatten().tolist():
            if c != label:
                added[c] += 1
                correct[c] += int(batch.real[i, c])
                pairs[label, c] += 1
    assert torch.equal(table.added, added)
    assert torch.equal(table.correct, correct)
    assert torch.equal(table.with_label, pairs)
    rows = table.rows(3)
    assert [r["added"] for r in rows] == sorted([r["added"] for r in rows], reverse=True)


def test_class_names_of_each_dataset(tmp_path: Path) -> None:
    assert inf.class_names(tiny()) == [str(d) for d in range(10)]
    fashion = inf.class_names(tiny(dataset="fashion-mnist"))
    assert fashion[0] == "T-shirt/top" and fashion[9] == "Ankle boot"
    train = tmp_path / "ILSVRC" / "train"
    for wnid in ("n01443537", "n01440764"):
        (train / wnid).mkdir(parents=True)
    (tmp_path / inf.SYNSET_FILE).write_text("n01440764 tench, Tinca tinca\n"
                                            "n01443537 goldfish, Carassius auratus\n")
    settings = dataclasses.replace(tiny(), dataset="imagenet", model="resnet18",
                                   data_path=str(train))
    names = inf.class_names(settings)
    assert names[:2] == ["n01440764 tench", "n01443537 goldfish"]
    assert len(names) == 1000 and names[2] == "class-2"


def test_imagenet_input_is_resized_cropped_and_normalised(tmp_path: Path) -> None:
    path = tmp_path / "photo.webp"
    Image.new("RGB", (500, 300), (124, 116, 104)).save(path)
    settings = dataclasses.replace(tiny(), dataset="imagenet", model="resnet18")
    x = inf.image_input(path, settings)
    assert x.shape == (3, 224, 224)
    assert x.abs().max() < 0.05  # the ImageNet mean colour normalises to about zero


def test_live_inspection_copies_the_trainers_weights(tmp_path: Path) -> None:
    trainer = Trainer(tiny(checkpoint_path=str(tmp_path)), tmp_path)
    view = inspection.Inspection.from_trainer(trainer)
    for name, value in trainer.student.state_dict().items():
        assert torch.equal(view.student.state_dict()[name], value)
    assert isinstance(trainer.student.fc, nn.Linear) and isinstance(view.student.fc, nn.Linear)
    trainer.student.fc.bias.data += 1.0  # training moves on; the copy does not
    assert not torch.equal(view.student.fc.bias, trainer.student.fc.bias)
    assert view.refresh(timeout=0.01)
    assert torch.equal(view.student.fc.bias, trainer.student.fc.bias)
    sample = view.sample(3)
    assert sample.image.shape == (24, 24) and sample.pseudo is not None
    assert math.isfinite(sample.prediction[0].prob)


def test_checkpoint_at_start_loads_for_inspection(tmp_path: Path) -> None:
    trainer = Trainer(tiny(checkpoint_path=str(tmp_path)), tmp_path)
    saved = RunCheckpointer(tmp_path, 3).save(trainer, "request")
    view = inspection.Inspection.from_checkpoint(Path(saved.path))
    assert view.size == 64 and view.global_step == 0
    assert view.sample(64).index == 0  # indices wrap around


def test_live_inspection_of_a_bf16_run_runs_the_trainers_layout(tmp_path: Path) -> None:
    # Under CPU bf16 the trainer's networks are channels_last (oneDNN's fast bf16 path);
    # the inspector's copies must be too.
    trainer = Trainer(tiny(checkpoint_path=str(tmp_path), precision="bf16"), tmp_path)
    assert isinstance(trainer.student.conv1, nn.Conv2d)
    assert trainer.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    view = inspection.Inspection.from_trainer(trainer)
    for copy in (view.student, view.teacher):
        assert copy is not None and isinstance(copy.conv1, nn.Conv2d)
        assert copy.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert math.isfinite(view.sample(0).prediction[0].prob)
