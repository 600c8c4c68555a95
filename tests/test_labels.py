import pytest

from core.errors import InputError, UnknownLabelError
from core.labels import EXPRESSIONS, FER2013_LABELS, FER2013_TO_EXPRESSION, expression_index


def test_expressions_are_ferplus_order():
    assert EXPRESSIONS == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")


def test_fer2013_mapping_names_match():
    pairs = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness", "sad": "sadness",
             "surprise": "surprise", "neutral": "neutral"}
    for i, name in enumerate(FER2013_LABELS):
        assert EXPRESSIONS[FER2013_TO_EXPRESSION[i]] == pairs[name]


@pytest.mark.parametrize("word,expected", [("Happy", 1), ("angry", 4), (" SAD ", 3), ("surprised", 2),
                                           ("contempt", 7), ("scared", 6)])
def test_synonyms(word, expected):
    assert expression_index(word) == expected


def test_unknown_label_is_a_typed_input_error():
    with pytest.raises(UnknownLabelError, match="unknown expression 'bored'"):
        expression_index("bored")
    assert issubclass(UnknownLabelError, InputError)
