"""Files and directories that a crash can never leave half-written.

Everything the toolkit writes (checkpoints, final models, metrics.jsonl, JSONL outputs, the reference
cache) goes through here. The pattern is always the same: write into a hidden temporary sibling,
flush it to disk (fsync), rename it into place, fsync the parent directory so that the rename itself
survives a power cut. A reader therefore sees the old version or the new one, never a mixture.

A process killed with SIGKILL runs no cleanup, so the temporaries it leaves behind carry fixed
prefixes and `sweep` removes them the next time a run starts in that directory:

    .tmp-NAME-XXXXXXXX     a new version being written: incomplete, deleted
    .old-NAME-XXXXXXXX     the previous version, moved aside just before the new one is renamed in:
                           restored if NAME is missing (the kill fell between the two renames),
                           deleted otherwise
    .trash-NAME-XXXXXXXX   a directory renamed away for deletion (pruned checkpoints): deleted

One run per directory: `hold_directory` keeps an OS lock (flock) on DIR/.lock while a run writes
into DIR, so that a second run cannot sweep away the first one's temporaries or overwrite its
checkpoints. The kernel drops the lock when its process dies, however it dies, so a lock file left by
a killed run is taken over (with a warning naming it) rather than blocking the next run.

Reading goes through here too where a plain reader would lose something silently: `load_yaml` is
yaml.safe_load that refuses a key given twice in one mapping (safe_load keeps the last one, so the
first would vanish without a word).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import yaml

from vietnamese_ai.errors import UserError

log = logging.getLogger("vietnamese_ai")

PREFIXES = (".tmp-", ".old-", ".trash-")
LOCK_FILE = ".lock"   # not one of PREFIXES: sweep leaves it to its holder
# errno values that mean "the disk or the permissions", not "a bug": reported in one line.
STORAGE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def _sibling(path: str, prefix: str) -> str:
    parent, name = os.path.split(os.path.abspath(path))
    return os.path.join(parent, f"{prefix}{name}-{uuid.uuid4().hex[:8]}")


def fsync_path(path: str) -> None:
    """Flush a file or a directory entry to disk (directories: where the OS allows it)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the data files were synced already
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str) -> None:
    for folder, _, names in os.walk(root):
        for name in names:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def storage_error(what: str, path: str, error: OSError) -> UserError | None:
    """A one-line error for a full disk or a permission problem, None for anything else."""
    if error.errno not in STORAGE_ERRORS:
        return None
    return UserError(f"{what} '{path}' could not be written: {error.strerror or error}")


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a temporary directory that replaces `path` only if the block finishes without error."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _sibling(path, ".tmp-")
    try:   # an interrupt between creating the directory and entering the block must remove it too
        os.makedirs(tmp)
        yield tmp
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        old = _sibling(path, ".old-")
        os.rename(path, old)
    os.rename(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))
    if old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[object]:
    """Open a temporary sibling of `path` for writing; it replaces `path` (os.replace) on success."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = _sibling(path, ".tmp-")
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    fsync_path(os.path.dirname(os.path.abspath(path)))


def remove_directory(path: str) -> None:
    """Delete a directory so that a kill half-way never leaves a partial copy under its name:
    rename it away first (atomic), then delete the renamed copy."""
    if not os.path.exists(path):
        return
    trash = _sibling(path, ".trash-")
    os.rename(path, trash)
    fsync_path(os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(trash, ignore_errors=True)


def _target_name(entry: str, prefix: str) -> str:
    """'.old-step-000004-1a2b3c4d' -> 'step-000004'."""
    return entry[len(prefix):].rsplit("-", 1)[0]


def sweep(directory: str) -> list[str]:
    """Clean up what killed writers left in `directory` (see the module docstring); returns what was
    removed or restored, for a log line."""
    if not os.path.isdir(directory):
        return []
    done = []
    for entry in sorted(os.listdir(directory)):
        prefix = next((p for p in PREFIXES if entry.startswith(p)), None)
        if prefix is None:
            continue
        path = os.path.join(directory, entry)
        target = os.path.join(directory, _target_name(entry, prefix))
        if prefix == ".old-" and not os.path.exists(target):
            os.rename(path, target)
            done.append(f"restored {target}")
        elif os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            done.append(f"removed {path}")
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
            done.append(f"removed {path}")
    return done


def check_writable_directory(path: str, key: str) -> None:
    """Fail in one line, before any expensive work, if `path` cannot be a directory we write into."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{key}: '{path}' is a file, not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"{key}: cannot create '{path}': '{existing}' is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}: '{existing}' is not writable")


def check_writable_file(path: str, key: str) -> None:
    """Fail in one line if `path` cannot be written as a file."""
    if os.path.isdir(path):
        raise UserError(f"{key}: '{path}' is a directory; give a file name")
    check_writable_directory(os.path.dirname(os.path.abspath(path)), key)


class DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping. A YAMLError with the second key's mark, so that every
    handler of bad YAML also handles it."""

    def __init__(self, key: str, first_line: int, mark: Any):
        super().__init__(None, None, f"key '{key}' appears twice (first on line {first_line})", mark)
        self.key = key


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader (plain data only: no Python objects) whose mappings refuse a repeated key.

    Keys are compared once read, as the dict would compare them: `1` and `0x1`, or `yes` and `true`,
    are the same key. A merge (`<<: *base`) may still be overridden by the mapping's own keys, as
    YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:   # a list as a key: the base constructor says so
                    continue
                if key in first:
                    written = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
                    raise DuplicateKey(written, first[key], key_node.start_mark)
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(stream: Any) -> Any:
    """yaml.safe_load (a string or an open file) that raises DuplicateKey on a key given twice."""
    return yaml.load(stream, Loader=UniqueKeyLoader)


def yaml_problem(error: yaml.YAMLError, source: str) -> str:
    """One line for bad YAML: `source: line N: ...` (the line where the reader found the problem)."""
    mark = getattr(error, "problem_mark", None)
    where = f"{source}: line {mark.line + 1}" if mark is not None else source
    if isinstance(error, DuplicateKey):
        return f"{where}: {error.problem}"
    return f"{where}: invalid YAML: {' '.join(str(getattr(error, 'problem', None) or error).split())}"


# Directories this process holds: real path -> [file descriptor or None, how many holds]. A process
# may hold a directory again (a pipeline stage writing into its pipeline's directory); flock would
# refuse the second open of the same file by the same process, so holds are counted here.
_held: dict[str, list[Any]] = {}


def _holder(fd: int) -> str | None:
    """Who holds (or held) the lock, from the file's JSON body; None if the body is empty."""
    try:
        raw = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not raw:
        return None
    try:
        h = json.loads(raw)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}, command: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "a holder whose details could not be read"


def _command() -> str:
    argv = list(sys.argv) or ["python"]
    if os.path.basename(argv[0]) in ("__main__.py", "cli.py"):
        argv[0] = "vietnamese-ai"
    else:
        argv[0] = os.path.basename(argv[0]) or "python"
    return " ".join(argv)


def _acquire(path: str, key: str) -> int | None:
    """Lock `path`/.lock for this process, or raise a one-line UserError naming the holder."""
    try:
        import fcntl
    except ImportError:   # not a POSIX system
        return None
    lock_path = os.path.join(path, LOCK_FILE)
    while True:
        try:
            os.makedirs(path, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            error = storage_error(key, path, e)
            if error is None:
                raise
            raise error from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "a run that is just starting"
            os.close(fd)
            raise UserError(f"{key}: '{path}' is in use by another run: {holder}; wait for it to finish, "
                            f"or choose another {key}") from None
        except OSError as e:   # a file system without locks (some network mounts): run unprotected
            os.close(fd)
            log.warning("%s: '%s' cannot be locked (%s); make sure no other run writes into it", key, path,
                        e.strerror or e)
            return None
        try:   # the holder we waited for may have removed the file: then this lock is on a dead inode
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _holder(fd)
    if previous:   # a clean release removes the file: this one's run died holding it
        log.warning("%s: took over the lock on '%s' of a run that is no longer running (%s)", key, path, previous)
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()}, ensure_ascii=False)
    os.ftruncate(fd, 0)
    os.pwrite(fd, body.encode("utf-8"), 0)
    os.fsync(fd)
    return fd


def _release(path: str, fd: int | None) -> None:
    if fd is None:
        return
    lock_path = os.path.join(path, LOCK_FILE)
    with contextlib.suppress(OSError):   # removed before unlocking, so that nobody locks a file on its way out
        if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
            os.remove(lock_path)
    os.close(fd)   # closing the last descriptor releases the flock


def check_not_held(path: str, key: str) -> None:
    """Fail in one line, before any expensive work, if another process holds `path` (see hold_directory);
    takes no lock."""
    if os.path.realpath(path) in _held or not os.path.isfile(os.path.join(path, LOCK_FILE)):
        return
    with hold_directory(path, key):
        pass


@contextlib.contextmanager
def hold_directory(path: str, key: str, active: bool = True) -> Iterator[None]:
    """Hold `path` for one run: a second run into it (another process) is refused in one line naming
    this one; released on leaving the block, however it is left. `active=False` (the other processes
    of a multi-process run, whose main process holds it) does nothing."""
    if not active:
        yield
        return
    real = os.path.realpath(path)
    if real in _held:
        _held[real][1] += 1
    else:
        _held[real] = [_acquire(path, key), 1]
    try:
        yield
    finally:
        _held[real][1] -= 1
        if _held[real][1] == 0:
            _release(path, _held.pop(real)[0])


# A config key naming one of these holds a secret: it never goes into a model card or a tracker. `token`
# and `auth` as whole words only, so that tokenizer_name_or_path and max_new_tokens are not secrets.
SECRET_KEY = re.compile(r"(^|[_\-.])(token|auth)($|[_\-.])|secret|password|passwd|credential|api_?key|access_?key",
                        re.IGNORECASE)


def names_a_secret(key: Any) -> bool:
    """Whether a config key names a secret (SECRET_KEY).

    >>> [names_a_secret(k) for k in ("hub_token", "HF_API_KEY", "client_secret", "max_new_tokens", "tokenizer")]
    [True, True, True, False, False]
    """
    return bool(SECRET_KEY.search(str(key)))
