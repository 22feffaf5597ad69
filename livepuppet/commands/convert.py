"""``livepuppet convert``: an original checkpoint, read and checked, into a model folder."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from livepuppet.commands.options import ConvertOptions
from livepuppet import outputs
from livepuppet.paths import models_dir

console = Console(stderr=True)


def model_name(checkpoint: Path) -> str:
    """'vox-adv-cpk.pth.tar' -> 'vox-adv-cpk': the default model folder name."""
    name = checkpoint.name
    for suffix in (".tar", ".pth", ".pt", ".ckpt"):
        name = name.removesuffix(suffix)
    return name or "model"


def convert_checkpoint(checkpoint: Path, out: Path | None = None, config: str | None = None,
                       precision: str = "fp32", batch: int | None = 1,
                       size: tuple[int, int] | None = None, *, infer_on_mismatch: bool = False,
                       targets: tuple[str, ...] | None = None, numerics: str | None = None) -> Path:
    """Read, check and convert a checkpoint; returns the model folder.

    ``infer_on_mismatch``: when ``config`` is unknown or does not fit the
    checkpoint, read the architecture off the checkpoint instead of failing,
    keeping the config's frame size when it has one (first runs: a registry
    entry's preset names the published model, a mirror may hold another one).
    ``numerics``: how the model samples (livepuppet.fomm.numerics; None: the default, ``original``).
    """
    from livepuppet.fomm.numerics import DEFAULT

    numerics = numerics or DEFAULT
    from livepuppet.fomm import config as cfgmod
    from livepuppet.fomm.checkpoint import check_finite, load_checkpoint
    from livepuppet.errors import ConfigError
    from livepuppet.quiet import import_tensorflow

    import_tensorflow()  # before the conversion modules import it the noisy way (a first run comes here from run)

    start = time.perf_counter()
    out = out or models_dir() / model_name(checkpoint)
    outputs.check(out, conversion_inputs(checkpoint, config))
    ckpt = load_checkpoint(checkpoint)
    check_finite(ckpt)
    try:
        cfg = cfgmod.resolve(config, (ckpt.generator, ckpt.kp_detector))
        cfgmod.validate(cfg, ckpt.generator, ckpt.kp_detector, source=str(checkpoint))
    except ConfigError:
        if config is None or not infer_on_mismatch:
            raise
        try:
            shape = cfgmod.resolve(config).frame_shape
        except ConfigError:
            shape = None
        cfg = cfgmod.infer(ckpt.generator, ckpt.kp_detector)
        if shape is not None:
            cfg = cfg.with_frame_shape(*shape)
        console.print(f"{checkpoint.name} does not match the {config!r} config; "
                      "using the architecture read off the checkpoint")
    if size is not None:
        cfg = cfg.with_frame_shape(size[1], size[0])
    cfg.validate_frame_shape()
    from livepuppet.conversion.export import build, check_destination
    from livepuppet.conversion.targets import DEFAULT_TARGETS

    check_destination(out)
    console.print(f"converting {checkpoint.name}: {cfg.num_kp} keypoints, {cfg.frame_shape[1]}x{cfg.frame_shape[0]}, "
                  f"{precision}, batch {batch if batch else 'dynamic'}, {numerics} numerics")
    build(ckpt, cfg, out, targets=targets or DEFAULT_TARGETS, precision=precision, batch=batch,
          numerics=numerics, console=console)
    console.print(f"total {time.perf_counter() - start:.1f} s")
    return out


def conversion_inputs(checkpoint: Path, config: str | None) -> list[Path]:
    """What a conversion reads: the checkpoint, and the config when it is a file (not a preset's name)."""
    return [checkpoint] + ([Path(config)] if config and Path(config).is_file() else [])


def convert(args: ConvertOptions) -> int:
    if args.web:  # the page goes elsewhere than the model it is made of: checked before the work
        model = args.out or models_dir() / model_name(args.checkpoint)
        outputs.check(args.web, [*conversion_inputs(args.checkpoint, args.config), model])
    targets = tuple(args.targets) + (("int8",) if args.fast else ()) + (("web",) if args.web else ())
    out = convert_checkpoint(args.checkpoint, args.out, args.config, args.precision, args.batch, args.size,
                             targets=targets, numerics=args.numerics)
    if args.web:
        from livepuppet.web.site import export

        console.print(f"[green]web page written to {export(out, args.web)}[/]")
    console.print(f"next: {next_command(out)}")
    return 0


def next_command(model: Path) -> str:
    """The command that runs a converted model: no --model for the default one where `run` looks for it."""
    from livepuppet.errors import LivepuppetError
    from livepuppet.hub.registry import get_entry
    from livepuppet.paths import MODELS_FOLDER, homes

    try:
        default = model_name(Path(get_entry().filename))
        found = any(model.absolute() == home / MODELS_FOLDER / default for home, _ in homes())
    except LivepuppetError:  # an unreadable registry: name the model, which always works
        found = False
    return "livepuppet run --source face.png" + ("" if found else f" --model {model}")


