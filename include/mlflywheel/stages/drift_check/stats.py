"""Vectorized drift statistics, one column at a time, on NumPy arrays.

Numeric columns: PSI on the reference's quantile bins, the two-sample KS statistic (with its
asymptotic p-value), and the Wasserstein distance divided by the reference's standard
deviation. All three come from one sort of each side and one linear merge, so 1M rows take
tens of milliseconds per column. Numeric columns with at most five distinct values are
judged like categories (as Evidently does).

Categorical columns: PSI, the chi-square test of homogeneity (with Cramér's V), the
Jensen-Shannon distance (natural log, as ``scipy.spatial.distance.jensenshannon``), and the
categories the reference never saw.

A column counts as drifted when an *effect size* crosses its limit (PSI, normalized
Wasserstein, JS distance, unseen share, null-share increase) **and** the difference is
significant at ``alpha``: at large n every p-value is tiny, so a p-value alone would flag
stable columns; at small n an effect size alone is noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mlflywheel.services.errors import DriftInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlflywheel.services.config import FeatureDriftLimits

Kind = Literal["numeric", "discrete", "categorical"]
#: floor for empty bins in PSI (a share of 0 would make the log infinite)
PSI_EPS = 1e-4
#: numeric columns with at most this many distinct values are compared as categories
DISCRETE_MAX_VALUES = 5


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column between the reference and the current window."""

    column: str
    kind: Kind
    drifted: bool
    #: the statistic the decision leans on: ``wasserstein`` (numeric) or ``jensen_shannon``
    statistic: str
    score: float
    psi: float
    p_value: float
    rows_reference: int
    rows_current: int
    null_share_reference: float
    null_share_current: float
    ks: float | None = None
    wasserstein: float | None = None
    jensen_shannon: float | None = None
    chi2: float | None = None
    cramers_v: float | None = None
    unseen_count: int = 0
    unseen_share: float = 0.0
    unseen_examples: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# --- building blocks -------------------------------------------------------------------
def psi(reference_share: np.ndarray, current_share: np.ndarray) -> float:
    """Population stability index of two share vectors over the same bins."""
    import numpy as np

    r = np.maximum(reference_share, PSI_EPS)
    c = np.maximum(current_share, PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (natural log) of two share vectors; 0 identical, ln(2)**0.5 disjoint."""
    import numpy as np

    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(math.sqrt(max((kl_p + kl_q) / 2, 0.0)))


def chi_square(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float, float]:
    """Chi-square test of homogeneity on a 2 x K table: statistic, p-value, Cramér's V."""
    import numpy as np
    from scipy.stats import chi2

    table = np.vstack([reference_counts, current_counts]).astype("float64")
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    total = table.sum()
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / total
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, float(chi2.sf(stat, table.shape[1] - 1)), math.sqrt(stat / total)


def ks_wasserstein(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """Exact KS statistic and (unnormalized) Wasserstein-1 distance of two sorted samples.

    One stable merge of the two sorted runs (linear for timsort) gives both empirical CDFs.
    """
    import numpy as np

    n, m = len(ref_sorted), len(cur_sorted)
    values = np.concatenate([ref_sorted, cur_sorted])
    order = np.argsort(values, kind="stable")
    merged = values[order]
    from_ref = order < n
    cdf_diff = np.cumsum(from_ref) / n - np.cumsum(~from_ref) / m
    steps = np.diff(merged)
    wasserstein = float(np.sum(np.abs(cdf_diff[:-1]) * steps))
    # KS is taken where a run of tied values ends (inside a tie the CDFs are not defined yet).
    ends = np.append(steps != 0, True)
    ks = float(np.max(np.abs(cdf_diff[ends]))) if len(merged) else 0.0
    return ks, wasserstein


def ks_p_value(ks: float, n: int, m: int) -> float:
    """Asymptotic two-sided p-value of a two-sample KS statistic."""
    from scipy.stats import kstwobign

    if n == 0 or m == 0:
        return 1.0
    return float(kstwobign.sf(ks * math.sqrt(n * m / (n + m))))


# --- one column ------------------------------------------------------------------------
def numeric_drift(name: str, reference: np.ndarray, current: np.ndarray, limits: FeatureDriftLimits, *,
                  bins: int = 10) -> ColumnDrift:
    """Drift of a numeric column (NaN are nulls: counted, then left out of the statistics)."""
    import numpy as np

    ref_all = np.asarray(reference, dtype="float64")
    cur_all = np.asarray(current, dtype="float64")
    ref = np.sort(ref_all[~np.isnan(ref_all)])
    cur = np.sort(cur_all[~np.isnan(cur_all)])
    nulls = _null_shares(name, len(ref_all), len(ref), len(cur_all), len(cur))
    distinct = _distinct_sorted(ref, DISCRETE_MAX_VALUES + 1)
    if len(distinct) <= DISCRETE_MAX_VALUES:
        distinct = np.union1d(distinct, _distinct_sorted(cur, DISCRETE_MAX_VALUES + 1))
    if len(distinct) <= DISCRETE_MAX_VALUES:
        return _categorical_from_codes(name, "discrete", *_codes(ref, cur), [str(v) for v in distinct],
                                       limits, nulls=nulls, count_unseen=False)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.diff(np.concatenate([[0], np.searchsorted(ref, edges, side="right"), [len(ref)]]))
    cur_counts = np.diff(np.concatenate([[0], np.searchsorted(cur, edges, side="right"), [len(cur)]]))
    psi_value = psi(ref_counts / len(ref), cur_counts / len(cur))
    ks, wasserstein = ks_wasserstein(ref, cur)
    norm = max(float(np.std(ref)), 0.001)
    w_norm = wasserstein / norm
    p_value = ks_p_value(ks, len(ref), len(cur))
    reasons = []
    significant = p_value < limits.alpha
    if significant and w_norm >= limits.wasserstein:
        reasons.append(f"wasserstein {w_norm:.3f} >= {limits.wasserstein}")
    if significant and psi_value >= limits.psi:
        reasons.append(f"psi {psi_value:.3f} >= {limits.psi}")
    reasons += _null_reason(nulls, limits)
    return ColumnDrift(column=name, kind="numeric", drifted=bool(reasons), statistic="wasserstein",
                       score=w_norm, psi=psi_value, p_value=p_value, rows_reference=len(ref_all),
                       rows_current=len(cur_all), null_share_reference=nulls[0], null_share_current=nulls[1],
                       ks=ks, wasserstein=w_norm, reasons=reasons)


def categorical_drift(name: str, reference: pd.Series | np.ndarray, current: pd.Series | np.ndarray,
                      limits: FeatureDriftLimits) -> ColumnDrift:
    """Drift of a categorical column (nulls counted, then left out of the statistics)."""
    import numpy as np
    import pandas as pd

    ref_s = pd.Series(reference, copy=False)
    cur_s = pd.Series(current, copy=False)
    ref_ok, cur_ok = ref_s.notna().to_numpy(), cur_s.notna().to_numpy()
    nulls = _null_shares(name, len(ref_s), int(ref_ok.sum()), len(cur_s), int(cur_ok.sum()))
    ref_v = ref_s.to_numpy()[ref_ok].astype(str)
    cur_v = cur_s.to_numpy()[cur_ok].astype(str)
    codes, uniques = pd.factorize(np.concatenate([ref_v, cur_v]), sort=False)
    return _categorical_from_codes(name, "categorical", codes[:len(ref_v)], codes[len(ref_v):],
                                   [str(u) for u in uniques], limits, nulls=nulls, count_unseen=True)


def _distinct_sorted(values: np.ndarray, limit: int) -> np.ndarray:
    """Up to ``limit`` distinct values of a sorted array (cheap: one diff, no second sort)."""
    import numpy as np

    if not len(values):
        return values
    return values[np.flatnonzero(np.append(True, np.diff(values) != 0))[:limit]]


def _codes(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    values = np.unique(np.concatenate([ref, cur]))
    return np.searchsorted(values, ref), np.searchsorted(values, cur)


def _categorical_from_codes(name: str, kind: Kind, ref_codes: np.ndarray, cur_codes: np.ndarray,
                            labels: list[str], limits: FeatureDriftLimits, *, nulls: tuple[float, float, int, int],
                            count_unseen: bool) -> ColumnDrift:
    import numpy as np

    k = len(labels)
    ref_counts = np.bincount(ref_codes, minlength=k)
    cur_counts = np.bincount(cur_codes, minlength=k)
    n, m = int(ref_counts.sum()), int(cur_counts.sum())
    ref_share, cur_share = ref_counts / max(n, 1), cur_counts / max(m, 1)
    psi_value = psi(ref_share, cur_share)
    js = jensen_shannon(ref_share, cur_share) if n and m else 0.0
    stat, p_value, cramers_v = chi_square(ref_counts, cur_counts)
    unseen = (ref_counts == 0) & (cur_counts > 0)
    unseen_count = int(cur_counts[unseen].sum()) if count_unseen else 0
    unseen_share = unseen_count / m if m else 0.0
    examples = [labels[i] for i in np.argsort(-cur_counts * unseen)[:5] if unseen[i]] if count_unseen else []
    reasons = []
    significant = p_value < limits.alpha
    if significant and js >= limits.jensen_shannon:
        reasons.append(f"jensen_shannon {js:.3f} >= {limits.jensen_shannon}")
    if significant and psi_value >= limits.psi:
        reasons.append(f"psi {psi_value:.3f} >= {limits.psi}")
    if unseen_share > limits.max_unseen_share:
        reasons.append(f"{unseen_count} rows ({unseen_share:.1%}) with categories the reference never saw: "
                       f"{examples}")
    reasons += _null_reason(nulls, limits)
    return ColumnDrift(column=name, kind=kind, drifted=bool(reasons), statistic="jensen_shannon", score=js,
                       psi=psi_value, p_value=p_value, rows_reference=nulls[2], rows_current=nulls[3],
                       null_share_reference=nulls[0], null_share_current=nulls[1], jensen_shannon=js, chi2=stat,
                       cramers_v=cramers_v, unseen_count=unseen_count, unseen_share=unseen_share,
                       unseen_examples=examples, reasons=reasons)


def _null_shares(name: str, n_all: int, n_ok: int, m_all: int, m_ok: int) -> tuple[float, float, int, int]:
    if n_ok == 0:
        raise DriftInputError(f"column {name!r} is entirely null in the reference ({n_all} rows): "
                              "nothing to compare against")
    if m_all and m_ok == 0:
        raise DriftInputError(f"column {name!r} is entirely null in the current window ({m_all} rows; "
                              f"reference null share {1 - n_ok / n_all:.1%}): a broken feed, not drift")
    return 1 - n_ok / n_all, (1 - m_ok / m_all) if m_all else 0.0, n_all, m_all


def _null_reason(nulls: tuple[float, float, int, int], limits: FeatureDriftLimits) -> list[str]:
    increase = nulls[1] - nulls[0]
    if increase > limits.max_null_share_increase:
        return [f"null share {nulls[0]:.1%} -> {nulls[1]:.1%}"]
    return []


# --- a frame ---------------------------------------------------------------------------
def compare_frames(reference: pd.DataFrame, current: pd.DataFrame, *, numeric: list[str], categorical: list[str],
                   limits: FeatureDriftLimits, bins: int = 10, where: str = "current window") -> list[ColumnDrift]:
    """Drift of each listed column, categorical first.

    Raises:
        DriftInputError: a column is missing from either side or entirely null (names it).
    """
    for side, frame in (("reference", reference), (where, current)):
        missing = [c for c in [*categorical, *numeric] if c not in frame.columns]
        if missing:
            raise DriftInputError(f"{side}: column(s) {missing} missing; expected the model inputs "
                                  f"{[*categorical, *numeric]}, found {sorted(frame.columns)}")
    for side, frame in (("reference", reference), (where, current)):
        if frame.empty:
            raise DriftInputError(f"{side} has no rows: nothing to compare (an empty window is skipped upstream)")
    results = [categorical_drift(c, reference[c], current[c], limits) for c in categorical]
    for column in numeric:
        results.append(numeric_drift(column, _as_float(reference[column], column, "reference"),
                                     _as_float(current[column], column, where), limits, bins=bins))
    return results


def _as_float(series: pd.Series, column: str, side: str) -> np.ndarray:
    import pandas as pd

    if not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)):
        raise DriftInputError(f"{side}: column {column!r} should be numeric, found dtype {series.dtype}")
    values: np.ndarray = series.to_numpy(dtype="float64", na_value=float("nan"))
    return values
