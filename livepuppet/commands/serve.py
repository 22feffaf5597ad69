"""``livepuppet serve``: render avatars for remote sessions (``run --remote``, the page's ``?server=``).

Alone (the default) it is one uvicorn process on this machine's engine; with
``--ray`` the same app is deployed on a Ray Serve cluster, one replica per GPU
(:mod:`livepuppet.remote.ray_app`). Anything but a loopback address needs a
token, and TLS comes from ``--certfile/--keyfile`` or a reverse proxy in front
(docs/remote-protocol.md).
"""

from __future__ import annotations

import os

from rich.console import Console

from livepuppet.commands.options import ServeOptions
from livepuppet.errors import LivepuppetError

MIN_TOKEN = 16  # characters: guessing one over the network must be hopeless


def server_policy(args: ServeOptions):
    """The server's policy from the command line, with the token rule applied (a one-line error otherwise)."""
    from livepuppet.remote import protocol as P
    from livepuppet.remote.server import ServerPolicy
    from livepuppet.web.server import is_loopback

    token = args.token or os.environ.get(P.TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN:
        raise LivepuppetError(f"the token is {len(token)} characters; use at least {MIN_TOKEN}, for example "
                              "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
    if token is None and not is_loopback(args.host):
        raise LivepuppetError(f"serving on {args.host} (not this machine only) needs a token: pass --token or set "
                              f"{P.TOKEN_ENV} (at least {MIN_TOKEN} characters), and give it to clients")
    if bool(args.certfile) != bool(args.keyfile):
        raise LivepuppetError("TLS needs both --certfile and --keyfile")
    return ServerPolicy(token=token, max_sessions=args.max_sessions, idle_timeout=float(args.idle_timeout),
                        allow_origins=tuple(args.allow_origin or ()))


def run(args: ServeOptions) -> int:
    from livepuppet.commands.default_model import resolve_model

    console = Console(stderr=True)
    options = server_policy(args)
    model = resolve_model(args.model)
    if args.ray:
        from livepuppet.remote.ray_app import serve_on_ray

        return serve_on_ray(model, args, options, console)
    from livepuppet.remote import protocol as P
    from livepuppet.remote.server import build
    from livepuppet.runtime.choose import open_engine
    from livepuppet.web.server import AsgiServer, bind, is_loopback

    sock = bind(args.host, args.port)  # a port in use fails now, not after the model loads
    try:
        engine = open_engine(model, args.engine, args.threads, exact=args.exact, fast=args.fast, device=args.device)
        server_state = build(model, engine, options, console)
        server = AsgiServer(server_state.app(), args.host, certfile=args.certfile, keyfile=args.keyfile,
                            ws_max_size=server_state.welcome["limits"]["portrait_bytes"], sock=sock)
    except BaseException:
        sock.close()
        raise
    scheme = "wss" if args.certfile else "ws"
    host = f"[{args.host}]" if ":" in args.host else args.host
    reach = "this machine only" if is_loopback(args.host) else "token required"
    console.print(f"livepuppet serve: {model.name} on {server_state.renderer.engine.label} at "
                  f"[bold]{scheme}://{host}:{server.port}[/] ({reach}; endpoint {P.PATH}, up to "
                  f"{options.max_sessions} sessions); Ctrl+C stops it", soft_wrap=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
