"""The models livepuppet knows how to download.

Built-in entries are listed in :data:`BUILTIN_MODELS`. Users add mirrors or
whole models in a YAML file, ``$LIVEPUPPET_REGISTRY`` when set, else
``$XDG_CONFIG_HOME/livepuppet/models.yaml`` (``~/.config/livepuppet/models.yaml``)::

    models:
      vox-adv:                       # an existing name: merged
        urls: [https://my.mirror/vox-adv-cpk.pth.tar]   # tried first
      my-faces:                      # a new name: a new model
        filename: my-faces.pth.tar
        preset: vox-adv
        urls: [https://example.org/my-faces.pth.tar]
        md5: 0123456789abcdef0123456789abcdef

For a name that already exists, the file's URLs are tried before the built-in
ones, and ``filename``, ``preset`` and ``size`` replace the built-in values
when given. Giving ``md5`` or ``sha256`` (even ``null``) replaces *both*
built-in checksums, so that a mirror of a different copy of a model can be
described without inheriting a checksum that cannot match.

``$LIVEPUPPET_MIRRORS`` (base URLs separated by spaces) adds, for every model,
``<base>/<filename>`` in front of all other URLs.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from livepuppet import yamlfile
from livepuppet.errors import DownloadError

REGISTRY_ENV = "LIVEPUPPET_REGISTRY"
MIRRORS_ENV = "LIVEPUPPET_MIRRORS"
DEFAULT_MODEL = "vox-adv"

_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = ("filename", "preset", "urls", "md5", "sha256", "size")


@dataclass(frozen=True)
class ModelEntry:
    """One downloadable checkpoint.

    ``urls`` are tried in order. ``md5``/``sha256`` are lower-case hex digests
    of the complete file (``None``: not checked). ``size`` is the exact size in
    bytes when known; it only serves the progress bar.
    """

    name: str
    filename: str
    preset: str
    urls: tuple[str, ...]
    md5: str | None
    sha256: str | None
    size: int | None


BUILTIN_MODELS: dict[str, ModelEntry] = {
    "vox-adv": ModelEntry(
        name="vox-adv",
        filename="vox-adv-cpk.pth.tar",
        preset="vox-adv",
        urls=("https://openavatarify.s3-avatarify.com/weights/vox-adv-cpk.pth.tar",),
        md5="8a45a24037871c045fbb8a6a8aa95ebc",
        sha256=None,
        size=None,  # the exact size is not published
    ),
}
APPROXIMATE_SIZES = {"vox-adv-cpk.pth.tar": 228_000_000}  # bytes, for the first-run question only


def default_registry_path() -> Path:
    """``$XDG_CONFIG_HOME/livepuppet/models.yaml``, ``~/.config/...`` when unset."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "").strip()
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "livepuppet" / "models.yaml"


def registry_path() -> tuple[Path, bool]:
    """The user registry file and whether the user named it explicitly.

    A file named by ``$LIVEPUPPET_REGISTRY`` must exist; the default one may not.
    """
    value = os.environ.get(REGISTRY_ENV, "").strip()
    if value:
        return Path(value).expanduser(), True
    return default_registry_path(), False


def load_registry(config_path: str | os.PathLike[str] | None = None) -> dict[str, ModelEntry]:
    """Built-in entries, merged with the user's registry file and mirrors.

    ``config_path`` overrides the file lookup (it must then exist). Raises
    :class:`DownloadError` with a one-line message naming the file when the
    file is unreadable or malformed.
    """
    if config_path is not None:
        path, required = Path(config_path).expanduser(), True
    else:
        path, required = registry_path()

    entries = dict(BUILTIN_MODELS)
    for name, fields in _read_registry_file(path, required).items():
        if name in entries:
            entries[name] = _merge(entries[name], fields)
        else:
            entries[name] = _new_entry(path, name, fields)

    mirrors = _mirrors_from_env()
    if mirrors:
        entries = {
            name: replace(
                entry,
                urls=_unique(
                    [m + "/" + urllib.parse.quote(entry.filename) for m in mirrors]
                    + list(entry.urls)
                ),
            )
            for name, entry in entries.items()
        }
    return entries


def get_entry(name: str | None = None, config_path: str | os.PathLike[str] | None = None) -> ModelEntry:
    """The entry called ``name`` (default :data:`DEFAULT_MODEL`).

    An unknown name raises :class:`DownloadError` listing the known ones.
    """
    if name is None:
        name = DEFAULT_MODEL
    entries = load_registry(config_path)
    try:
        return entries[name]
    except KeyError:
        known = ", ".join(sorted(entries))
        raise DownloadError(f"unknown model {name!r}; known models: {known}") from None


# --------------------------------------------------------------------------
# reading and checking the user's file


def _read_registry_file(path: Path, required: bool) -> dict[str, dict[str, Any]]:
    """The validated ``models`` mapping of the file at ``path`` ({} if absent and optional)."""
    try:
        data = yamlfile.load(path, "model registry file", DownloadError)
    except FileNotFoundError:
        if required:
            raise DownloadError(f"model registry file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise DownloadError(f"cannot read model registry file {path}: {exc.strerror or exc}") from None

    def bad(what: str) -> DownloadError:
        return DownloadError(f"model registry file {path} is malformed: {what}")

    if data is None:
        return {}
    if not isinstance(data, dict):
        raise bad("expected a mapping with a 'models' key at the top level")
    unknown = [str(k) for k in data if k != "models"]
    if unknown:
        raise bad(f"unknown top-level key {unknown[0]!r} (only 'models' is allowed)")
    models = data.get("models")
    if models is None:
        return {}
    if not isinstance(models, dict):
        raise bad("'models' must map model names to their settings")

    result: dict[str, dict[str, Any]] = {}
    for name, fields in models.items():
        if not isinstance(name, str) or not name.strip():
            raise bad(f"model name {name!r} is not a non-empty string")
        if fields is None:
            fields = {}
        if not isinstance(fields, dict):
            raise bad(f"model {name!r} must be a mapping of settings")
        result[name] = _check_fields(name, fields, bad)
    return result


def _check_fields(name: str, fields: dict[Any, Any], bad) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in _ENTRY_KEYS:
            raise bad(f"model {name!r} has unknown key {key!r} (allowed: {', '.join(_ENTRY_KEYS)})")
        if key in ("filename", "preset"):
            if not isinstance(value, str) or not value.strip():
                raise bad(f"model {name!r}: {key} must be a non-empty string")
            value = value.strip()
            if key == "filename" and (
                "/" in value or "\\" in value or value in (".", "..") or value.startswith(".")
            ):
                raise bad(f"model {name!r}: filename {value!r} must be a plain file name")
        elif key == "urls":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
                raise bad(f"model {name!r}: urls must be a list of URLs")
            value = [u.strip() for u in value if u.strip()]
            for url in value:
                if not _is_http_url(url):
                    raise bad(f"model {name!r}: {url!r} is not an http(s) URL")
        elif key in ("md5", "sha256"):
            if value is not None:
                pattern = _MD5_RE if key == "md5" else _SHA256_RE
                digits = 32 if key == "md5" else 64
                if not isinstance(value, str) or not pattern.match(value.strip().lower()):
                    raise bad(f"model {name!r}: {key} must be {digits} hexadecimal digits")
                value = value.strip().lower()
        elif key == "size":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise bad(f"model {name!r}: size must be a positive number of bytes")
        out[key] = value
    return out


def _merge(base: ModelEntry, fields: dict[str, Any]) -> ModelEntry:
    changes: dict[str, Any] = {
        "urls": _unique(list(fields.get("urls", [])) + list(base.urls)),
    }
    for key in ("filename", "preset", "size"):
        if key in fields:
            changes[key] = fields[key]
    if "md5" in fields or "sha256" in fields:
        changes["md5"] = fields.get("md5")
        changes["sha256"] = fields.get("sha256")
    return replace(base, **changes)


def _new_entry(path: Path, name: str, fields: dict[str, Any]) -> ModelEntry:
    missing = [k for k in ("filename", "preset") if k not in fields]
    if missing:
        raise DownloadError(
            f"model registry file {path} is malformed: new model {name!r} needs "
            + " and ".join(missing)
        )
    return ModelEntry(
        name=name,
        filename=fields["filename"],
        preset=fields["preset"],
        urls=_unique(fields.get("urls", [])),
        md5=fields.get("md5"),
        sha256=fields.get("sha256"),
        size=fields.get("size"),
    )


def _mirrors_from_env() -> list[str]:
    bases = []
    for base in os.environ.get(MIRRORS_ENV, "").split():
        if not _is_http_url(base):
            raise DownloadError(f"${MIRRORS_ENV}: {base!r} is not an http(s) base URL")
        bases.append(base.rstrip("/"))
    return bases


def _is_http_url(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _unique(urls) -> tuple[str, ...]:
    return tuple(dict.fromkeys(urls))
