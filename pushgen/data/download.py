"""Fetch the Upworthy Research Archive from its public home (OSF project jd64p) for users who do not
have a local copy: `python -m pushgen.data.download --dest DIR`.

The OSF API lists a project's files as JSON pages (folders nest, pages link to the next one); this
walks them to find the file by name and downloads it to a temporary name before renaming it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

OSF_API = "https://api.osf.io/v2"
UPWORTHY_NODE = "jd64p"
UPWORTHY_FILE = "upworthy-archive-exploratory-packages-03.12.2020.csv"


def _get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the URL is the OSF API or a local copy
        return json.load(resp)


def _walk(url: str, timeout: float) -> Iterator[dict]:
    """Every file entry under a listing URL, following folders and next-page links."""
    while url:
        page = _get_json(url, timeout)
        for entry in page.get("data", []):
            attrs = entry.get("attributes", {})
            if attrs.get("kind") == "folder":
                yield from _walk(entry["relationships"]["files"]["links"]["related"]["href"], timeout)
            else:
                yield entry
        url = (page.get("links") or {}).get("next")


def osf_file_url(node: str, filename: str, api: str = OSF_API, timeout: float = 60) -> str:
    listing = f"{api.rstrip('/')}/nodes/{node}/files/osfstorage/"
    for entry in _walk(listing, timeout):
        if entry.get("attributes", {}).get("name") == filename:
            return entry["links"]["download"]
    raise FileNotFoundError(f"no file named {filename} in OSF project {node} ({listing})")


def download(url: str, dest: str | Path, timeout: float = 300) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def fetch_upworthy(dest_dir: str | Path, api: str = OSF_API) -> Path:
    """Download the exploratory packages CSV into dest_dir (skipped if it is already there)."""
    dest = Path(dest_dir) / UPWORTHY_FILE
    if dest.exists():
        return dest
    return download(osf_file_url(UPWORTHY_NODE, UPWORTHY_FILE, api=api), dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Download the Upworthy Research Archive (Matias et al. 2021, CC BY 4.0) from OSF.")
    parser.add_argument("--dest", default="data/upworthy", help="folder to write the CSV into")
    parser.add_argument("--api", default=OSF_API, help="OSF API base URL")
    args = parser.parse_args(argv)
    path = fetch_upworthy(args.dest, api=args.api)
    print(f"{path}\nuse it with: python train.py data.path={path}")


if __name__ == "__main__":
    main()
