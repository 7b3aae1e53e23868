"""Output directories that Lutra writes into without losing anyone's files.

Every command that writes files goes through :class:`OutputDir` (or :func:`write_file` for a
single file). The rules:

- Lutra replaces only what it wrote before: the names recorded, per writer (``generate``,
  ``build``, ...), in the marker file ``.lutra-outputs.json`` of the directory. A writer's names
  that a new run no longer writes are removed (unless the writer accumulates, like ``sim``).
  Every other file is left alone.
- A path that exists and is not a directory is refused, and so is a non-empty directory without
  a marker, unless ``force`` (which still deletes nothing foreign; it may replace a foreign file
  only where it has the name of an output).
- Outputs are staged in a temporary directory inside the output directory (``.lutra-tmp-*``, so
  on the same file system) and moved into place with ``os.replace`` once the whole run has
  succeeded: an interrupted or failed run leaves the previous outputs as they were. Debris of a
  killed run is removed, and named on stderr, by the next run into that directory.
- Subdirectories an output names (per-block directories, tool work directories) are owned whole.

Problems are :class:`OutputError`, a one-line message naming the path.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from pathlib import Path

__all__ = ["MARKER", "DEFAULT_REPORTS_DIR", "OutputDir", "OutputError", "report_file",
           "report_files", "write_file"]

#: The marker file: which names in the directory each Lutra writer owns.
MARKER = ".lutra-outputs.json"
_TMP = ".lutra-tmp-"
#: Where the benchmarks write their report files unless told otherwise: Lutra's own directory.
DEFAULT_REPORTS_DIR = Path("build/reports")
_active: set[Path] = set()          # staging directories of this process still in use


class OutputError(Exception):
    """An output path Lutra must not or cannot write; the message is one line."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:             # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _plain_name(name: str) -> bool:
    """Whether ``name`` can be an output's name: one entry of the directory itself."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..") \
        and name != MARKER and not name.startswith(_TMP)


def _leads_out(directory: Path, name: str) -> bool:
    """Whether ``directory / name`` is a symbolic link to somewhere outside ``directory``
    (Lutra writes no links: one there was put by someone else)."""
    entry = directory / name
    if not entry.is_symlink():
        return False
    try:
        return not entry.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):         # a loop of links
        return True


def _read_marker(directory: Path, force: bool) -> dict[str, list[str]] | None:
    """The marker's owners, ``None`` without a marker; a marker that cannot be read, or that
    names anything but plain entries of ``directory`` (``../x``, ``/x``, a link leading out),
    is refused (an :class:`OutputError`), or ignored (``{}``) with ``force``: nothing outside
    the directory is ever removed or written because a marker says so."""
    marker = directory / MARKER
    if not marker.exists():
        return None
    try:
        data = json.loads(marker.read_text())
        owners = data["owners"]
        if not (isinstance(owners, dict) and all(
                isinstance(v, list) and all(isinstance(n, str) for n in v)
                for v in owners.values())):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        problem = "unreadable marker of Lutra's outputs"
    else:
        outside = [n for names in owners.values() for n in names
                   if not _plain_name(n) or _leads_out(directory, n)]
        if not outside:
            return {k: list(v) for k, v in owners.items()}
        problem = (f"marker of Lutra's outputs names {outside[0]!r}, which is not a file of "
                   f"this directory")
    if force:
        return {}
    raise OutputError(f"{marker}: {problem}; delete it or use --force")


def _write_marker(directory: Path, owners: dict[str, list[str]]) -> None:
    tmp = directory / f"{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}-marker"
    body = {"lutra_outputs": 1, "note": "files and directories here that Lutra wrote and "
            "may replace; everything else is left alone",
            "owners": {k: sorted(set(v)) for k, v in sorted(owners.items()) if v}}
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, directory / MARKER)


def _owned(owners: dict[str, list[str]] | None) -> set[str]:
    return {name for names in (owners or {}).values() for name in names}


class OutputDir:
    """A directory Lutra writes into (a context manager).

    Write outputs under :attr:`stage`; each of its top-level entries (a file or a whole
    directory) becomes ``path / name`` when the ``with`` body completes. :meth:`claim` names a
    subdirectory written in place (by a nested :class:`OutputDir` or an external tool).

    Parameters
    ----------
    path : Path
        The output directory; created (with its parents) if missing.
    owner : str
        The writer's name in the marker (``"generate"``, ``"build"``, ...).
    force : bool
        Write into a non-empty directory Lutra has not written before, replacing files that
        have an output's name; anything else there is left alone.
    prune : bool
        Remove this writer's outputs of a previous run that this run does not write.
    shared : bool
        The directory may hold other files without a marker (a single-file output beside them).
    """

    def __init__(self, path: str | os.PathLike, *, owner: str, force: bool = False,
                 prune: bool = True, shared: bool = False) -> None:
        self.path = Path(path)
        self.owner = owner
        self.force = force
        self.prune = prune
        self.shared = shared
        self._claims: list[str] = []
        self._created: list[Path] = []
        self._stage: Path | None = None
        self._owners: dict[str, list[str]] = {}

    @property
    def stage(self) -> Path:
        """Where this run's outputs are written before they are moved into place."""
        if self._stage is None:
            raise RuntimeError("OutputDir.stage is only available inside the with block")
        return self._stage

    # ---- checks and set-up ----------------------------------------------------------------

    def check(self, names: Iterable[str] = ()) -> None:
        """Raise :class:`OutputError` now if this directory would be refused on entry (a file in
        the way, or a foreign non-empty directory without ``force``), or an output of one of
        ``names`` would replace a file Lutra did not write, before any work starts."""
        owners = self._check()
        names = list(names)
        for name in names:
            self._check_name(name)
        self._owners = owners
        self._refuse_foreign(names)

    def _check(self) -> dict[str, list[str]]:
        path = self.path
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory")
        if not path.exists():
            for parent in reversed([path, *path.parents]):
                if parent.exists() and not parent.is_dir():
                    raise OutputError(f"{parent}: exists and is not a directory")
            return {}
        owners = _read_marker(path, self.force)
        if owners is None:
            others = [p for p in path.iterdir() if not p.name.startswith(_TMP)]
            if others and not (self.force or self.shared or self._claimed_by_parent()):
                raise OutputError(f"{path}: directory is not empty and holds no Lutra outputs; "
                                  f"choose another directory or use --force")
            owners = {}
        return owners

    def _claimed_by_parent(self) -> bool:
        parent = self.path.resolve().parent
        try:
            owners = _read_marker(parent, force=True)
        except OSError:
            return False
        return self.path.resolve().name in _owned(owners)

    def _clean_debris(self) -> None:
        for entry in sorted(self.path.glob(f"{_TMP}*")):
            pid = entry.name[len(_TMP):].split("-", 1)[0]
            if entry in _active or (pid.isdigit() and pid != str(os.getpid())
                                    and _pid_alive(int(pid))):
                continue
            _remove(entry)
            print(f"lutra: note: removed {entry}, left by an interrupted run", file=sys.stderr)

    def __enter__(self) -> OutputDir:
        try:
            self._owners = self._check()
            for parent in reversed([self.path, *self.path.parents]):
                if not parent.exists():
                    parent.mkdir()
                    self._created.append(parent)
            self._clean_debris()
            self._stage = self.path / f"{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._stage.mkdir()
        except OSError as error:
            self._undo()
            raise OutputError(f"{self.path}: cannot write ({error.strerror or error})") from None
        except BaseException:
            self._undo()
            raise
        _active.add(self._stage)
        return self

    def claim(self, name: str) -> Path:
        """Own the subdirectory ``name`` (created), written in place; recorded in the marker
        at once."""
        self._check_name(name)
        if _leads_out(self.path, name):            # even with force: never written through
            raise OutputError(f"{self.path / name}: is a link to outside {self.path}; Lutra "
                              f"does not write through it")
        if name not in self._claims:
            self._refuse_foreign([name])
            self._claims.append(name)
            owners = _read_marker(self.path, self.force) or {}
            owners.setdefault(self.owner, [])
            owners[self.owner] = sorted(set(owners[self.owner]) | {name})
            _write_marker(self.path, owners)
            self._owners = owners
        (self.path / name).mkdir(exist_ok=True)
        return self.path / name

    @staticmethod
    def _check_name(name: str) -> None:
        if not _plain_name(name):
            raise ValueError(f"output name must be a plain file name, not {name!r}")

    def _refuse_foreign(self, names) -> None:
        if self.force:
            return
        mine = _owned(self._owners)
        for name in names:
            target = self.path / name
            if name not in mine and (target.exists() or target.is_symlink()):
                raise OutputError(f"{target}: exists and was not written by Lutra; remove it or "
                                  f"use --force")

    # ---- commit or roll back --------------------------------------------------------------

    def _undo(self, *, created: bool = True) -> None:
        if self._stage is not None:
            _active.discard(self._stage)
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        for directory in reversed(self._created if created else []):
            try:
                directory.rmdir()           # only if still empty: nothing partial is left
            except OSError:
                break
        self._created = []

    def _commit(self) -> None:
        stage = self.stage
        names = sorted(p.name for p in stage.iterdir())
        for name in names:
            self._check_name(name)
        owners = self._owners = _read_marker(self.path, self.force) or {}
        self._refuse_foreign(names)
        previous = set(owners.get(self.owner, []))
        written = set(names) | set(self._claims)
        # Claim first (a crash from here on leaves names the next run recognises as its own).
        owners[self.owner] = sorted(previous | written)
        _write_marker(self.path, owners)
        trash = self.path / f"{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}-old"
        for name in names:
            src, dst = stage / name, self.path / name
            if (dst.is_dir() and not dst.is_symlink()) or (dst.exists() and src.is_dir()):
                trash.mkdir(exist_ok=True)
                os.replace(dst, trash / name)
            os.replace(src, dst)
        if self.prune:
            for name in sorted(previous - written):
                target = self.path / name
                if target.exists() or target.is_symlink():
                    _remove(target)
            owners[self.owner] = sorted(written)
        for other, owned in owners.items():
            if other != self.owner:
                owners[other] = [n for n in owned if n not in written]
        _write_marker(self.path, owners)
        if trash.exists():
            shutil.rmtree(trash)

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None:
            self._undo()
            if isinstance(error, OSError):
                raise OutputError(f"{self.path}: output not written ({error.strerror or error}"
                                  f"{': ' + str(error.filename) if error.filename else ''})"
                                  ) from None
            return False
        try:
            self._commit()
        except OSError as failure:
            raise OutputError(f"{self.path}: output not written ({failure.strerror or failure})"
                              ) from None
        finally:
            self._undo(created=False)
        return False


def write_file(path: str | os.PathLike, data: str | bytes, *, owner: str,
               force: bool = False) -> Path:
    """Write the single file ``path`` atomically; refuse to replace a file Lutra did not write.

    The directory may hold anything else; the file's name is recorded in its marker.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"{path}: not a file name")
    with OutputDir(path.parent, owner=f"{owner}:{path.name}", force=force, prune=False,
                   shared=True) as out:
        target = out.stage / path.name
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)
    return path


def report_files(directory: str | os.PathLike | None, names: Iterable[str], *, owner: str,
                 force: bool = False) -> OutputDir:
    """The :class:`OutputDir` of a benchmark's report files, checked before its work starts.

    ``directory`` (``None``: :data:`DEFAULT_REPORTS_DIR`, Lutra's own, so no ``force`` is
    needed there) may hold anything else; a file of one of ``names`` that Lutra did not write
    is refused now (an :class:`OutputError` naming it) unless ``force``. Write the files under
    the result's :attr:`~OutputDir.stage` inside its ``with`` block (and :meth:`~OutputDir.claim`
    a work subdirectory there); they replace the previous ones only when the block completes.
    Other files a benchmark wrote there earlier are kept (no pruning).
    """
    out = OutputDir(DEFAULT_REPORTS_DIR if directory is None else directory, owner=owner,
                    force=force or directory is None, prune=False, shared=True)
    out.check(names)
    return out


def report_file(path: str | os.PathLike, *, owner: str, force: bool = False) -> OutputDir:
    """:func:`report_files` for one file a user names (``--json FILE``): write it as
    ``stage / path.name``. A directory, or a file Lutra did not write (unless ``force``),
    at ``path`` is refused now."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not path.name or path.name in (".", ".."):
        raise OutputError(f"{path}: not a file name")
    return report_files(path.parent, [path.name], owner=owner, force=force)
