"""Locate the text data used to train and evaluate the bundled model.

The data is never copied into the repository and never downloaded at run time. It lives in
``$ALPHAQ_DATA_DIR`` or, failing that, in ``../shared/data`` beside the repository root (the folder
that holds ``pyproject.toml``). See ``shared/data/README.md`` for the files and their licences.
"""

from __future__ import annotations

import os
from pathlib import Path

from alphaq.errors import AlphaQError

DATA_DIR_ENV = "ALPHAQ_DATA_DIR"

WIKITEXT2_TEST = "wikitext-2/test.txt"
WIKITEXT2_VALID = "wikitext-2/valid.txt"
SHAKESPEARE = "tinyshakespeare/input.txt"
GUTENBERG = "gutenberg/big.txt"


def default_data_dir() -> Path:
    """The data folder used when ``$ALPHAQ_DATA_DIR`` is not set: ``<repo>/../shared/data``.

    Returns:
        The resolved path; it may not exist.
    """
    import alphaq

    return (Path(alphaq.__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def data_dir() -> Path:
    """Resolve the text-data folder.

    ``$ALPHAQ_DATA_DIR`` wins when set (and must exist); otherwise ``../shared/data`` beside the
    repository root is used if present.

    Returns:
        An existing directory.

    Raises:
        AlphaQError: when no data folder can be found.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise AlphaQError(
                f"{DATA_DIR_ENV}={env} is not a directory; point {DATA_DIR_ENV} at the text-data "
                "folder or pass --text-file"
            )
        return path.resolve()
    path = default_data_dir()
    if path.is_dir():
        return path
    raise AlphaQError(
        f"no text-data folder found ({DATA_DIR_ENV} is unset and {path} does not exist); "
        f"set {DATA_DIR_ENV} to the data folder or pass --text-file"
    )


def data_file(relative: str) -> Path:
    """Path of one file inside :func:`data_dir`.

    Args:
        relative: path relative to the data folder, e.g. ``"wikitext-2/test.txt"``.

    Returns:
        The existing file's path.

    Raises:
        AlphaQError: when the data folder or the file is missing.
    """
    root = data_dir()
    path = root / relative
    if not path.is_file():
        raise AlphaQError(
            f"text file {relative} not found in {root}; set {DATA_DIR_ENV} to a folder that holds it "
            "or pass --text-file"
        )
    return path


def wikitext2_test() -> Path:
    """WikiText-2 test split (the standard perplexity text)."""
    return data_file(WIKITEXT2_TEST)


def wikitext2_valid() -> Path:
    """WikiText-2 validation split (used for training the bundled model)."""
    return data_file(WIKITEXT2_VALID)


def shakespeare() -> Path:
    """The Tiny Shakespeare corpus."""
    return data_file(SHAKESPEARE)


def gutenberg() -> Path:
    """Concatenated Project Gutenberg books (``big.txt``)."""
    return data_file(GUTENBERG)


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file (undecodable bytes replaced).

    Args:
        path: the file.

    Returns:
        Its text.

    Raises:
        AlphaQError: when the file cannot be read.
    """
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise AlphaQError(f"cannot read text file {p}: {exc.strerror}; check the path") from exc
