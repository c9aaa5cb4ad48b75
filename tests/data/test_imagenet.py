"""ImageNet on a generated miniature: scanning, layouts, ReaL mapping, decoding, metrics.

The miniature has three classes of small JPEGs, a PNG named .JPEG, a grey JPEG and a
corrupt file in training; validation images named like ILSVRC's whose solid colour
encodes their ReaL entry, in three flat variants (LOC_val_solution.csv three folders up,
val_labels.txt, no labels) and in class sub-folders; a ReaL file with empty entries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from mile_engine import events as ev
from mile_engine.config.schema import SettingsError
from mile_engine.config.validation import build_settings
from mile_engine.data import imagenet_files
from mile_engine.data.image_files import decode_rgb
from mile_engine.data.imagenet import (
    ImageNetSource,
    scan_train,
    scan_val,
)
from mile_engine.model_inputs import MEAN, STD
from mile_engine.session import open_run
from mile_engine.trainer import Trainer
from tests.helpers.settings import tiny

CLASSES = ["n01440764", "n01443537", "n01484850"]
SIZE = 32
# ReaL entry -> label set; entries 2, 5 and 8 are empty, as 3,163 of the real ones are.
REAL = [[0], [0, 1], [], [2, 500], [1], [], [0, 1, 2], [999], [], [1]]
# Validation images present: ReaL entry -> original label. Entry 7 is a corrupt file,
# entry 9 a PNG named .JPEG; entries 5 and 8 have no file.
VAL_LABELS = {0: 0, 1: 1, 2: 0, 3: 2, 4: 1, 6: 2, 7: 0, 9: 0}
CORRUPT_VAL = 7
PNG_VAL = 9


def val_name(entry: int) -> str:
    return f"ILSVRC2012_val_{entry + 1:08d}.JPEG"


def colour(entry: int) -> tuple[int, int, int]:
    """The solid colour of validation image `entry`: red encodes the entry."""
    return (20 * entry + 15, 128, 64)


def write_val_image(path: Path, entry: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if entry == CORRUPT_VAL:
        path.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
        return
    image = Image.new("RGB", (40, 30), colour(entry))
    image.save(path, format="PNG" if entry == PNG_VAL else "JPEG", quality=95)


@dataclasses.dataclass(frozen=True)
class Mini:
    train: Path
    real: Path
    flat_loc: Path
    flat_txt: Path
    flat_none: Path
    folders: Path


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> Mini:
    root = tmp_path_factory.mktemp("mini-imagenet")
    gen = torch.Generator().manual_seed(0)
    train = root / "train"
    for c, wnid in enumerate(CLASSES):
        for i in range(4):
            pixels = torch.randint(0, 256, (36, 44, 3), generator=gen, dtype=torch.uint8)
            path = train / wnid / f"{wnid}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.numpy()).save(path, format="JPEG")
        (train / wnid / "readme.txt").write_text("not an image")
        if c == 0:
            Image.new("RGB", (30, 30), (1, 2, 3)).save(train / wnid / "png.JPEG", format="PNG")
        if c == 1:
            Image.new("L", (30, 30), 77).save(train / wnid / "grey.JPEG", format="JPEG")
        if c == 2:
            (train / wnid / "corrupt.JPEG").write_bytes(b"garbage" * 10)
    real = root / "real.json"
    real.write_text(json.dumps(REAL))

    loc_root = root / "kaggle"
    flat_loc = loc_root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    lines = ["ImageId,PredictionString"] + [
        f"{val_name(e)[:-5]},{CLASSES[c]} 1 2 30 40 {CLASSES[c]} 3 4 20 20"
        for e, c in VAL_LABELS.items()
    ]
    flat_loc.mkdir(parents=True)
    (loc_root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")

    flat_txt = root / "flat_txt"
    flat_txt.mkdir()
    # Both line forms: "<file> <wnid>" and "<file> <index>".
    (flat_txt / "val_labels.txt").write_text(
        "".join(f"{val_name(e)} {CLASSES[c] if e % 2 else c}\n" for e, c in VAL_LABELS.items())
    )
    flat_none = root / "flat_none" / "val"
    folders = root / "folders"
    for entry, c in VAL_LABELS.items():
        for flat in (flat_loc, flat_txt, flat_none):
            write_val_image(flat / val_name(entry), entry)
        write_val_image(folders / CLASSES[c] / val_name(entry), entry)
    return Mini(train, real, flat_loc, flat_txt, flat_none, folders)


def source(mini: Mini, val: Path, **changes: object) -> ImageNetSource:
    options: dict[str, object] = {
        "batch_size": 4, "image_size": SIZE, "num_workers": 0, "device": torch.device("cpu"),
        "seed": 0, "warn": lambda text: None, "decode": "workers",
    }
    options.update(changes)
    return ImageNetSource(mini.train, val, mini.real, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- scanning


def test_scan_train_sorted_classes_and_cached_index(mini: Mini, private_cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    reports: list[tuple[str, int, int]] = []
    index = scan_train(mini.train, progress=lambda *r: reports.append(r))
    assert index.classes == CLASSES
    assert len(index.paths) == 15 and not any(p.endswith(".txt") for p in index.paths)
    assert index.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert reports[-1] == (f"scanning {mini.train}", 3, 3)
    assert len(list((private_cache / "mile-tui").glob("imagenet-index-*.json"))) == 1

    # The second start reads the cache: no folder is listed again.
    def no_listing(folder: Path) -> list[str]:
        raise AssertionError(f"listed {folder} again")

    monkeypatch.setattr(imagenet_files, "_scan_folder", no_listing)
    cached = scan_train(mini.train, progress=lambda *r: reports.append(r))
    assert cached.paths == index.paths and torch.equal(cached.labels, index.labels)
    assert "cached" in reports[-1][0]


def test_a_changed_class_folder_invalidates_the_cache(tmp_path: Path) -> None:
    for wnid in CLASSES[:2]:
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / wnid / "a.JPEG")
    assert len(scan_train(tmp_path).paths) == 2
    Image.new("RGB", (8, 8)).save(tmp_path / CLASSES[1] / "b.JPEG")
    folder = tmp_path / CLASSES[1]
    stat = folder.stat()
    os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert len(scan_train(tmp_path).paths) == 3


@pytest.mark.parametrize("layout", ["flat_loc", "flat_txt", "flat_none", "folders"])
def test_scan_val_maps_by_name_in_every_layout(mini: Mini, layout: str) -> None:
    val = scan_val(getattr(mini, layout), CLASSES)
    entries = sorted(VAL_LABELS)
    assert val.real_index.tolist() == entries
    assert [Path(p).name for p in val.paths] == [val_name(e) for e in entries]
    expected = [-1] * len(entries) if layout == "flat_none" else [VAL_LABELS[e] for e in entries]
    assert val.labels.tolist() == expected
    if layout == "flat_loc":
        assert val.label_source.endswith("LOC_val_solution.csv")


def test_val_labels_txt_one_label_per_line(tmp_path: Path) -> None:
    for entry in (0, 1, 2):
        write_val_image(tmp_path / val_name(entry), entry)
    (tmp_path / "val_labels.txt").write_text(f"{CLASSES[2]}\n1\n\n{CLASSES[0]}\n")
    assert scan_val(tmp_path, CLASSES).labels.tolist() == [2, 1, 0]


# ---------------------------------------------------------------------- errors


def _settings_error(call: object, *args: object) -> str:
    with pytest.raises(SettingsError) as info:
        call(*args)  # type: ignore[operator]
    return str(info.value)


def test_train_folder_errors(tmp_path: Path) -> None:
    assert "does not exist" in _settings_error(scan_train, tmp_path / "nope")
    Image.new("RGB", (8, 8)).save(tmp_path / "flat.JPEG")
    assert "one sub-folder per class" in _settings_error(scan_train, tmp_path)
    (tmp_path / "n0").mkdir()
    assert "hold no images" in _settings_error(scan_train, tmp_path)


def test_val_folder_errors(tmp_path: Path, mini: Mini) -> None:
    bad = tmp_path / "names"
    write_val_image(bad / "picture_17.JPEG", 0)
    message = _settings_error(scan_val, bad, CLASSES)
    assert "picture_17.JPEG" in message and "ILSVRC2012_val_00000001.JPEG" in message

    mixed = tmp_path / "mixed"
    write_val_image(mixed / val_name(0), 0)
    write_val_image(mixed / CLASSES[0] / val_name(1), 1)
    assert "use one layout" in _settings_error(scan_val, mixed, CLASSES)

    unknown = tmp_path / "unknown"
    write_val_image(unknown / "n99999999" / val_name(0), 0)
    assert "n99999999" in _settings_error(scan_val, unknown, CLASSES)

    twice = tmp_path / "twice"
    write_val_image(twice / CLASSES[0] / val_name(3), 3)
    write_val_image(twice / CLASSES[1] / val_name(3), 3)
    assert "ILSVRC2012_val_00000004 appears more than once" in _settings_error(
        scan_val, twice, CLASSES)

    unlabelled = tmp_path / "unlabelled"
    for entry in (0, 1):
        write_val_image(unlabelled / val_name(entry), entry)
    (unlabelled / "val_labels.txt").write_text(f"{val_name(0)} {CLASSES[0]}\n")
    assert "no label for ILSVRC2012_val_00000002" in _settings_error(
        scan_val, unlabelled, CLASSES)
    (unlabelled / "val_labels.txt").write_text(f"{val_name(0)} cat\n")
    assert "'cat' is neither a class folder" in _settings_error(scan_val, unlabelled, CLASSES)


def test_real_json_too_short_for_the_validation_files(mini: Mini, tmp_path: Path) -> None:
    short = tmp_path / "real.json"
    short.write_text(json.dumps(REAL[:5]))
    with pytest.raises(SettingsError, match="5 entries but .*00000010 needs entry 9"):
        ImageNetSource(mini.train, mini.flat_loc, short, 4, SIZE, 0, torch.device("cpu"), 0)


def _garbled_copy(folder: Path, to: Path) -> Path:
    """`folder`'s tree with every file's bytes replaced: same names, nothing decodes."""
    for path in folder.rglob("*"):
        if path.is_file():
            target = to / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    return to


@pytest.mark.parametrize("broken", ["data_path", "val_path"])
def test_a_folder_where_nothing_decodes_is_refused_before_the_run_folder(
        mini: Mini, tmp_path: Path, broken: str) -> None:
    train, val = mini.train, mini.flat_none
    if broken == "data_path":
        train = _garbled_copy(mini.train, tmp_path / "train")
    else:
        val = _garbled_copy(mini.flat_none, tmp_path / "val")
    runs = tmp_path / "runs"
    settings = tiny(dataset="imagenet", model="resnet18", data_path=str(train),
                    val_path=str(val), real_path=str(mini.real), image_size=SIZE,
                    batch_size=4, num_workers=0, checkpoint_path=str(runs))
    with pytest.raises(SettingsError) as info:
        open_run(settings)
    message = str(info.value)
    assert message.startswith(f"{broken} '"), message
    assert re.search(r"none of the \d+ images tried can be decoded \(\S+", message), message
    assert not runs.exists() or not any(runs.iterdir())


def test_settings_need_the_three_paths_and_a_1000_class_model() -> None:
    with pytest.raises(SettingsError, match="needs data_path, val_path, real_path"):
        build_settings({"dataset": "imagenet", "model": "resnet18"})
    with pytest.raises(SettingsError, match='"resnet18" or "resnet50"'):
        build_settings({"dataset": "imagenet", "data_path": "a", "val_path": "b",
                        "real_path": "c"})


# ---------------------------------------------------------------------- decoding


def test_decode_whatever_the_extension_says(mini: Mini) -> None:
    png = decode_rgb(str(mini.train / CLASSES[0] / "png.JPEG"))
    grey = decode_rgb(str(mini.train / CLASSES[1] / "grey.JPEG"))
    assert png.mode == grey.mode == "RGB" and png.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(OSError):
        decode_rgb(str(mini.train / CLASSES[2] / "corrupt.JPEG"))


DECODERS = pytest.mark.parametrize("decode", ["workers", "device"])


@DECODERS
def test_corrupt_training_file_is_skipped_counted_and_reported(mini: Mini, decode: str) -> None:
    notes: list[str] = []
    src = source(mini, mini.flat_loc, batch_size=15, warn=notes.append, decode=decode)
    assert src.decode == decode
    batch = src.train_batch()  # one batch is the whole epoch: the corrupt file is met
    assert batch.real is None and batch.images.shape == (15, 3, SIZE, SIZE)
    assert batch.labels.bincount().tolist() == [5, 5, 5]  # replaced by its class-2 neighbour
    corrupt = str(mini.train / CLASSES[2] / "corrupt.JPEG")
    assert list(src.skipped_files) == [corrupt]
    assert any(corrupt in n and "1 so far" in n for n in notes)
    # Normalised with ImageNet's mean and standard deviation.
    assert float(batch.images.min()) > -2.2 and float(batch.images.max()) < 2.7


def test_flat_folder_without_labels_is_noted(mini: Mini) -> None:
    notes: list[str] = []
    source(mini, mini.flat_none, warn=notes.append)
    assert any("top-1 accuracy is unavailable" in n for n in notes)
    assert any("3 class folders, not 1000" in n for n in notes)


# ---------------------------------------------------------------------- validation batches


def entries_of(images: torch.Tensor) -> torch.Tensor:
    """Recover each validation image's ReaL entry from its red level."""
    red = (images[:, 0].mean(dim=(1, 2)) * STD[0] + MEAN[0]) * 255
    return ((red - 15) / 20).round().long()


@DECODERS
@pytest.mark.parametrize("layout", ["flat_loc", "folders"])
def test_val_batches_carry_the_real_set_of_each_file(mini: Mini, layout: str,
                                                     decode: str) -> None:
    src = source(mini, getattr(mini, layout), decode=decode)
    batches = list(src.val_batches(3))
    assert [len(b.labels) for b in batches] == [3, 3, 1]  # 8 files, the corrupt one dropped
    images = torch.cat([b.images for b in batches])
    entries = entries_of(images).tolist()
    assert entries == [0, 1, 2, 3, 4, 6, 9]
    real = torch.cat([b.real for b in batches if b.real is not None])
    assert real.dtype == torch.bool and real.shape == (7, 1000)
    for row, entry in zip(real, entries, strict=True):
        assert row.nonzero().flatten().tolist() == REAL[entry]
    assert not real[entries.index(2)].any()  # an empty ReaL entry is an all-False row
    labels = torch.cat([b.labels for b in batches]).tolist()
    assert labels == [VAL_LABELS[e] for e in entries]
    assert list(src.skipped_files) == [str(getattr(mini, layout).joinpath(
        *([CLASSES[0]] if layout == "folders" else []), val_name(CORRUPT_VAL)))]


@DECODERS
def test_validation_samples_are_the_files_of_the_validation_batches(mini: Mini,
                                                                    decode: str) -> None:
    """The inspector's single images: each file as its batch holds it, with its labels."""
    src = source(mini, mini.flat_loc, decode=decode)
    rows = torch.cat([b.images for b in src.val_batches(3)])
    decodable = [e for e in sorted(VAL_LABELS) if e != CORRUPT_VAL]
    for index, entry in enumerate(sorted(VAL_LABELS)):
        sample = src.validation_sample(index)
        if entry == CORRUPT_VAL:
            assert sample is None
            continue
        assert sample is not None
        assert torch.equal(sample.model_input, rows[decodable.index(entry)])
        assert sample.image.dtype == torch.uint8 and sample.image.shape == (SIZE, SIZE, 3)
        assert sample.label == VAL_LABELS[entry] and sample.real == REAL[entry]


# ---------------------------------------------------------------------- metrics


class ColourLookup(nn.Module):
    """A stand-in student whose logits are a fixed table row chosen by the image colour."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[entries_of(x)]


def fixed_logits() -> torch.Tensor:
    """Per ReaL entry: an argmax (+5) and extra classes at sigmoid 0.5 (> rho = 0.25)."""
    plan = {0: (0, []), 1: (0, [5]), 2: (0, [1]), 3: (1, [2, 500]), 4: (1, []),
            6: (2, [0]), 9: (0, [])}
    table = torch.full((10, 1000), -10.0)
    for entry, (top, extra) in plan.items():
        table[entry, top] = 5.0
        table[entry, extra] = 0.0
    return table


# Hand-computed from REAL, VAL_LABELS and fixed_logits(), rho = 0.25. Prediction sets:
# e0 {0} R{0} | e1 {0,5} R{0,1} | e2 {0,1} R{} | e3 {1,2,500} R{2,500} | e4 {1} R{1}
# e6 {2,0} R{0,1,2} | e9 {0} R{1}; labels e0 0, e1 1, e2 0, e3 2, e4 1, e6 2, e9 0.
EXPECTED = {
    "top1": 5 / 7,  # e0 e2 e4 e6 e9 (e2 counts: its ReaL set is empty, its label is not)
    "real_accuracy": 4 / 6,  # argmax in R: e0 e1 e4 e6, over the 6 non-empty sets
    "real_f1": (1 + 2 / 4 + 4 / 5 + 1 + 4 / 5 + 0) / 6,
    "real_precision": (1 + 1 / 2 + 2 / 3 + 1 + 1 + 0) / 6,
    "real_recall": (1 + 1 / 2 + 1 + 1 + 2 / 3 + 0) / 6,
    "coverage": (1 + 2 + 2 + 3 + 1 + 2 + 1) / 7,
    "ref_f1_all": (2 / 1001 + 4 / 1002 + 4 / 1002 + 2 / 1001 + 6 / 1003 + 2 / 1001) / 6,
    "ref_f1_label": (1 + 2 / 3 + 2 / 3 + 1 + 2 / 4 + 0) / 6,
}


def imagenet_settings(mini: Mini, val: Path, tmp_path: Path, decode: str = "auto") -> object:
    return tiny(dataset="imagenet", model="resnet18", data_path=str(mini.train),
                val_path=str(val), real_path=str(mini.real), image_size=SIZE, batch_size=4,
                num_workers=0, k_t=1, k_s=1, epoch_num=1, checkpoint_path=str(tmp_path),
                decode=decode)


@pytest.mark.parametrize(("layout", "decode"), [
    ("flat_loc", "workers"), ("folders", "workers"), ("flat_none", "workers"),
    ("flat_loc", "device"),
])
def test_every_metric_matches_hand_computed_values(mini: Mini, tmp_path: Path,
                                                   layout: str, decode: str) -> None:
    settings = imagenet_settings(mini, getattr(mini, layout), tmp_path, decode)
    trainer = Trainer(settings, tmp_path)  # type: ignore[arg-type]
    trainer.student = ColourLookup(fixed_logits())
    metrics = trainer.evaluate()
    expected = dict(EXPECTED)
    if layout == "flat_none":  # no original labels: top-1 and its reference are unknown
        expected["top1"] = expected["ref_f1_label"] = math.nan
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(metrics[name]), name
        else:
            assert metrics[name] == pytest.approx(value, abs=1e-9), name


# ---------------------------------------------------------------------- training


def test_one_generation_with_a_1000_class_head(mini: Mini, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    settings = imagenet_settings(mini, mini.folders, tmp_path)
    trainer = Trainer(settings, tmp_path, sinks=[seen.append])  # type: ignore[arg-type]
    ended = trainer.train()
    assert ended.status == "finished", ended.error
    assert trainer.student.fc.out_features == 1000  # type: ignore[union-attr]
    (record,) = trainer.history
    assert 0 <= record["real_f1"] <= 1 and 0 <= record["top1"] <= 1
    assert record["coverage"] >= 1
    assert any(isinstance(e, ev.Evaluated) for e in seen)
    assert trainer.source.state_dict() == {"seed": 0, "epoch": 0, "batches": 2}


@DECODERS
def test_resume_continues_the_data_order_exactly(mini: Mini, decode: str) -> None:
    first = source(mini, mini.flat_loc, decode=decode)
    for _ in range(5):  # 15 files, 3 batches an epoch: this crosses into epoch 1
        first.train_batch()
    state = first.state_dict()
    assert state == {"seed": 0, "epoch": 1, "batches": 2}
    second = source(mini, mini.flat_loc, seed=99, decode=decode)
    second.load_state_dict(state)
    for _ in range(3):
        torch.manual_seed(7)  # same crops and flips, so the images must match exactly
        a = first.train_batch()
        torch.manual_seed(7)
        b = second.train_batch()
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert first.state_dict() == second.state_dict() == {"seed": 0, "epoch": 2, "batches": 2}


@DECODERS
def test_worker_processes_report_skips_and_keep_the_order(mini: Mini, decode: str) -> None:
    workers = source(mini, mini.folders, num_workers=1, batch_size=15, decode=decode)
    batch = workers.train_batch()
    assert batch.images.shape == (15, 3, SIZE, SIZE)
    assert sum(len(b.labels) for b in workers.val_batches(4)) == 7
    assert len(workers.skipped_files) == 2  # the corrupt train file and the corrupt val file


def test_data_notes_reach_the_sinks_and_the_run_log(mini: Mini, tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    settings = imagenet_settings(mini, mini.flat_none, tmp_path)
    trainer = open_run(settings, [seen.append])  # type: ignore[arg-type]
    # Said while the trainer was built, before the run folder existed:
    notes = [e.text for e in seen if isinstance(e, ev.Message)]
    assert any("top-1 accuracy is unavailable" in n for n in notes)
    assert any(isinstance(e, ev.DataProgress) for e in seen)  # the folder scans
    assert trainer.train().status == "finished"
    log = (trainer.run_dir / "run.log").read_text()
    assert "top-1 accuracy is unavailable" in log and "3 class folders, not 1000" in log


def test_crop_whole_reaches_imagenet_validation(mini: Mini, private_cache: Path,
                                               tmp_path: Path) -> None:
    # Validation images with a left-to-right ramp: the whole of it and its centre differ.
    ramp = torch.arange(44, dtype=torch.uint8).mul(5).expand(36, 44)
    for entry, c in VAL_LABELS.items():
        path = tmp_path / "val" / CLASSES[c] / val_name(entry)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ramp.numpy()).convert("RGB").save(path, format="PNG")
    settings = tiny(dataset="imagenet", model="resnet18", data_path=str(mini.train),
                    val_path=str(tmp_path / "val"), real_path=str(mini.real),
                    image_size=SIZE, num_workers=0, batch_size=4, decode="workers",
                    crop="whole")
    whole = ImageNetSource.from_settings(settings, torch.device("cpu"), warn=lambda t: None)
    centre = ImageNetSource.from_settings(dataclasses.replace(settings, crop="random-resized"),
                                          torch.device("cpu"), warn=lambda t: None)
    assert (whole.crop, centre.crop) == ("whole", "random-resized")
    squeezed, cropped = (next(iter(s.val_batches(4))).images[0, 0] for s in (whole, centre))
    # The whole ramp spans more of the range than its centre, at either edge.
    assert squeezed[:, 0].mean() < cropped[:, 0].mean()
    assert squeezed[:, -1].mean() > cropped[:, -1].mean()
