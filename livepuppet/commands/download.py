"""``livepuppet download``: a published checkpoint into checkpoint/."""

from __future__ import annotations

from rich.console import Console

from livepuppet.commands.options import DownloadOptions

console = Console(stderr=True)


def download(args: DownloadOptions) -> int:
    from livepuppet.hub.download import ensure_checkpoint
    from livepuppet.hub.registry import get_entry

    path = ensure_checkpoint(get_entry(args.name))
    console.print(f"[green]{path}[/] is ready; next: livepuppet run --source face.png")
    return 0
