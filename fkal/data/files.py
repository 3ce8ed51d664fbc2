"""What the loaders share: the error for missing data, undoing a failed download, the md5 check."""
from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError


@contextmanager
def _undo_new_folders(folder: Path):
    """Remove ``folder`` and its new parents again if what runs inside fails (a failed download writes nothing)."""
    new = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        yield
    except BaseException:
        for p in new:
            shutil.rmtree(p, ignore_errors=True)
        raise


def _check_root(root: str, what: str) -> None:
    """A ``UserError`` when the data folder ``root`` is a file (nothing could be found in it or downloaded)."""
    if Path(root).exists() and not Path(root).is_dir():
        raise UserError(f"the data folder {root} is a file, not a folder: pass --data-root with the folder that "
                        f"holds {what}")


def _missing(name: str, root: str, what: str) -> UserError:
    return UserError(f"{name} not found under {Path(root).resolve()} and it could not be downloaded: "
                     f"put {what} there, or pass --data-root with the folder that holds them")


def _official_or_warn(name: str, files: list[tuple[Path, str]]) -> None:
    """Warn (do not fail) when files differ from the official release: a re-packed or partial copy still loads."""
    from torchvision.datasets.utils import check_integrity

    odd = [p.name for p, md5 in files if not check_integrity(str(p), md5)]
    if odd:
        warnings.warn(f"{name}: the md5 of {', '.join(odd)} differs from the official release; loading the files "
                      "as they are", stacklevel=3)
