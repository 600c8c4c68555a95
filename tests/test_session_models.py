"""Which fine-tune may install a session's models: the latest one, unless cancelled or reset."""

from demo.session_models import SessionModels


def test_only_the_current_run_installs_its_models():
    models = SessionModels()
    first = models.start_run("a")
    second = models.start_run("a")  # a newer run takes over
    assert not models.is_current("a", first) and models.is_current("a", second)
    assert models.set("a", "old run", None, run=first) is False and models.entry("a").recognizer is None
    assert models.set("a", "tuned", "generator", run=second) is True
    assert (models.entry("a").recognizer, models.entry("a").synthesizer) == ("tuned", "generator")
    assert models.set("a", "again", None, run=second) is False  # a run installs once

    cancelled = models.start_run("a")
    models.cancel_run("a")
    assert models.set("a", "cancelled", None, run=cancelled) is False and models.entry("a").recognizer == "tuned"

    before_reset = models.start_run("a")
    models.reset("a")
    after_reset = models.start_run("a")  # ids are never reused, so the old run cannot pass for this one
    assert after_reset != before_reset and models.set("a", "stale", None, run=before_reset) is False
    assert models.set("b", "other session", None, run=after_reset) is False  # and runs belong to one session
    models.clear()
    assert len(models) == 0
