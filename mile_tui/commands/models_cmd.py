"""`mile-tui models`: the backbones `model` accepts, and which weights are on disk."""

from __future__ import annotations

from typing import Annotated

import typer

from mile_tui.options import FLAG, fail


def weights_lines(name: str) -> list[str]:
    """One line per torchvision weights of model `name`: its enum name, its input recipe
    and whether its file is in torch's hub cache (where a run can load it)."""
    from torchvision import models as tv_models

    from mile_engine.model_inputs import cache_file, torchvision_name

    enum = tv_models.get_model_weights(torchvision_name(name))
    lines = []
    for member in enum:
        path = cache_file(member)
        preset = member.transforms()
        where = f"cached: {path}" if path.is_file() else "not in the cache"
        lines.append(f"  {enum.__name__}.{member.name}  (crop {preset.crop_size[0]}, "
                     f"resize {preset.resize_size[0]}; {where})")
    return lines


def models(
    pattern: Annotated[
        str, typer.Argument(metavar="TEXT", show_default=False,
                            help="Only the names containing TEXT.")
    ] = "",
    weights: Annotated[
        bool, typer.Option("--weights", metavar=FLAG,
                           help="Also list each model's torchvision weights and whether "
                           "their files are in torch's cache.")
    ] = False,
) -> None:
    """List the names the `model` setting accepts: resnet18-10 and every torchvision
    classification model. Weights are never downloaded by a run: `--weights` says which
    files are already in torch's cache ($TORCH_HOME/hub/checkpoints)."""
    from mile_engine.config.schema import MODELS

    names = [n for n in MODELS if pattern.lower() in n.lower()]
    if not names:
        near = MODELS.nearest(pattern)
        fail(f"no model name contains {pattern!r}"
             + (f"; did you mean {', '.join(near)}?" if near else "."))
    for name in names:
        typer.echo(name)
        if weights and name != "resnet18-10":  # resnet18-10 is resnet18's 10-class head
            for line in weights_lines(name):
                typer.echo(line)
