"""A face descriptor independent of the project's models: uniform LBP(8, 1) histograms over a grid of
cells (Ahonen et al. 2006), compared by chi-square; photo edits are re-identified with it."""

from __future__ import annotations

import numpy as np

LBP_CELLS = 8


def _uniform_table() -> np.ndarray:
    """Map of the 256 8-bit LBP codes to 59 bins: one per uniform pattern (<= 2 transitions), one for the rest."""
    table = np.full(256, 58, np.int64)
    uniform = [c for c in range(256) if bin(c ^ ((c >> 1) | ((c & 1) << 7))).count("1") <= 2]
    table[uniform] = np.arange(len(uniform))
    return table


UNIFORM = _uniform_table()


def lbp_histograms(grey: np.ndarray, cells: int = LBP_CELLS) -> np.ndarray:
    """Concatenated, normalised uniform LBP(8, 1) histograms over a cells x cells grid."""
    g = grey.astype(np.int16)
    centre = g[1:-1, 1:-1]
    offsets = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
    code = np.zeros(centre.shape, np.int64)
    for bit, (dy, dx) in enumerate(offsets):
        code |= (g[1 + dy : g.shape[0] - 1 + dy, 1 + dx : g.shape[1] - 1 + dx] >= centre).astype(np.int64) << bit
    bins = UNIFORM[code]
    h, w = bins.shape
    hist = []
    for i in range(cells):
        for j in range(cells):
            cell = bins[i * h // cells : (i + 1) * h // cells, j * w // cells : (j + 1) * w // cells]
            counts = np.bincount(cell.ravel(), minlength=59).astype(np.float64)
            hist.append(counts / max(1.0, counts.sum()))
    return np.concatenate(hist)


def chi_square(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chi-square distances [len(a), len(b)] between histogram rows."""
    out = np.empty((len(a), len(b)))
    for i, row in enumerate(a):
        out[i] = (((row - b) ** 2) / (row + b + 1e-10)).sum(axis=1)
    return out


def rank1(probes: np.ndarray, probe_ids: np.ndarray, gallery: np.ndarray, gallery_ids: np.ndarray) -> float:
    if len(probes) == 0:
        return float("nan")
    nearest = chi_square(probes, gallery).argmin(axis=1)
    return float((gallery_ids[nearest] == probe_ids).mean())
