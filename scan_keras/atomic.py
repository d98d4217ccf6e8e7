"""Files written whole or not at all.

A run's folder holds the only copy of its best model, and a process can be
killed, or a disk fill up, in the middle of any write. Every file the
package writes goes to a temporary file in the same folder, is flushed to
the disk, and is then renamed over the old one (`os.replace`, atomic on
POSIX and Windows): a reader sees the old file or the new one, never a
part of either.
"""

import contextlib
import json
import os
import uuid


# A killed write leaves its temporary file, hidden, under this prefix.
TMP_PREFIX = ".tmp-"


def remove_temporaries(folder):
    """Removes what killed writes left in `folder` (call while owning it)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(TMP_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it over `path` on success.

    The temporary name ends with `path`'s own name, so its extensions
    (which Keras checks: `.keras`, `.weights.h5`) are kept.
    If the block raises, the temporary file is removed and `path` is left
    as it was.

    Args:
        path: the file to write.

    Example:

    ```python
    with atomic_path("model_best.keras") as tmp:
        model.save(tmp)
    ```
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    # Not mkstemp: its file would keep mode 0600 instead of the umask's.
    tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _sync_folder(folder)


def _sync_folder(folder):
    # The rename itself reaches the disk only once the folder is synced.
    if hasattr(os, "O_DIRECTORY"):
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def write_json(path, data, **dump_kwargs):
    """Writes `data` as JSON to `path`, atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, **dump_kwargs)


def read_json(path, what="file"):
    """Reads a JSON file; an unreadable one is a ValueError naming it.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. "the best model's record").
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: {what} is not valid JSON ({err})") from None


def save_model(model, path):
    """`model.save(path)`, atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
