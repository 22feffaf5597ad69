"""``run/animate --remote URL``: connect, decide where keypoints run and what stands in while the server is away.

* A local model of the server's checkpoint (``--model``, or the default model
  when it is already here) computes the keypoints and renders while the
  server is away.
* Otherwise the server's two keypoint models are fetched once into the user
  cache folder (checked by hash) and frames are held while it is away; a local
  model of another checkpoint cannot stand in, as its keypoints mean other
  things to the server's generator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from livepuppet.commands.options import RemoteOptions
from livepuppet.errors import LivepuppetError
from livepuppet.modelfolder.read import read_folder
from livepuppet.modelfolder.schema import MANIFEST
from livepuppet.remote import protocol as P
from livepuppet.remote.client import RemoteClient
from livepuppet.remote.handshake import http_url
from livepuppet.runtime.engines.remote import RemoteEngine


def local_model(args: RemoteOptions) -> Path | None:
    """``--model``, else the default model if it is already converted here (never downloaded for a remote run)."""
    if args.model is not None:
        if not (args.model / MANIFEST).is_file():
            raise LivepuppetError(f"{args.model} is not a livepuppet model folder; pass the folder `convert` wrote")
        return args.model
    from livepuppet.commands.default_model import converted_default_model

    return converted_default_model()


def _open_local(folder: Path, args: RemoteOptions):
    from livepuppet.runtime.choose import open_engine

    return open_engine(folder, args.engine, args.threads, exact=args.exact, fast=args.fast, device=args.device)


def open_remote(args: RemoteOptions, say: Callable[[str], object]) -> RemoteEngine:
    """The engine for ``--remote``; a one-line error when there is neither a server nor a local model."""
    token = args.token or os.environ.get(P.TOKEN_ENV) or None
    folder = local_model(args)
    local_id = P.model_id(read_folder(folder)) if folder is not None else None
    client = RemoteClient(args.remote, token, args.remote_format, args.remote_quality, say=say)
    if not client.start():
        if folder is None:
            client.close()
            raise LivepuppetError(f"cannot reach a livepuppet server at {client.url} ({client.reason}); start "
                                  "`livepuppet serve` there, or pass --model for a local stand-in")
        say(f"remote: cannot reach {client.url} yet ({client.reason}); rendering locally until it is up")
        client.expected_model = local_id
        engine = _open_local(folder, args)
        return RemoteEngine(client, engine, engine)
    welcome = client.welcome
    if folder is not None and local_id == welcome["model"]["id"]:
        engine = _open_local(folder, args)
        return RemoteEngine(client, engine, engine)
    if folder is not None:
        say(f"remote: the local model {folder.name} is not the server's ({welcome['model']['name']}): keypoints "
            "run on the server's keypoint models, and frames are held while the server is away")
    return RemoteEngine(client, _keypoint_engine(client, token, args.threads))


def _keypoint_engine(client: RemoteClient, token: str | None, threads: int | None):
    from livepuppet.remote.keypoint_models import fetch_keypoint_models, keypoint_engine

    try:
        return keypoint_engine(fetch_keypoint_models(http_url(client.url), client.welcome, token), threads)
    except BaseException:
        client.close()
        raise
