"""Every class and label name used by ExpressionLab, defined once.

Indices follow FER+ (Barsoum et al. 2016) vote order; the original FER2013 labels use their
own order, mapped onto ours below. Nothing else in the code base spells these names.
"""

from __future__ import annotations

# FER+ order: index i of every probability vector, head and vote column.
EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)

# The original FER2013 label order (`fer2013_label` in the npz files, `emotion` in the CSV).
FER2013_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# FER2013 label -> index into EXPRESSIONS (FER2013 has no contempt).
FER2013_TO_EXPRESSION: tuple[int, ...] = (4, 5, 6, 1, 3, 2, 0)

# Columns of `ferplus_votes`: the 8 expressions, then two non-expression columns.
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = EXPRESSIONS + ("unknown", "not_a_face")

# Common words people use for each class (folder names, CSV labels, UI input).
SYNONYMS: dict[str, str] = {
    **{name: name for name in EXPRESSIONS},
    "neutrality": "neutral", "calm": "neutral", "none": "neutral",
    "happy": "happiness", "joy": "happiness", "smile": "happiness", "smiling": "happiness",
    "surprised": "surprise", "surprize": "surprise", "shock": "surprise", "shocked": "surprise",
    "sad": "sadness", "sorrow": "sadness", "unhappy": "sadness",
    "angry": "anger", "mad": "anger", "rage": "anger",
    "disgusted": "disgust",
    "fearful": "fear", "afraid": "fear", "scared": "fear",
    "contemptuous": "contempt",
}


def expression_index(name: str) -> int:
    """Index into EXPRESSIONS of a class name or common synonym (case-insensitive)."""
    from core.errors import UnknownLabelError

    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in SYNONYMS:
        raise UnknownLabelError(
            f"unknown expression {name!r}; expected one of {', '.join(EXPRESSIONS)} "
            "(or a common synonym such as happy, sad, angry, surprised)"
        )
    return EXPRESSIONS.index(SYNONYMS[key])


# Facial action units (FACS) measured from the face mesh, in the OpenFace / GANimation set.
# core/aus.py documents which facial movement each one measures.
AUS: tuple[str, ...] = (
    "AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10",
    "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26", "AU45",
)

AU_NAMES: dict[str, str] = {
    "AU01": "inner brow raiser", "AU02": "outer brow raiser", "AU04": "brow lowerer",
    "AU05": "upper lid raiser", "AU06": "cheek raiser", "AU07": "lid tightener", "AU09": "nose wrinkler",
    "AU10": "upper lip raiser", "AU12": "lip corner puller", "AU14": "dimpler", "AU15": "lip corner depressor",
    "AU17": "chin raiser", "AU20": "lip stretcher", "AU23": "lip tightener", "AU25": "lips part",
    "AU26": "jaw drop", "AU45": "blink",
}

# The face part each AU moves (FACS): a motion model's AU moves only its part of the mesh (core/models/motion.py),
# and the UI groups the sliders into upper face (brows, eyes, cheeks) and lower face (nose, mouth).
AU_REGIONS: dict[str, str] = {
    "AU01": "brows", "AU02": "brows", "AU04": "brows", "AU05": "eyes", "AU06": "cheeks", "AU07": "eyes",
    "AU09": "nose", "AU10": "mouth", "AU12": "mouth", "AU14": "mouth", "AU15": "mouth", "AU17": "mouth",
    "AU20": "mouth", "AU23": "mouth", "AU25": "mouth", "AU26": "mouth", "AU45": "eyes",
}
UPPER_FACE_AUS: tuple[str, ...] = tuple(a for a in AUS if AU_REGIONS[a] in ("brows", "eyes", "cheeks"))

# FACS / EMFACS prototypes of the expressions (contempt: unilateral 12 + 14).
PROTOTYPE_AUS: dict[str, tuple[str, ...]] = {
    "happiness": ("AU06", "AU12"),
    "sadness": ("AU01", "AU04", "AU15"),
    "surprise": ("AU01", "AU02", "AU05", "AU26"),
    "fear": ("AU01", "AU02", "AU04", "AU05", "AU07", "AU20", "AU26"),
    "anger": ("AU04", "AU05", "AU07", "AU23"),
    "disgust": ("AU09", "AU10", "AU15"),
    "contempt": ("AU12", "AU14"),
}
