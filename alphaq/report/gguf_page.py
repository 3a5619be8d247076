"""gguf_presets.html: alphaq's whole-model GGUF plans against llama.cpp's presets, read from the benchmark's JSON.

The page reads what ``bench/gguf_presets.py`` saved: ``gguf_presets_<model>.json`` (every method scored on
WikiText-2 *test*, with a paired bootstrap interval of its mean KLD minus the preset's) and, when given,
``gguf_study_<model>.json`` (every importance form scored on held-out text, with each form's score). It recomputes
no metric: KL divergences, intervals and form scores are the files' own; the page formats them, reads each
interval as a verdict, counts verdicts and draws. Loading (:func:`load_gguf_bench`) is the only I/O besides the
final atomic write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaq.errors import AlphaQError
from alphaq.report.gguf_tables import (
    DASH,
    DEFAULT_FORM,
    PRESET,
    VERDICT_CLASS,
    finite,
    fmt_value,
    interval_text,
    results_table,
    scores_table,
    size_kld_figure,
    study_table,
    verdict,
    verdict_tally,
)
from alphaq.report.page import Section, empty_note, figure_html, render_page, stat_cards, table_html, write_page
from alphaq.runfolder import read_json

#: The page's file name in the ``--out`` folder.
GGUF_PRESETS_HTML = "gguf_presets.html"
_REQUIRED_ROW_KEYS = ("text", "preset", "method", "file_bytes", "mean_kld")
_FIX = "re-run `python bench/gguf_presets.py --model MODEL` (with --study for a study file) to write it"


@dataclass(frozen=True)
class GgufBench:
    """One saved benchmark file.

    Attributes:
        name: the file's name (never its folder: pages show no absolute paths).
        record: the parsed JSON object (``rows`` checked to be a non-empty list of rows with the required keys).
        study: a study file (``--study``: importance forms on held-out text) rather than a results file.
    """

    name: str
    record: Mapping[str, Any]
    study: bool

    def __post_init__(self) -> None:
        rows = self.record.get("rows")
        if not isinstance(rows, list) or not rows:
            raise AlphaQError(f"{self.name}: no rows (not a finished gguf_presets run); {_FIX}")

    @property
    def model(self) -> str:
        """The benchmarked model's label."""
        return str(self.record.get("model") or Path(self.name).stem)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The scored GGUFs."""
        return list(self.record["rows"])


def load_gguf_bench(path: str | Path) -> GgufBench:
    """Read and check one ``gguf_presets_<model>.json`` or ``gguf_study_<model>.json``.

    Args:
        path: the file.

    Returns:
        The benchmark record.

    Raises:
        AlphaQError: a missing or non-JSON file, no rows, or a row without a required key; one line.
    """
    path = Path(path)
    record = read_json(path, fix=_FIX)
    rows = record.get("rows")
    if not isinstance(rows, list) or not rows:
        raise AlphaQError(f"{path}: no rows (not a finished gguf_presets run); {_FIX}")
    for i, row in enumerate(rows):
        missing = [k for k in _REQUIRED_ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise AlphaQError(f"{path}: row {i} has no {missing[0]!r}; {_FIX}")
    study = "form_scores" in record or path.name.startswith("gguf_study")
    return GgufBench(path.name, record, study)


# -- page ----------------------------------------------------------------------------------------------


def _protocol_cards(bench: GgufBench) -> str:
    rec = bench.record
    llama = rec.get("llama_cpp") if isinstance(rec.get("llama_cpp"), Mapping) else {}
    commit = str(llama.get("llama_cpp_commit") or "")[:12] or DASH
    sizes = rec.get("f16_bytes")
    return stat_cards(
        [
            (
                "Windows",
                f"{rec.get('chunks', DASH)} \u00d7 {rec.get('ctx', DASH)} tokens",
                "the first windows of each text",
            ),
            ("F16 GGUF", f"{float(sizes) / 1e6:.2f} MB" if finite(sizes) else DASH, "the reference logits"),
            ("Run time", f"{float(rec['seconds']) / 60:.1f} min" if finite(rec.get("seconds")) else DASH, ""),
            ("llama.cpp", commit, f"llama-cpp-python {llama.get('llama_cpp_python') or DASH}"),
            ("Machine", str(rec.get("machine") or DASH), ""),
            ("Fingerprint", str(rec.get("fingerprint") or DASH)[:16], bench.name),
        ]
    )


def _results_sections(bench: GgufBench) -> list[Section]:
    rows = bench.rows
    table = results_table(rows)
    cls = {"verdict": lambda v: VERDICT_CLASS.get(str(v), "")}
    tally = table_html(verdict_tally(rows), sortable=False, caption="Presets won, tied and lost, per method.")
    results = table_html(
        table,
        float_format=fmt_value,
        cell_class=cls,
        caption="\u0394: the method's mean KLD minus the preset's on the same windows, with its 95 % paired "
        "bootstrap interval over windows; win = interval entirely below 0, loss = entirely above, else tie.",
    )
    texts = ", ".join(dict.fromkeys(str(r["text"]) for r in rows))
    fig = size_kld_figure(rows)
    figure = (
        figure_html(fig, alt=f"{bench.model}: file size vs mean KL divergence")
        if fig is not None
        else empty_note("no row has a positive mean KLD to draw")
    )
    return [
        Section(
            f"{bench.model}: against llama.cpp's presets",
            _protocol_cards(bench) + tally + results,
            f"Each GGUF's KL divergence from the F16 GGUF's logits on {texts}; alphaq's plans are sized to the "
            "preset's file.",
        ),
        Section(
            f"{bench.model}: size vs mean KLD",
            figure,
            "Lower and to the left is better; the dashed black line is llama.cpp's data-free preset.",
        ),
    ]


def _study_section(bench: GgufBench) -> Section:
    rows = bench.rows
    scores = bench.record.get("form_scores")
    scores = scores if isinstance(scores, Mapping) else {}
    texts = ", ".join(dict.fromkeys(str(r["text"]) for r in rows))
    sentence = (
        f"<p>The default importance form ({DEFAULT_FORM}) was chosen on held-out text ({texts}), never on the test "
        "text (WikiText-2 test) that the results are scored on. A form's score is the mean over (text, preset) of "
        "its mean KLD divided by the preset's: below 1 beats llama.cpp's preset on average.</p>"
    )
    score_html = (
        table_html(scores_table(scores), float_format="{:.3f}", sortable=False, caption="Form scores, best first.")
        if scores
        else empty_note("no form scores saved (a partial study run); the table shows the rows saved so far")
    )
    grids = "".join(
        table_html(
            study_table(rows, scores, text),
            float_format=fmt_value,
            caption=f"Mean KL divergence from F16 on {text}, per importance form (rows) at each preset's size.",
        )
        for text in dict.fromkeys(str(r["text"]) for r in rows)
    )
    return Section(
        f"{bench.model}: importance-form study",
        _protocol_cards(bench) + sentence + score_html + grids,
        "Every importance form at every preset's file size, on text the results never use.",
    )


def _warnings(benches: Sequence[GgufBench]) -> list[str]:
    lines = []
    for bench in benches:
        if bench.study and not isinstance(bench.record.get("form_scores"), Mapping):
            lines.append(f"{bench.name}: no form scores (a partial study run)")
        if not bench.study:
            bare = [r for r in bench.rows if r["method"] != PRESET and verdict(r.get("vs_preset")) == DASH]
            if bare:
                lines.append(f"{bench.name}: {len(bare)} rows without a paired interval to the preset (no verdict)")
        preset = {(r["text"], r["preset"]): r.get("file_bytes") for r in bench.rows if r["method"] == PRESET}
        for r in bench.rows:
            ref = preset.get((r["text"], r["preset"]))
            if finite(ref) and finite(r.get("file_bytes")) and float(r["file_bytes"]) > 1.01 * float(ref):
                lines.append(f"{bench.name}: {r['method']} at {r['preset']} is over 1 % larger than the preset's file")
    return lines


def gguf_presets_html(benches: Sequence[GgufBench]) -> str:
    """The page's HTML: per model its results (table, verdicts, figure) and its study, models in file order.

    Args:
        benches: loaded results and study files (:func:`load_gguf_bench`).

    Returns:
        The HTML text.
    """
    models = list(dict.fromkeys(b.model for b in benches))
    sections: list[Section] = []
    for model in models:
        own = [b for b in benches if b.model == model]
        for bench in own:
            if not bench.study:
                sections.extend(_results_sections(bench))
        sections.extend(_study_section(b) for b in own if b.study)
    fingerprints = {str(b.record.get("fingerprint") or "") for b in benches}
    provenance = {
        "model": ", ".join(models),
        "fingerprint": fingerprints.pop() if len(fingerprints) == 1 else "",
        "Result files": ", ".join(b.name for b in benches),
    }
    return render_page(
        "alphaq GGUF plans vs llama.cpp presets",
        provenance,
        sections,
        warnings=_warnings(benches),
        subtitle="KL divergence from the F16 model at the same file size (bench/gguf_presets.py)",
    )


def render_gguf_presets(result_files: Sequence[Path], out: Path) -> Path:
    """Write ``out/gguf_presets.html`` from saved ``bench/gguf_presets.py`` files; nothing is recomputed.

    Args:
        result_files: ``gguf_presets_<model>.json`` files (one per model) and optionally ``gguf_study_<model>.json``.
        out: the folder of the page (created if missing).

    Returns:
        The written page's path.

    Raises:
        AlphaQError: no file given, or a file is missing, not JSON or holds no rows; one line. Nothing is written.
    """
    if not result_files:
        raise AlphaQError("no result files given; pass bench/results/gguf_presets_<model>.json files")
    benches = [load_gguf_bench(p) for p in result_files]
    return write_page(Path(out) / GGUF_PRESETS_HTML, gguf_presets_html(benches))


__all__ = [
    "GGUF_PRESETS_HTML",
    "GgufBench",
    "gguf_presets_html",
    "interval_text",
    "load_gguf_bench",
    "render_gguf_presets",
    "verdict",
]
