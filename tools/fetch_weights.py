#!/usr/bin/env python
"""Download the pretrained weights the configs name, into the paths they expect.

    python tools/fetch_weights.py                    # every file the configs name (about 1.5 GB)
    python tools/fetch_weights.py clip-vit-b-16      # one of them
    python tools/fetch_weights.py --list             # what is known, where it goes, what is there

The OpenAI CLIP release files go to ``~/.cache/clip/`` (``MODEL.BACKBONE.PRETRAIN_PATH`` of the
CLIP-ReID configs; where ``clip.load()`` and the reference code keep them), the torchvision
ImageNet weights to ``~/.cache/torch/hub/checkpoints/`` (the bag-of-tricks and TransReID-style
configs; where torchvision keeps them). Each file is checked against its published sha256 (the
full hash in OpenAI's URL; the prefix torchvision puts in its file names) before it takes its
place. An interrupted download stays as ``FILE.part`` and the next run resumes it (HTTP Range).
A file already in place with the right checksum is left alone.

``--table FILE.json`` replaces the built-in table (a mirror, other files):
``{"name": {"url": ..., "sha256": full hash or a prefix of at least 8 hex digits, "path": ...}}``.

Training needs none of these: set ``MODEL.BACKBONE.PRETRAIN False`` for random weights.
"""

import argparse
import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Dict, List, Optional

from cli_defaults import set_cli_defaults

set_cli_defaults()  # before torch loads: OMP_WAIT_POLICY=PASSIVE unless set (tools/cli_defaults.py)

from clipreid_plugin.utils.cli import run_tool
from clipreid_plugin.utils.errors import InputFileError, InvalidInputError

CLIP_URL = "https://openaipublic.azureedge.net/clip/models/{sha256}/{file}"
TORCHVISION_URL = "https://download.pytorch.org/models/{file}"
CLIP_DIR = "~/.cache/clip"
TORCHVISION_DIR = "~/.cache/torch/hub/checkpoints"
IBN_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/{file}"
RESNEST_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-resnest/{file}"


def _clip(file: str, sha256: str) -> Dict[str, str]:
    return {"url": CLIP_URL.format(sha256=sha256, file=file), "sha256": sha256, "path": f"{CLIP_DIR}/{file}"}


def _released(url: str, file: str) -> Dict[str, str]:
    # release files named like torchvision's: the name ends in the first 8 hex digits of the sha256
    return {"url": url.format(file=file), "sha256": file.rsplit("-", 1)[1].split(".")[0],
            "path": f"{TORCHVISION_DIR}/{file}"}


def _torchvision(file: str) -> Dict[str, str]:
    # torchvision's file names end in the first 8 hex digits of the file's sha256
    return {"url": TORCHVISION_URL.format(file=file), "sha256": file.rsplit("-", 1)[1].split(".")[0],
            "path": f"{TORCHVISION_DIR}/{file}"}


# name -> url, sha256 (or its prefix), path: the URLs and hashes openai/CLIP's clip.py and
# torchvision's *_Weights.IMAGENET1K_V1 publish
WEIGHTS: Dict[str, Dict[str, str]] = {
    "clip-rn50": _clip("RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
    "clip-vit-b-16": _clip("ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    "resnet18": _torchvision("resnet18-f37072fd.pth"),
    "resnet34": _torchvision("resnet34-b627a593.pth"),
    "resnet50": _torchvision("resnet50-0676ba61.pth"),
    "resnet101": _torchvision("resnet101-63fe2227.pth"),
    "resnet152": _torchvision("resnet152-394f9c45.pth"),
    "resnext50_32x4d": _torchvision("resnext50_32x4d-7cdf4587.pth"),
    "resnext101_32x8d": _torchvision("resnext101_32x8d-8ba56ff5.pth"),
    "vit_b_16": _torchvision("vit_b_16-c867db91.pth"),
    # fast-reid's IBN-a and ResNeSt ImageNet files (the URLs fast-reid and timm name; hash prefix in the name)
    "resnet50_ibn_a": _released(IBN_URL, "resnet50_ibn_a-d9d0bb7b.pth"),
    "resnet101_ibn_a": _released(IBN_URL, "resnet101_ibn_a-59ea0ac6.pth"),
    "resnest50": _released(RESNEST_URL, "resnest50-528c19ca.pth"),
}

# Files the configs name that have no stable URL with a checksum: where to get them by hand.
MANUAL_WEIGHTS: Dict[str, str] = {
    "~/.cache/torch/checkpoints/osnet_x1_0_imagenet.pth": "torchreid's MODEL_ZOO.md (a Google Drive link)",
    "~/.cache/torch/checkpoints/osnet_ain_x1_0_imagenet.pth": "torchreid's MODEL_ZOO.md (a Google Drive link)",
}
# what the configs in configs/ and projects/CLIPReID/configs name (the default of a plain run)
CONFIG_WEIGHTS = ("clip-rn50", "clip-vit-b-16", "resnet50", "resnet101", "resnext50_32x4d", "vit_b_16",
                  "resnet50_ibn_a", "resnet101_ibn_a", "resnest50")

CHUNK = 1 << 20


def sha256_of(path: str) -> str:
    """Returns: the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: str) -> Dict[str, Dict[str, str]]:
    """Read a ``--table`` file: ``{name: {"url", "sha256", "path"}}``, each checksum at least 8 hex digits."""
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except OSError as e:
        raise InputFileError(f"Cannot read --table {path}: {e.strerror}.") from None
    except ValueError as e:
        raise InvalidInputError(f"--table {path} is not JSON ({e}).") from None
    for name, entry in (table.items() if isinstance(table, dict) else [("?", None)]):
        if not (isinstance(entry, dict) and {"url", "sha256", "path"} <= set(entry)):
            raise InvalidInputError(f"--table {path}: entry {name!r} needs 'url', 'sha256' and 'path'.")
        digest = str(entry["sha256"]).lower()
        if len(digest) < 8 or any(c not in "0123456789abcdef" for c in digest):
            raise InvalidInputError(f"--table {path}: the sha256 of {name!r} must be hex digits, at least 8.")
    return table


def _open(url: str, start: int):
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # the part file already holds the whole file
            return None
        raise InputFileError(f"{url} answered HTTP {e.code} ({e.reason}).") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise InputFileError(f"Cannot reach {url} ({reason}): check the network or proxy "
                             f"(HTTPS_PROXY), or use --table with a mirror.") from None


def download(url: str, part: str) -> None:
    """Download ``url`` into ``part``, continuing a partial file (HTTP Range).

    Raises:
        InputFileError: the server cannot be reached, answers an error, or the connection breaks
            (the part file is kept: the next call continues it).
    """
    start = os.path.getsize(part) if os.path.isfile(part) else 0
    response = _open(url, start)
    if response is None:
        return
    with response:
        resumed = start and response.status == 206
        if start and not resumed:
            print(f"  the server ignored the resume request: downloading {url} from the start")
        total = response.headers.get("Content-Length")
        total = int(total) + (start if resumed else 0) if total else None
        done = start if resumed else 0
        with open(part, "ab" if resumed else "wb") as f:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    done += len(block)
            except (http.client.HTTPException, OSError) as e:
                raise InputFileError(f"The download of {url} broke off after {done} bytes ({type(e).__name__}); "
                                     f"run the same command again to resume it.") from None
    if total is not None and done < total:
        raise InputFileError(f"The download of {url} broke off after {done} of {total} bytes; run the same "
                             f"command again to resume it.")


def fetch(name: str, entry: Dict[str, str], force: bool = False) -> str:
    """Put one file in place, checked against its checksum.

    Args:
        name: the table name (for messages).
        entry: ``{"url", "sha256", "path"}``.
        force: download again even when the file is in place.

    Returns:
        The path the file is at (``~`` expanded).
    """
    path = os.path.expanduser(os.path.expandvars(entry["path"]))
    expected = str(entry["sha256"]).lower()
    if os.path.isfile(path) and not force:
        if sha256_of(path).startswith(expected):
            print(f"{name}: already in place at {path} (sha256 checked)")
            return path
        raise InvalidInputError(f"{path} exists but its sha256 is not the published {expected}: delete it, or run "
                                f"with --force to download it again.")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    part = path + ".part"
    print(f"{name}: downloading {entry['url']}" + (" (resuming)" if os.path.isfile(part) else ""))
    download(entry["url"], part)
    got = sha256_of(part)
    if not got.startswith(expected):
        os.remove(part)
        raise InvalidInputError(f"The file downloaded from {entry['url']} has sha256 {got}, not the published "
                                f"{expected}; it was deleted. Run again (a proxy or mirror may have altered it).")
    os.replace(part, path)
    print(f"{name}: wrote {path} (sha256 checked)")
    return path


def build_parser() -> argparse.ArgumentParser:
    """Returns: the argument parser of this tool."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"files to fetch (default: the ones the configs name: {', '.join(CONFIG_WEIGHTS)}); "
                        f"'all' for every known file")
    p.add_argument("--list", action="store_true", help="list the known files and where they go, then stop")
    p.add_argument("--force", action="store_true", help="download files that are already in place again")
    p.add_argument("--table", metavar="FILE.json", default=None,
                   help="use this table of {name: {url, sha256, path}} instead of the built-in one")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Parse the arguments and fetch the files; print where each one went."""
    args = build_parser().parse_args(argv)
    table = read_table(args.table) if args.table else WEIGHTS
    if args.list:
        for name, entry in table.items():
            path = os.path.expanduser(entry["path"])
            print(f"{name:18s} {'present' if os.path.isfile(path) else 'absent ':7s}  {path}  <- {entry['url']}")
        return 0
    names = args.names or ([n for n in CONFIG_WEIGHTS if n in table] if table is WEIGHTS else list(table))
    if names == ["all"]:
        names = list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise InvalidInputError(f"Unknown weights {', '.join(unknown)}; known: {', '.join(table)} (or 'all').")
    written = [fetch(name, table[name], force=args.force) for name in names]
    print("\nWeights in place:\n" + "\n".join(f"  {p}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
