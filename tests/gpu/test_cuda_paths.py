"""The CUDA paths: bf16 and fp16 training, channels_last, resume across devices, and JPEG
decoding on the GPU.

They run on CUDA where it is available. Elsewhere (CI has no GPU) they run on the CPU
what the CPU has too (bf16 autocast, the batched JPEG decoder), so that the tests
themselves stay checked, and skip what only CUDA has (fp16 with a loss scaler,
channels_last, nvjpeg, a move between devices). `MILE_TEST_DEVICE` picks the device.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from mile_engine import events as ev
from mile_engine.data.image_files import JpegFiles, collate_jpeg, val_transform
from mile_engine.data.imagenet import ImageNetSource
from mile_engine.data.jpeg import decode_batch
from mile_engine.runstore.manifest import load_checkpoint
from mile_engine.session import open_run
from tests.helpers.images import picture
from tests.helpers.settings import tiny

DEVICE = os.environ.get("MILE_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
ON_CUDA = DEVICE.startswith("cuda")

pytestmark = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(), reason="MILE_TEST_DEVICE asks for CUDA"
)
cuda_only = pytest.mark.skipif(not ON_CUDA, reason="a CUDA-only path; no CUDA device here")


def finished(trainer_events: list[ev.Event]) -> ev.RunEnded:
    (ended,) = [e for e in trainer_events if isinstance(e, ev.RunEnded)]
    assert ended.status == "finished", ended.error
    return ended


def test_a_bf16_run_trains_evaluates_saves_and_resumes(tmp_path: Path) -> None:
    seen: list[ev.Event] = []
    settings = tiny(device=DEVICE, precision="bf16", epoch_num=1,
                    checkpoint_path=str(tmp_path / "runs"))
    trainer = open_run(settings, [seen.append])
    assert trainer.device.type == torch.device(DEVICE).type
    assert trainer.dtype == torch.bfloat16
    if ON_CUDA:  # the layout cuDNN's fastest convolutions want
        assert isinstance(trainer.student.conv1, nn.Conv2d)
        weight = trainer.student.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last)
    trainer.train()
    finished(seen)
    (record,) = trainer.history
    assert all(math.isfinite(record[k]) for k in ("real_f1", "top1", "coverage"))

    more: list[ev.Event] = []
    resumed = open_run(settings, [more.append], resume=trainer.run_dir,
                       overrides=["epoch_num=2"])
    resumed.train()
    finished(more)
    assert [h["generation"] for h in resumed.history] == [1, 2]


@cuda_only
def test_a_cuda_checkpoint_resumes_on_the_cpu(tmp_path: Path) -> None:
    settings = tiny(device=DEVICE, epoch_num=1, checkpoint_path=str(tmp_path / "runs"))
    trainer = open_run(settings)
    trainer.train()
    seen: list[ev.Event] = []
    resumed = open_run(settings, [seen.append], resume=trainer.run_dir,
                       overrides=["epoch_num=2", "device=cpu"])
    assert resumed.device.type == "cpu"
    resumed.train()
    finished(seen)
    notes = [e.text for e in seen if isinstance(e, ev.Message)]
    assert any("drawn on cuda" in n and "on cpu" in n for n in notes), notes


@cuda_only
def test_fp16_scales_the_loss_and_resumes_in_either_direction(tmp_path: Path) -> None:
    settings = tiny(device=DEVICE, precision="fp16", epoch_num=1,
                    checkpoint_path=str(tmp_path / "fp16"))
    trainer = open_run(settings)
    trainer.train()
    assert trainer.scaler.is_enabled()
    saved = load_checkpoint(sorted(trainer.run_dir.glob("*.pt"))[-1])
    assert saved["scaler"]["scale"] > 0
    to_bf16 = open_run(settings, resume=trainer.run_dir,
                       overrides=["epoch_num=2", "precision=bf16"])
    assert to_bf16.train().status == "finished"

    bf16 = tiny(device=DEVICE, precision="bf16", epoch_num=1,
                checkpoint_path=str(tmp_path / "bf16"))
    first = open_run(bf16)
    first.train()
    to_fp16 = open_run(bf16, resume=first.run_dir, overrides=["epoch_num=2", "precision=fp16"])
    assert to_fp16.train().status == "finished"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    root = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (h, w) in enumerate([(375, 500), (500, 375), (333, 500), (64, 96)]):
        paths.append(str(root / f"{i}.JPEG"))
        picture(h, w).save(paths[-1], quality=95)
    picture(300, 400).convert("L").save(root / "grey.JPEG", quality=95)
    return [*paths, str(root / "grey.JPEG")]


def test_device_decoding_matches_the_cpu_decoder(photos: list[str]) -> None:
    files = JpegFiles("", photos, val_transform(224), 224, substitute=False, train=False)
    payloads, boxes, flips, _, _ = collate_jpeg([files[i] for i in range(len(files))])
    device = torch.device(DEVICE)
    on_device, ok, failures = decode_batch(payloads, boxes, flips, 224, device)
    on_cpu, _, _ = decode_batch(payloads, boxes, flips, 224, torch.device("cpu"))
    assert on_device.device.type == device.type and ok.all() and not failures
    # nvjpeg's and libjpeg-turbo's inverse DCTs round differently: a level or so.
    difference = (on_device.cpu() - on_cpu).abs().mean(dim=(1, 2, 3))
    assert difference.max() < 2.0, difference


def test_imagenet_batches_arrive_on_the_device(tmp_path: Path) -> None:
    for c in range(2):
        folder = tmp_path / "train" / f"n0000000{c}"
        folder.mkdir(parents=True)
        for i in range(4):
            picture(90 + 7 * i, 120).save(folder / f"{i}.JPEG", quality=90)
    Image.new("CMYK", (50, 40), (0, 200, 200, 0)).save(folder / "cmyk.JPEG")
    val = tmp_path / "val" / "n00000000"
    val.mkdir(parents=True)
    for entry in range(3):
        picture(100, 140).save(val / f"ILSVRC2012_val_{entry + 1:08d}.JPEG", quality=90)
    (tmp_path / "real.json").write_text("[[0], [0, 1], []]")
    device = torch.device(DEVICE)
    source = ImageNetSource(
        tmp_path / "train", tmp_path / "val", tmp_path / "real.json", batch_size=9,
        image_size=64, num_workers=2, device=device, seed=0, decode="auto",
    )
    assert source.decode == ("device" if ON_CUDA else "workers")
    batch = source.train_batch()  # the CMYK file goes through PIL in a worker
    assert batch.images.device.type == device.type and batch.images.shape == (9, 3, 64, 64)
    assert batch.labels.device.type == device.type and not source.skipped_files
    (val_batch,) = list(source.val_batches(8))
    assert val_batch.real is not None and val_batch.real.device.type == device.type
    assert val_batch.real.sum(dim=1).tolist() == [1, 2, 0]
