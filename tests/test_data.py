import numpy as np
import pytest
from PIL import Image

from core.errors import DatasetError, UnknownLabelError
from core.training.data import load_split, read_class_folders, votes_to_targets


def test_votes_to_targets_drops_single_stray_votes_and_non_faces():
    votes = np.array([
        [8, 1, 0, 0, 0, 0, 0, 0, 1, 0],  # the single happiness vote is noise
        [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 9],  # not a face
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # one vote only: kept
    ])
    t = votes_to_targets(votes)
    assert np.allclose(t[0], np.eye(8)[0])
    assert np.allclose(t[1][:2], [0.5, 0.5])
    assert t[2].sum() == 0
    assert np.allclose(t[3], np.eye(8)[0])


def test_npz_layout(tiny_dataset):
    split = load_split(tiny_dataset, "train")
    assert split.images.shape == (256, 48, 48) and split.images.dtype == np.uint8
    assert np.allclose(split.soft_targets.sum(axis=1), 1)
    assert (split.soft_targets.argmax(axis=1) == split.ferplus_label).all()


def test_class_folders_with_synonyms(tmp_path):
    for folder in ("happy", "Angry", "neutral"):
        (tmp_path / "train" / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (60, 60), (i * 100, 0, 0)).save(tmp_path / "train" / folder / f"{i}.png")
    (tmp_path / "train" / "happy" / "notes.txt").write_text("ignored")
    split = load_split(tmp_path, "train")
    assert split.images.shape == (6, 48, 48)
    assert sorted(split.ferplus_label.tolist()) == [0, 0, 1, 1, 4, 4]
    (tmp_path / "bad" / "bored").mkdir(parents=True)
    with pytest.raises(UnknownLabelError):
        read_class_folders(tmp_path / "bad")


def test_fer2013_csv(tmp_path):
    rows = ["emotion,pixels,Usage"]
    for emotion, usage in [(3, "Training"), (0, "Training"), (6, "PublicTest"), (5, "PrivateTest")]:
        rows.append(f"{emotion},{' '.join(['128'] * 2304)},{usage}")
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(rows))
    train = load_split(path, "train")
    assert train.images.shape == (2, 48, 48)
    assert train.fer2013_label.tolist() == [3, 0] and train.ferplus_label.tolist() == [1, 4]
    assert load_split(tmp_path, "test").fer2013_label.tolist() == [5]


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no train data"):
        load_split(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_split(tmp_path, "dev")
    (tmp_path / "train.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError):
        load_split(tmp_path, "train")


def test_csv_without_usage_has_only_a_train_split(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("emotion,pixels\n3," + " ".join(["7"] * 2304) + "\n")
    assert load_split(path, "train").images.shape == (1, 48, 48)
    with pytest.raises(DatasetError, match="no Usage column"):
        load_split(path, "test")
    path.write_text("emotion,pixels,Usage\n9," + " ".join(["7"] * 2304) + ",Training\n")
    with pytest.raises(DatasetError, match="not a FER2013 label"):
        load_split(path, "train")
    path.write_text("emotion,pixels,Usage\n1," + " ".join(["300"] * 2304) + ",Training\n")
    with pytest.raises(DatasetError, match="0-255"):
        load_split(path, "train")
