"""The Fine-tune tab end to end through gradio_client, and its isolation between sessions."""

import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_fine_tune_through_the_app_and_a_second_client_keeps_the_shipped_model(app_url, data_dir, tmp_path,
                                                                               grace_hopper, recognizer):
    from gradio_client import Client, handle_file

    from core.benchmarks.finetune import fer_upload_zip
    from core.synthesizer import Synthesizer

    archive = tmp_path / "faces.zip"
    archive.write_bytes(fer_upload_zip(str(data_dir), 30)[0])
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("../escape.png", b"x")
    first, second = Client(app_url, verbose=False), Client(app_url, verbose=False)
    summary, rejected, before, after, losses, accuracy, matrices, download = first.predict(
        [handle_file(str(archive))], "(from folders or CSV)", 20, True, api_name="/fine_tune")
    assert "faces** ready" in summary and "unsafe path" in rejected
    assert before.startswith("**Before:** accuracy") and after.startswith("**After:** accuracy")
    assert "Before" in matrices and "After" in matrices
    curves = {row[accuracy["columns"].index("curve")] for row in accuracy["data"]}
    assert curves == {"held-out faces", "training batches"}
    loss_curves = {row[losses["columns"].index("curve")] for row in losses["data"]}
    assert {"real faces", "synthetic faces", "intra-class"} <= loss_curves  # a joint run: every term drawn
    assert sorted(Path(p).name for p in download) == ["generator-finetuned.safetensors",
                                                      "recognizer-finetuned.safetensors"]
    tuned_generator = Synthesizer.load(path=next(p for p in download if "generator" in p), device="cpu")
    assert tuned_generator.metadata.get("fine_tuned") is True and tuned_generator.d is not None

    ticked, status = first.predict(True, api_name="/use_fine_tuned")
    assert ticked is True and "fine-tuned" in status
    ticked, status = second.predict(True, api_name="/use_fine_tuned")
    assert ticked is False and "Fine-tune first" in status  # nothing to switch to: the box unticks
    _, cards_first, _ = first.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    _, cards_second, _ = second.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    shipped = recognizer.predict(grace_hopper)[0]
    assert f"{shipped.probs[shipped.label]:.1%}" in cards_second  # the second visitor: shipped model
    assert cards_first != cards_second  # the first visitor: their fine-tuned model

    first.predict(api_name="/reset_models")
    _, cards_reset, _ = first.predict(handle_file(str(grace_hopper)), api_name="/analyse_photo")
    assert cards_reset == cards_second
