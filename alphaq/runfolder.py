"""The run-folder contract: every file and sub-folder the stages write, their schema versions, one JSON reader.

A run folder (``alphaq run --out DIR``, or any stage's ``--out``) is laid out as::

    DIR/
      inspect.json  details.csv  details.parquet  experts.csv  spectra.npz  inspect.html     (inspect)
      plan.json  plan_comparison.json  sweep.csv  plan.html                                  (plan)
      eval.json  eval_tensors.csv  eval_experts.csv  eval.html                               (eval)
      lmeval.json                                                                            (lmeval)
      index.html                                                                             (run / report)
      quantized/   model.safetensors ... quantize.json  quantize.html  model_card.md         (quantize)
      compare/     compare.csv  compare.json  expert_verification.csv  plans/  compare.html  (compare)

Every stage, every report page, the pipeline and the evaluation take their names from here, and read JSON
artifacts through :func:`read_json` (one-line errors that name the file and the command that rewrites it).
Each artifact's own reader (its schema and columns) lives in the stage that writes it:
:func:`alphaq.audit.artifacts.load_inspect_run`, :func:`alphaq.planning.plan_file.load_plan`,
:func:`alphaq.quantization.manifest.read_manifest`, :func:`alphaq.evaluation.artifacts.read_eval`,
:func:`alphaq.evaluation.artifacts.read_compare`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError

# inspect
INSPECT_JSON = "inspect.json"
DETAILS_CSV = "details.csv"
DETAILS_PARQUET = "details.parquet"
EXPERTS_CSV = "experts.csv"
SPECTRA_NPZ = "spectra.npz"
INSPECT_HTML = "inspect.html"
# plan
PLAN_JSON = "plan.json"
#: The plan's measured errors, reused by later plans of the same checkpoint and options (any budget).
PLAN_ERRORS_NPZ = "plan_errors.npz"
#: ``alphaq export --format gguf``'s record, beside the plan (alphaq.export.gguf_export).
GGUF_EXPORT_JSON = "gguf_export.json"
PLAN_COMPARISON_JSON = "plan_comparison.json"
SWEEP_CSV = "sweep.csv"
PLAN_HTML = "plan.html"
# quantize (a folder of its own: the quantized checkpoint)
QUANTIZED_DIR = "quantized"
QUANTIZE_JSON = "quantize.json"
QUANTIZE_HTML = "quantize.html"
MODEL_CARD_MD = "model_card.md"
# eval
EVAL_JSON = "eval.json"
EVAL_TENSORS_CSV = "eval_tensors.csv"
EVAL_EXPERTS_CSV = "eval_experts.csv"
EVAL_HTML = "eval.html"
LMEVAL_JSON = "lmeval.json"
# compare (a folder of its own)
COMPARE_DIR = "compare"
COMPARE_CSV = "compare.csv"
COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
EXPERT_VERIFICATION_CSV = "expert_verification.csv"
COMPARE_PLANS_DIR = "plans"
# the run's overview
INDEX_HTML = "index.html"

#: Schema version of each versioned JSON artifact (bump when its meaning changes; readers refuse others).
INSPECT_SCHEMA_VERSION = 1
PLAN_SCHEMA_VERSION = 1
QUANTIZE_SCHEMA_VERSION = 1
EVAL_SCHEMA_VERSION = 1

#: How reports name the bundled demo model (its path differs from machine to machine).
BUNDLED_MODEL_LABEL = "bundled demo-moe (alphaq.demo_model_path())"
#: How artifacts record the bundled demo model's folder (:func:`record_path`; :func:`resolve_recorded_path` reads it).
BUNDLED_MODEL_REF = "alphaq:demo-moe"
#: Prefix of a recorded file of the text-data folder (``data:wikitext-2/test.txt``: relative to ``$ALPHAQ_DATA_DIR``).
DATA_REF_PREFIX = "data:"

#: The command that (re)writes each JSON artifact, for error messages.
WRITER_COMMAND = {
    INSPECT_JSON: "alphaq inspect",
    PLAN_JSON: "alphaq plan",
    PLAN_COMPARISON_JSON: "alphaq plan",
    QUANTIZE_JSON: "alphaq quantize",
    EVAL_JSON: "alphaq eval",
    COMPARE_JSON: "alphaq compare",
    LMEVAL_JSON: "alphaq lmeval",
}


def one_line(error: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


def read_json(path: str | Path, *, fix: str | None = None) -> dict[str, Any]:
    """Read a JSON artifact of a run folder that must hold an object.

    Args:
        path: the file.
        fix: what the user should do when it is missing or broken (default: re-run the command that writes
            files of this name, from :data:`WRITER_COMMAND`).

    Returns:
        The parsed object.

    Raises:
        AlphaQError: a missing or unreadable file, invalid JSON, or JSON that is not an object; one line
            naming the file and the fix.
    """
    path = Path(path)
    remedy = fix or f"re-run `{WRITER_COMMAND.get(path.name, 'the stage that writes it')}` to write it"
    if not path.is_file():
        raise AlphaQError(f"{path}: not found; {remedy}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise AlphaQError(
            f"{path}: unreadable (not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}); {remedy}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise AlphaQError(f"{path}: unreadable ({one_line(err)}); {remedy}") from None
    if not isinstance(data, dict):
        raise AlphaQError(f"{path}: holds a JSON {type(data).__name__}, not an object; {remedy}")
    return data


def check_schema(record: dict[str, Any], path: str | Path, expected: int) -> None:
    """Refuse an artifact written under another schema version.

    Args:
        record: the parsed artifact.
        path: where it was read from (for the message).
        expected: the version this alphaq reads.

    Raises:
        AlphaQError: ``schema_version`` missing or different; the fix says whether to upgrade or re-run.
    """
    version = record.get("schema_version")
    if type(version) is int and version == expected:
        return
    command = WRITER_COMMAND.get(Path(path).name, "the stage that writes it")
    fix = (
        "upgrade alphaq"
        if type(version) is int and version > expected
        else f"re-run {command} with this alphaq version"
    )
    raise AlphaQError(f"{path}: schema_version {version!r} is not {expected}, which this alphaq reads; {fix}")


def _is_bundled_path(path: Path) -> bool:
    """Whether ``path`` is the bundled demo model's folder, here or wherever alphaq was installed when recorded."""
    from alphaq.zoo.demo import demo_model_dir

    if path.parts[-3:] == ("alphaq", "data", "demo-moe"):
        return True
    try:
        return path.is_absolute() and path.resolve() == demo_model_dir().resolve()
    except OSError:
        return False


def _data_root() -> Path | None:
    """The text-data folder when one is found (:func:`alphaq.evaluation.datasets.data_dir`), else None."""
    from alphaq.evaluation.datasets import data_dir

    try:
        return data_dir()
    except AlphaQError:
        return None


def record_path(path: str | Path, *, base: str | Path | None = None) -> str:
    """How an artifact records a path, so that it holds no absolute path of the machine that wrote it.

    The bundled demo model is recorded by name (:data:`BUNDLED_MODEL_REF`), a file in the text-data folder by its
    name there (``data:wikitext-2/test.txt``), anything else relative to ``base`` (the folder of the artifact;
    ``..`` where needed). An already recorded form is returned unchanged. Only a path with no relative form (another
    drive on Windows) or no ``base`` stays absolute.

    Args:
        path: the path to record (absolute, or relative to the working directory).
        base: the folder of the artifact that records it.

    Returns:
        The text to store; :func:`resolve_recorded_path` turns it back into a path.
    """
    text = str(path)
    if text == BUNDLED_MODEL_REF or text.startswith(DATA_REF_PREFIX):
        return text
    raw = Path(text).expanduser()
    if _is_bundled_path(raw.absolute()):
        return BUNDLED_MODEL_REF
    absolute = raw.resolve()
    root = _data_root()
    if root is not None:
        try:
            return DATA_REF_PREFIX + absolute.relative_to(root).as_posix()
        except ValueError:
            pass
    if base is None:
        return str(absolute)
    try:
        return Path(os.path.relpath(absolute, Path(base).resolve())).as_posix()
    except ValueError:  # no relative path between them (another drive)
        return str(absolute)


def resolve_recorded_path(recorded: str | Path, *, base: str | Path) -> Path:
    """The path an artifact recorded with :func:`record_path`, on this machine.

    Args:
        recorded: the stored text: :data:`BUNDLED_MODEL_REF`, ``data:NAME``, a path relative to ``base``, or an
            absolute path (artifacts written before paths were recorded relative; another machine's bundled model
            is this machine's).
        base: the folder of the artifact that recorded it.

    Returns:
        The path (it may not exist; the caller's open says so).

    Raises:
        AlphaQError: ``data:NAME`` while no text-data folder is found (set ``$ALPHAQ_DATA_DIR``).
    """
    from alphaq.zoo.demo import demo_model_dir

    text = str(recorded)
    if text == BUNDLED_MODEL_REF:
        return demo_model_dir()
    if text.startswith(DATA_REF_PREFIX):
        from alphaq.evaluation.datasets import data_dir

        return data_dir() / text[len(DATA_REF_PREFIX) :]
    raw = Path(text).expanduser()
    if raw.is_absolute():
        return demo_model_dir() if not raw.exists() and _is_bundled_path(raw) else raw
    return Path(os.path.normpath(Path(base) / raw))


def display_path(path: str | Path, *, base: str | Path | None = None) -> str:
    """A path as reports print it: relative to ``base`` (default: the working directory) when it lies below it,
    the bundled model's name for the bundled model, else its last two components (never another machine's
    absolute path).

    Args:
        path: a checkpoint or file path as recorded in an artifact.
        base: the directory paths are shown relative to.

    Returns:
        The text to show.
    """
    raw = Path(str(path))
    if str(path) == BUNDLED_MODEL_REF or raw.parts[-3:] == ("alphaq", "data", "demo-moe"):  # wherever installed
        return BUNDLED_MODEL_LABEL
    if not raw.is_absolute():
        return raw.as_posix()
    root = Path(base) if base is not None else Path.cwd()
    try:
        return raw.resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return Path(*raw.parts[-2:]).as_posix() if len(raw.parts) > 2 else raw.as_posix()


def display_paths(text: str, *, base: str | Path | None = None) -> str:
    """``text`` with every absolute path in it shown as :func:`display_path` shows it."""
    import re

    return re.sub(r"(?<![\w.:/])(/[^\s,;()'\"]+)", lambda m: display_path(m.group(1), base=base), text)


__all__ = [name for name in dir() if name.isupper()] + [
    "check_schema",
    "display_path",
    "display_paths",
    "one_line",
    "read_json",
    "record_path",
    "resolve_recorded_path",
]
