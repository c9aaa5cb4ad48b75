"""The training process's load, sampled at each log interval for the System panel."""

from __future__ import annotations

import warnings

import psutil
import torch

from mile_engine import events as ev


class SystemSampler:
    """Samples CPU, memory and (on CUDA) GPU use of this process into `SystemStats`.

    CPU is the percent of one core this process used since the previous sample (psutil's
    `cpu_percent` between calls; above 100 with several busy threads). GPU utilisation is
    the device's (torch.cuda.utilization, read through NVML); GPU memory is the device's
    memory in use and its total, as nvidia-smi shows them. Without CUDA, or where NVML
    cannot be read, the GPU figures are None.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the interval
        self._nvml = device.type == "cuda"

    def sample(self, global_step: int) -> ev.SystemStats:
        """The load now (CPU since the previous call)."""
        cpu = self._process.cpu_percent(None)
        rss = self._process.memory_info().rss
        util: float | None = None
        used: int | None = None
        total: int | None = None
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            used = total - free
            if self._nvml:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        util = float(torch.cuda.utilization(self.device))
                except Exception:  # no NVML (a container without it): say nothing, once
                    self._nvml = False
        return ev.SystemStats(global_step, float(cpu), int(rss), util, used, total)
