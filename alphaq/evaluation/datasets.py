"""Locate the text data used to train and evaluate the bundled model.

The data is never copied into the repository and never downloaded implicitly. It lives in
``$ALPHAQ_DATA_DIR`` or, failing that, in ``../shared/data`` beside the repository root (the folder
that holds ``pyproject.toml``). See ``shared/data/README.md`` for the files and their licences.

Only when the user asks for it (``--dataset wikitext2``) is a text fetched through the Hugging Face
``datasets`` package (the optional extra ``alphaq[hub]``); it is then cached as a plain text file
(:func:`hub_dataset_text`) so every later step works with a path.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from alphaq.errors import AlphaQError, ConfigError

DATA_DIR_ENV = "ALPHAQ_DATA_DIR"
CACHE_DIR_ENV = "ALPHAQ_CACHE_DIR"

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


@dataclass(frozen=True)
class HubText:
    """A text data set on the Hugging Face hub and how its rows are joined into one text.

    Attributes:
        path: the hub data set (``load_dataset``'s first argument).
        config: its configuration name.
        field: the column that holds the text.
        separator: what joins the rows (``"\\n\\n"`` as in the GPTQ/AlphaQ evaluation code).
        splits: the splits it has.
    """

    path: str
    config: str
    field: str
    separator: str
    splits: tuple[str, ...]


#: Data sets ``--dataset`` accepts, by alphaq name.
HUB_TEXTS: dict[str, HubText] = {
    "wikitext2": HubText("wikitext", "wikitext-2-raw-v1", "text", "\n\n", ("train", "validation", "test"))
}


def default_cache_dir() -> Path:
    """Folder of cached hub texts: ``$ALPHAQ_CACHE_DIR/datasets``, else ``~/.cache/alphaq/datasets``.

    ``$XDG_CACHE_HOME`` replaces ``~/.cache`` when set.

    Returns:
        The path; it may not exist yet.
    """
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser() / "datasets"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "alphaq" / "datasets"


def hub_dataset_text(name: str, split: str = "test", *, cache_dir: Path | None = None) -> Path:
    """A hub text data set as one cached text file, fetched through the ``datasets`` package on first use.

    The rows of ``split`` are joined as the GPTQ/AlphaQ papers do (WikiText-2: ``"\\n\\n".join(ds["text"])``)
    and written atomically to ``<cache_dir>/<name>-<split>.txt``; an existing non-empty cache file is reused
    without importing ``datasets``.

    Args:
        name: an alphaq data set name, a key of :data:`HUB_TEXTS` (``"wikitext2"``).
        split: ``"test"``, ``"validation"`` or ``"train"``.
        cache_dir: where to cache the text (None: :func:`default_cache_dir`).

    Returns:
        The cached text file.

    Raises:
        ConfigError: an unknown data set or split.
        AlphaQError: ``datasets`` is not installed, or the data set cannot be loaded (no network).
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    spec = HUB_TEXTS.get(key)
    if spec is None:
        raise ConfigError(f"unknown dataset {name!r}; use one of {', '.join(HUB_TEXTS)} or pass --text-file")
    if split not in spec.splits:
        raise ConfigError(f"dataset {key} has no split {split!r}; use one of {', '.join(spec.splits)}")
    path = (default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()) / f"{key}-{split}.txt"
    if path.is_file() and path.stat().st_size > 0:
        return path
    try:
        hub = importlib.import_module("datasets")
    except ImportError as exc:
        raise AlphaQError("the datasets package is not installed; pip install datasets, or pass --text-file") from exc
    try:
        rows = hub.load_dataset(spec.path, spec.config, split=split)[spec.field]
        text = spec.separator.join(str(row) for row in rows)
    except Exception as exc:  # network, hub and parsing failures of a third-party loader
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AlphaQError(
            f"cannot load dataset {key} ({spec.path}/{spec.config}, split {split}) through the datasets package "
            f"({detail}); check the network, pass --text-file, or set {DATA_DIR_ENV} to the text-data folder"
        ) from exc
    from alphaq.atomic import write_text

    return write_text(path, text)


def resolve_eval_text(text_file: str | os.PathLike[str] | None, dataset: str | None) -> Path:
    """The evaluation text chosen by ``--text-file`` / ``--dataset``, else WikiText-2 test from the data folder.

    Args:
        text_file: a text file given by the user.
        dataset: a hub data set name (:data:`HUB_TEXTS`), its test split is used.

    Returns:
        An existing text file.

    Raises:
        ConfigError: both were given, or an unknown data set.
        AlphaQError: the text file does not exist, the data folder lacks WikiText-2, or the hub load fails.
    """
    if text_file is not None and dataset is not None:
        raise ConfigError("pass either --text-file or --dataset, not both")
    if text_file is not None:
        path = Path(text_file).expanduser()
        if not path.is_file():
            raise AlphaQError(f"{path}: text file not found; pass an existing --text-file")
        return path
    if dataset is not None:
        return hub_dataset_text(dataset, "test")
    return wikitext2_test()
