"""StyleGen's training batches: the real-face pools, the classes of a D batch, real faces and fake conditions.

Real and generated faces in one D batch share their classes (drawn once, `batch_classes`). A projection
discriminator's optimal logit carries log p_real(c) / p_fake(c) (Miyato & Koyama 2018): with real faces drawn
at FER+'s frequencies and fakes uniform, contempt (0.6% of train) was 95% fake for D, the condition alone
told fake from real, and the rarest classes collapsed first (contempt, disgust, fear: 170, 195, 656 faces).
Classes are drawn with p_k ~ n_k ** class_temper (1: FER+'s frequencies, 0: uniform) for both sides.

The batch is two halves with the same classes and conditions (row i and row i + n/2): the fake pair differs
only in z, the real pair is two faces of one class, which is what the diversity term compares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.labels import EXPRESSIONS


@dataclass
class Pools:
    images: torch.Tensor  # uint8 [N, 48, 48]
    targets: torch.Tensor  # [N, 8] FER+ vote distributions
    aus: torch.Tensor  # [N, 17] measured (class-typical where no mesh)
    au_known: torch.Tensor  # [N] bool
    by_class: list[torch.Tensor]  # per class: rows with a measured mesh (fake conditions copy their AUs)
    class_aus: dict  # typical AUs per expression (the Synthesizer's default AU condition)
    members: list[torch.Tensor] | None = None  # per class: all its rows (majority vote); None: by_class

    def class_rows(self) -> list[torch.Tensor]:
        return self.members if self.members is not None else self.by_class


def load_pools(data_dir, au_cache) -> Pools:
    from core.face.aus import consistent_aus
    from core.training.data import load_split
    from core.training.generator import class_mean_aus, load_au_targets
    from core.training.recognizer import trainable_index

    full = load_split(data_dir, "train")
    aus_full = load_au_targets(data_dir, "train", au_cache, full.images)  # the cache indexes the full split
    keep = trainable_index(full)
    train, aus_np = full.subset(keep), aus_full[keep]
    labels = train.soft_targets.argmax(axis=1)
    class_aus = class_mean_aus(aus_np, labels)
    known = np.isfinite(aus_np[:, 0])
    typical = consistent_aus(np.array([class_aus[EXPRESSIONS[k]] for k in labels], np.float32))
    aus = torch.from_numpy(np.where(np.isfinite(aus_np), aus_np, typical)).float()
    members = [torch.from_numpy(np.flatnonzero(labels == k)) for k in range(len(EXPRESSIONS))]
    by_class = [torch.from_numpy(np.flatnonzero((labels == k) & known)) for k in range(len(EXPRESSIONS))]
    by_class = [p if len(p) else members[k] for k, p in enumerate(by_class)]
    return Pools(torch.from_numpy(train.images), torch.from_numpy(train.soft_targets), aus,
                 torch.from_numpy(known), by_class, class_aus, members)


def class_probabilities(pools: Pools, temper: float) -> torch.Tensor:
    counts = torch.tensor([float(len(p)) for p in pools.class_rows()])
    p = torch.where(counts > 0, counts.clamp(min=1) ** temper, torch.zeros(()))
    return p / p.sum()


def batch_classes(pools: Pools, n: int, gen: torch.Generator, temper: float) -> torch.Tensor:
    """Classes [n] of one D batch, the second half repeating the first (pairs i, i + n // 2)."""
    half = torch.multinomial(class_probabilities(pools, temper), (n + 1) // 2, replacement=True, generator=gen)
    return torch.cat([half, half])[:n]


def _pick(rows: list[torch.Tensor], classes: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.stack([p[torch.randint(0, len(p), (1,), generator=gen)][0] for p in (rows[int(k)] for k in classes)])


def real_batch(pools: Pools, n: int, gen: torch.Generator, classes: torch.Tensor | None = None):
    """Real faces in G's range and their conditions (own votes, measured AUs); of the given classes if any
    (one face per entry), else drawn at FER+'s frequencies."""
    from core.models.generator import condition_from_targets, to_generator_range

    if classes is None:
        index = torch.randint(0, len(pools.images), (n,), generator=gen)
    else:
        index = _pick(pools.class_rows(), classes, gen)
    cond = condition_from_targets(pools.targets[index], pools.aus[index])
    return to_generator_range(pools.images[index]), cond, pools.targets[index], pools.aus[index], pools.au_known[index]


def fake_conditions(pools: Pools, n: int, gen: torch.Generator, tc, classes: torch.Tensor | None = None) -> dict:
    """Conditions for generated faces, of the given classes (else uniform).

    Half are one-hot at a random intensity (what the Synthesizer asks for), half copy a real face's
    votes; AUs come from a real face of the class, and on au_perturb of them some are re-drawn at
    random so that G learns to follow an AU apart from its usual expression. With `classes` from
    batch_classes, the second half of the batch repeats the first half's conditions (pairs).
    """
    from core.face.aus import consistent_aus
    from core.models.generator import condition_from_targets, make_condition

    paired = classes is not None
    m = (n + 1) // 2 if paired else n
    k = classes[:m] if paired else torch.randint(0, len(EXPRESSIONS), (n,), generator=gen)
    rows = _pick(pools.by_class, k, gen)
    aus = pools.aus[rows].clone()
    perturbed = torch.rand(m, generator=gen) < tc.au_perturb
    redraw = (torch.rand(m, aus.shape[1], generator=gen) < 0.3) & perturbed[:, None]
    aus = consistent_aus(torch.where(redraw, torch.rand(aus.shape, generator=gen), aus))
    onehot = torch.rand(m, generator=gen) < tc.onehot_share
    full = torch.rand(m, generator=gen) < 0.5
    intensity = torch.where(full, torch.ones(m), 0.3 + 0.7 * torch.rand(m, generator=gen))
    cond = torch.where(onehot[:, None], make_condition(F.one_hot(k, len(EXPRESSIONS)).float(), intensity, aus),
                       condition_from_targets(pools.targets[rows], aus))
    readable = onehot & ~perturbed & (intensity > 0.7)  # the recognizer hinge judges only these
    info = {"cond": cond, "classes": k, "perturbed": perturbed, "readable": readable, "redrawn": redraw}
    if paired:
        info = {name: torch.cat([v, v])[:n] for name, v in info.items()}
    info["paired"] = paired
    return info
