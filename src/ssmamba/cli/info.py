"""``ssmamba info``: what this installation can do, and which scan backend ``auto`` picks."""

from __future__ import annotations

import platform

import click


@click.command()
def info() -> None:
    """Print versions, threads and the selective-scan backends available here."""
    import torch

    from ssmamba._version import __version__
    from ssmamba.ops import backend_report, choose_backend

    click.echo(f"ssmamba   {__version__}")
    click.echo(f"python    {platform.python_version()} ({platform.machine()})")
    click.echo(f"torch     {torch.__version__} (CUDA {'available' if torch.cuda.is_available() else 'not available'})")
    click.echo(f"threads   {torch.get_num_threads()}")
    click.echo("scan backends:")
    for name, ok, why in backend_report():
        click.echo(f"  {name:<6} {'yes' if ok else 'no ':<4} {why}")
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        name, why = choose_backend(torch.device(device))
        click.echo(f"auto on {device}: {name} ({why})")
