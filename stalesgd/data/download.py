"""``stalesgd data download NAME``: fetch a data set into the user cache, verified.

Only ever called on the user's explicit command, never as a side effect of a
load.  IDX sets are fetched file by file (``<mirror><file>.gz``, mirrors tried
in order) and each decompressed file's MD5 is checked before it is kept.
CIFAR-10 is fetched as the upstream archive, whose published MD5 is checked;
the six batches are extracted, checked by structure, and their MD5s recorded
in a manifest so later ``verify`` runs can detect damage.  Files are written
under a temporary name and renamed, so an interrupted download leaves no
half-written file under an upstream name.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .errors import DataCorruptError, DataDownloadError
from .files import (
    check_bytes,
    check_file,
    md5_hex,
    read_decompressed,
    write_manifest,
)
from .paths import ENV_VAR, find_in_folder, user_cache_root
from .registry import DataSpec, get_spec

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def fetch_to_file(url: str, dest: Path, timeout: float = 60.0) -> str:
    """Stream ``url`` into ``dest`` and return the MD5 of the bytes received.

    Raises :class:`DataDownloadError` (naming the URL) on any network error.
    """
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as fh:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                fh.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        dest.unlink(missing_ok=True)
        raise DataDownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    return h.hexdigest()


def target_folder(spec: DataSpec, data_dir: str | os.PathLike[str] | None) -> Path:
    """Where ``download`` puts ``spec``: ``<data_dir or user cache>/<folder>``."""
    root = Path(data_dir).expanduser() if data_dir is not None else user_cache_root()
    return root / spec.folder


def _manual_hint(spec: DataSpec, folder: Path, urls: list[str]) -> str:
    return (
        "Fix: if the machine is offline or the source is down, fetch the file(s) by hand from "
        + " or ".join(urls)
        + f" into {folder} (or into <ROOT>/{spec.folder}/ and set ${ENV_VAR}=ROOT), "
        f"then run `stalesgd data verify {spec.name}`."
    )


def _download_idx(spec: DataSpec, folder: Path, mirrors: tuple[str, ...], timeout: float,
                  report: Report) -> None:
    present, _ = find_in_folder(spec, folder)
    for f in spec.files:
        if f.name in present and check_file(spec, f, present[f.name], fresh=True).ok:
            report(f"{f.name}: already present and verified ({present[f.name]})")
            continue
        dest = folder / (f.name + ".gz")
        tmp = folder / (f.name + ".part.gz")
        errors: list[str] = []
        for base in mirrors:
            url = base + f.name + ".gz"
            report(f"{f.name}: fetching {url}")
            try:
                fetch_to_file(url, tmp, timeout)
                verdict = check_bytes(spec, f, dest, read_decompressed(tmp, spec.name))
            except (DataDownloadError, DataCorruptError) as exc:
                errors.append(str(exc).splitlines()[0])
                continue
            if not verdict.ok:
                errors.append(f"{url}: {verdict.status} ({verdict.detail})")
                tmp.unlink(missing_ok=True)
                continue
            os.replace(tmp, dest)
            report(f"{f.name}: OK ({verdict.detail}) -> {dest}")
            break
        else:
            tmp.unlink(missing_ok=True)
            raise DataDownloadError(
                f"could not download {spec.name} file {f.name}.gz; tried:\n  "
                + "\n  ".join(errors) + "\n"
                + _manual_hint(spec, folder, [m + f.name + ".gz" for m in mirrors])
            )


def _download_archive(spec: DataSpec, folder: Path, url: str, md5: str | None,
                      timeout: float, report: Report) -> None:
    tmp = folder / (Path(url).name + ".part")
    report(f"{spec.name}: fetching {url}")
    try:
        got = fetch_to_file(url, tmp, timeout)
    except DataDownloadError as exc:
        raise DataDownloadError(
            f"could not download {spec.name} archive:\n  {exc}\n"
            + _manual_hint(spec, folder, [url])
        ) from exc
    try:
        if md5 is not None and got != md5:
            raise DataDownloadError(
                f"{url}: archive md5 {got}, expected {md5} (damaged or altered download)\n"
                + _manual_hint(spec, folder, [url])
            )
        report(f"{Path(url).name}: archive md5 OK")
        sums: dict[str, str] = {}
        with tarfile.open(tmp, "r:*") as tar:
            for f in spec.files:
                member = f"{spec.archive_member_dir}/{f.name}" if spec.archive_member_dir \
                    else f.name
                try:
                    fh = tar.extractfile(member)
                except KeyError:
                    fh = None
                if fh is None:
                    raise DataDownloadError(f"{url}: archive has no regular file {member}")
                data = fh.read()
                verdict = check_bytes(spec, f, folder / f.name, data, use_manifest=False)
                if not verdict.ok:
                    raise DataDownloadError(f"{url}: {member}: {verdict.status} "
                                            f"({verdict.detail})")
                part = folder / (f.name + ".part")
                part.write_bytes(data)
                os.replace(part, folder / f.name)
                sums[f.name] = md5_hex(data)
                report(f"{f.name}: OK (structure) -> {folder / f.name}")
        write_manifest(folder, sums)
        report(f"recorded md5 sums in {folder}")
    except tarfile.TarError as exc:
        raise DataDownloadError(f"{url}: not a readable archive ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def download(name: str, data_dir: str | os.PathLike[str] | None = None, *,
             mirrors: tuple[str, ...] | None = None, archive_url: str | None = None,
             archive_md5: str | None = None, timeout: float = 60.0,
             report: Report | None = None) -> Path:
    """Download and verify data set ``name`` into ``<data_dir or user cache>/<folder>``.

    ``mirrors``/``archive_url``/``archive_md5`` override the registry (tests,
    private mirrors).  Returns the folder; raises :class:`DataDownloadError`
    with the URLs tried and a manual fix when anything fails.
    """
    spec = get_spec(name)
    folder = target_folder(spec, data_dir)
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDownloadError(f"cannot create the folder {folder} ({exc.strerror or exc}); "
                                "give a writable --data-dir") from None
    say = report or _quiet
    try:
        if spec.kind == "idx":
            _download_idx(spec, folder, mirrors or spec.mirrors, timeout, say)
        else:
            url = archive_url or spec.archive_url
            md5 = archive_md5 or spec.archive_md5
            if url is None:
                raise DataDownloadError(f"{name}: no download source is known")
            _download_archive(spec, folder, url, md5, timeout, say)
    except BaseException:
        if not existed and not any(folder.iterdir()):
            folder.rmdir()  # a failed download leaves no empty folder behind
        raise
    return folder
