"""mile_engine: MILe training without any user interface.

Settings (`config`), data (`data`), backbones (`models`), schemas (`schemas`), metrics
(`metrics`), the trainer and its events. Nothing here imports Textual, Typer or mile_tui.
"""

__version__ = "0.1.0"
