"""``livepuppet web``: serve the browser page for a model on 127.0.0.1, or export it as a static folder."""

from __future__ import annotations

from livepuppet.commands.options import WebOptions
from livepuppet.web.site import export, folder_size


def run(args: WebOptions) -> int:
    from rich.console import Console

    from livepuppet.commands.default_model import resolve_model

    console = Console(stderr=True)
    model = resolve_model(args.model)
    if args.export:
        out = export(model, args.export)
        console.print(f"web page for {model.name} written to {out} ({folder_size(out) / 1e6:.1f} MB); "
                      "serve it from any static host (see its _headers file for WebAssembly threads)")
        return 0
    from livepuppet.web.page_server import make_server

    server = make_server(model, args.port, console)
    console.print(f"livepuppet web: {model.name} at [bold]{server.url}/[/] (this machine only); Ctrl+C stops it",
                  soft_wrap=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
