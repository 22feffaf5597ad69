"""``livepuppet download``: a published checkpoint into checkpoint/."""

from __future__ import annotations

import argparse

from rich.console import Console

console = Console(stderr=True)


def download(args: argparse.Namespace) -> int:
    from livepuppet.hub.download import ensure_checkpoint
    from livepuppet.hub.registry import get_entry

    path = ensure_checkpoint(get_entry(args.name))
    console.print(f"[green]{path}[/] is ready; next: livepuppet run --source face.png")
    return 0
