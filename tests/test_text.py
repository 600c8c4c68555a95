import pytest

from core.errors import InputError
from core.text import MAX_TEXT_CHARS, parse_text


def test_keywords_and_intensity_words_without_embeddings():
    reading = parse_text("a slightly surprised woman", use_embeddings=False)
    assert max(reading.expression, key=reading.expression.get) == "surprise"
    assert reading.intensity == pytest.approx(0.6)  # slight: weaker than the default 0.85, still readable
    assert parse_text("very angry", use_embeddings=False).intensity == 1.0
    mixed = parse_text("happy but a little scared", use_embeddings=False).expression
    assert mixed["happiness"] == pytest.approx(0.5) and mixed["fear"] == pytest.approx(0.5)
    assert parse_text("", use_embeddings=False).expression["neutral"] == 1.0


def test_bad_text_is_a_typed_error():
    with pytest.raises(InputError, match="limit"):
        parse_text("x" * (MAX_TEXT_CHARS + 1))
    with pytest.raises(InputError):
        parse_text(None)


@pytest.mark.integration
@pytest.mark.parametrize("text,expression,aus", [
    ("a slightly surprised woman raising her eyebrows", "surprise", {"AU01", "AU02"}),
    ("a very happy man with a broad smile", "happiness", {"AU12"}),
    ("furious, frowning with lips pressed tight", "anger", {"AU04", "AU23"}),
    ("someone who just smelled rotten eggs", "disgust", set()),
    ("a little sad, corners of the mouth turned down", "sadness", {"AU15"}),
    ("eyes closed", "neutral", {"AU45"}),
])
def test_sentences_are_understood(text, expression, aus):
    reading = parse_text(text)
    assert reading.method == "keywords+embeddings"
    assert max(reading.expression, key=reading.expression.get) == expression, reading.summary()
    assert aus <= set(reading.aus), reading.summary()
    assert "AU12" not in reading.aus or expression == "happiness"
    assert all(0 <= v <= 1 for v in reading.aus.values())


def test_negated_expression_words_are_ignored():
    reading = parse_text("not happy at all", use_embeddings=False)
    assert reading.expression["happiness"] == 0
    assert parse_text("a man who isn't smiling", use_embeddings=False).expression["happiness"] == 0
    assert parse_text("a little boy smiling", use_embeddings=False).intensity == pytest.approx(0.85)


@pytest.mark.integration
@pytest.mark.parametrize("text,aus", [
    # "the mouth wide" once matched AU14 and AU20, "wide open" AU05 (eyes), "face with the mouth" AU15
    ("a shocked face with the mouth wide open", {"AU26"}),
    ("a surprised man with his mouth open", {"AU25", "AU26"}),
    ("someone yawning with the jaw dropped", {"AU26"}),
    ("eyes wide open and mouth wide open", {"AU05", "AU26"}),
    # two phrases joined by "and" or a comma keep both AUs ("squinting and" / "and smiling" share no meaning)
    ("smiling and squinting", {"AU07", "AU12"}),
    ("frowning and smiling", {"AU04", "AU12"}),
    ("frowning, squinting", {"AU04", "AU07"}),
])
def test_a_phrase_asks_for_its_own_aus_only(text, aus):
    assert set(parse_text(text).aus) == aus, parse_text(text).matches
