"""The console summaries name the checkpoint's own storage type (an F32 source is not called bf16)."""

from __future__ import annotations

from alphaq.cli.summaries import _reference_label


def test_reference_label_names_the_source_type() -> None:
    assert _reference_label("BF16") == "bf16"
    assert _reference_label("F16") == "f16"
    assert _reference_label("F32") == "16-bit (the F32 source takes 2x)"
    assert _reference_label(None) == "16-bit"
