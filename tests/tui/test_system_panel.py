"""The system panel: waiting text, CPU and memory, the GPU or "no GPU"."""

from __future__ import annotations

from textual.app import App, ComposeResult

from mile_engine import events as ev
from mile_tui.widgets.system import WAITING, SystemPanel

GIB = 2**30


class PanelApp(App[None]):
    """The panel alone, as the run screen holds it."""

    def compose(self) -> ComposeResult:
        yield SystemPanel(id="system")


def shown(app: App[None]) -> str:
    return str(app.query_one(SystemPanel).render())


async def test_waiting_then_gpu_then_cpu_only() -> None:
    app = PanelApp()
    async with app.run_test(size=(60, 8)) as pilot:
        panel = app.query_one(SystemPanel)
        assert shown(app) == WAITING
        assert panel.border_title == "System"

        panel.show(ev.SystemStats(1200, 153.4, int(1.2 * GIB), 87.0, 10 * GIB, 80 * GIB))
        await pilot.pause()
        assert shown(app) == "CPU 153% · RSS 1.2 GB\nGPU 87% · mem 10 GB / 80 GB"
        assert panel.border_subtitle == "step 1,200"

        # torch's counters without nvidia-ml-py: memory, no utilisation, no total.
        panel.show(ev.SystemStats(1300, 99.6, 700 * 2**20, None, 3 * GIB // 2, None))
        await pilot.pause()
        assert shown(app) == "CPU 100% · RSS 700 MB\nGPU –% · mem 1.5 GB"

        panel.show(ev.SystemStats(1400, 5.0, 512 * 1024, None, None, None))
        await pilot.pause()
        assert shown(app) == "CPU 5% · RSS 512 KB · no GPU"

        panel.clear()
        await pilot.pause()
        assert shown(app) == WAITING and panel.border_subtitle == ""


async def test_fits_a_narrow_column() -> None:
    # The run screen's right column at 80x24 is about 40 cells: both lines must fit.
    app = PanelApp()
    async with app.run_test(size=(40, 6)) as pilot:
        app.query_one(SystemPanel).show(
            ev.SystemStats(9, 1234.0, 123 * GIB, 100.0, 79 * GIB, 80 * GIB))
        await pilot.pause()
        lines = shown(app).split("\n")
        assert lines == ["CPU 1234% · RSS 123 GB", "GPU 100% · mem 79 GB / 80 GB"]
        assert all(len(line) <= 38 for line in lines)
