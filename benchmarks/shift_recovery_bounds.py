"""What no challenger can beat at 100 production labels: the bounds bench_shift_recovery.py prints.

Two kinds of bound, per scenario, on the images of the half (never a deployable model: these see
every answer):

1. **The oracle threshold** (:func:`threshold_bounds`): the best threshold on the champion's scores,
   chosen with every answer known. It is the ceiling of every re-mapping challenger (threshold, Platt,
   temperature: monotone maps of the champion's score); head, fine-tune and retrain change the scores
   and are not bounded by it.
   :func:`challenger_oracle` is the same oracle on a *challenger's* scores (per draw, on the
   production images it never saw): what a perfect operating point would have given that challenger's
   ranking. When it cannot reach a target either, no threshold rule on that challenger can; when it
   can, the shortfall is the threshold's, set on a few dozen labels.
2. **The promotion power of the declared test** (:func:`promotion_power`): how often the rule's first
   part, the paired one-sided sign-flip test of the per-case cost at alpha
   (:func:`closedloop.stats.promotion.cost_comparison`, the very function the rule calls), finds a
   given challenger better than the champion on ``n`` random evaluation labels, simulated over draws.
   Promotion also needs non-inferiority on the original test split, so this is an upper bound on the
   promotion rate. Three fixed challengers are simulated:

   - the oracle threshold above;
   - a challenger **exactly at the issue's cost target** (cost per case 40% below the champion's) that
     makes no new error: it corrects a fixed random set of the champion's errors (false alarms first,
     the cheaper ones, so that as many cases as possible carry the gain) and errs nowhere else. The
     sign-flip test finds a gain easiest when it is spread over many cases and no case goes the other
     way, so a challenger that merely meets the cost target is found better about this often at most;
   - a **perfect** challenger (no error at all): the ceiling of anything.

   When the target challenger's power at the protocol's evaluation size is below 90%, the issue's
   "promoted in >= 90% of draws" is out of reach for any challenger that meets the cost target (and
   more so for one that does not); the evaluation labels 90% would take are printed.
"""

from __future__ import annotations

import numpy as np

POWER_SIZES = (30, 50, 70, 100, 150, 200, 300)
"""Evaluation sizes the power is simulated at (the first four fit inside a draw's 100 labels)."""
AT_TARGET = "at the cost target (-40%, no new error)"


def case_costs(y: np.ndarray, decisions: np.ndarray, costs: tuple[float, float]) -> np.ndarray:
    """Cost of each case's decision: ``cost_fp`` per false alarm, ``cost_fn`` per miss."""
    d = np.asarray(decisions, bool)
    return np.where(d & (y == 0), costs[0], 0.0) + np.where(~d & (y == 1), costs[1], 0.0)


def oracle_threshold_decisions(y: np.ndarray, p: np.ndarray, costs: tuple[float, float]) -> np.ndarray:
    """Decisions at the threshold with the lowest cost on these very cases (sees the answers)."""
    cand = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], p]))
    d = p[None, :] >= cand[:, None]
    cost = np.where(d & (y == 0)[None, :], costs[0], 0.0) + np.where(~d & (y == 1)[None, :], costs[1], 0.0)
    return d[int(np.argmin(cost.mean(1)))]


def threshold_bounds(
    y: np.ndarray, p: np.ndarray, shipped: float, costs: tuple[float, float]
) -> dict[str, float]:
    """Best ACC, best specificity at sensitivity >= 0.95 and lowest cost change (vs the shipped
    threshold) that any threshold on the champion's scores ``p`` reaches on these cases."""
    y = np.asarray(y).astype(int)
    cand = np.unique(np.concatenate([[0.0, 1.0 + 1e-9], p]))
    d = p[None, :] >= cand[:, None]
    pos, neg = y == 1, y == 0
    sens, spec = d[:, pos].mean(1), (~d[:, neg]).mean(1)
    acc = (d == pos[None, :]).mean(1)
    shipped_cost = case_costs(y, p >= shipped, costs).mean()
    best = case_costs(y, oracle_threshold_decisions(y, p, costs), costs).mean()
    return {
        "acc": float(acc.max()),
        "specificity_at_sens95": float(spec[sens >= 0.95].max()),
        "cost_change": float(best / shipped_cost - 1),
    }


def challenger_oracle(
    y: np.ndarray, p_challenger: np.ndarray, champion: np.ndarray, costs: tuple[float, float]
) -> dict[str, float]:
    """The oracle threshold on a challenger's scores ``p_challenger`` (sees the answers): its ACC,
    specificity, sensitivity and cost change against the champion's decisions ``champion`` on the same
    cases, and the best specificity any threshold on those scores reaches with sensitivity >= 0.95."""
    y = np.asarray(y).astype(int)
    d = oracle_threshold_decisions(y, p_challenger, costs)
    pos, neg = y == 1, y == 0
    bound = threshold_bounds(y, p_challenger, 0.5, costs)
    return {
        "acc": float(np.mean(d == pos)),
        "specificity": float((~d[neg]).mean()),
        "sensitivity": float(d[pos].mean()),
        "cost_change": float(case_costs(y, d, costs).mean() / case_costs(y, champion, costs).mean() - 1),
        "specificity_at_sens95": bound["specificity_at_sens95"],
    }


def at_cost_target(
    y: np.ndarray, champion: np.ndarray, costs: tuple[float, float], cut: float = 0.40, seed: int = 0
) -> np.ndarray:
    """Decisions of a challenger whose cost per case is ``cut`` below the champion's on these cases
    and that errs nowhere the champion does not: it corrects a fixed random set of the champion's
    false alarms (then misses, when false alarms are not enough)."""
    rng = np.random.default_rng([seed, 40])
    d = np.asarray(champion, bool).copy()
    left = cut * case_costs(y, d, costs).sum()
    for wrong, cost in ((np.flatnonzero(d & (y == 0)), costs[0]), (np.flatnonzero(~d & (y == 1)), costs[1])):
        for i in rng.permutation(wrong):
            if left <= 1e-9:
                return d
            d[i] = ~d[i]
            left -= cost
    return d


def promotion_power(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    costs: tuple[float, float],
    n: int,
    *,
    draws: int = 400,
    alpha: float = 0.05,
    seed: int = 0,
) -> float:
    """Share of ``draws`` random sets of ``n`` evaluation cases (without replacement) on which the
    declared test (:func:`~closedloop.stats.promotion.cost_comparison`, one-sided) finds
    ``challenger``'s decisions cheaper than ``champion``'s at p < ``alpha``."""
    from closedloop.stats.promotion import cost_comparison

    rng = np.random.default_rng([seed, n, 30])
    hits = 0
    for k in range(draws):
        e = rng.choice(len(y), n, replace=False)
        c = cost_comparison(y[e], challenger[e], champion[e], costs, n_resamples=1000, seed=k)
        hits += bool(c.delta < 0 and c.p_value < alpha)
    return hits / draws


def power_table(
    y: np.ndarray,
    p: np.ndarray,
    shipped: float,
    costs: tuple[float, float],
    *,
    draws: int = 400,
    also: tuple[int, ...] = (),
) -> dict[str, dict[int, float]]:
    """Simulated power per evaluation size (:data:`POWER_SIZES` and ``also``, up to the pool's size)
    of the three fixed challengers of the module docstring against the champion at its shipped
    threshold."""
    y = np.asarray(y).astype(int)
    champ = p >= shipped
    who = {
        "oracle threshold": oracle_threshold_decisions(y, p, costs),
        AT_TARGET: at_cost_target(y, champ, costs),
        "perfect (no error)": y == 1,
    }
    sizes = sorted({n for n in (*POWER_SIZES, *also) if n <= len(y)})
    return {
        name: {n: promotion_power(y, d, champ, costs, n, draws=draws) for n in sizes}
        for name, d in who.items()
    }


def cut_for_power(
    y: np.ndarray,
    p: np.ndarray,
    shipped: float,
    costs: tuple[float, float],
    n: int,
    *,
    power: float = 0.90,
    draws: int = 400,
) -> float | None:
    """The smallest cost cut (40%, 50%, ... 100% of the champion's cost, no new error:
    :func:`at_cost_target`) that the declared test finds on ``n`` evaluation labels in at least
    ``power`` of the draws (``None``: not even a perfect challenger)."""
    y = np.asarray(y).astype(int)
    champ = p >= shipped
    for cut in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        if promotion_power(y, at_cost_target(y, champ, costs, cut), champ, costs, n, draws=draws) >= power:
            return cut
    return None


def print_bound(bound: dict[str, float], n_images: int) -> None:
    print(
        f"  bound of any threshold on the champion's scores (all {n_images} images, sees the answers): best ACC "
        f"{bound['acc']:.3f}; best specificity with sensitivity >= 0.95 {bound['specificity_at_sens95']:.3f}; "
        f"lowest cost change {bound['cost_change']:+.1%}. Re-mappings (threshold, Platt, temperature) cannot "
        "pass these; head, fine-tune and retrain change the scores and can"
    )


def print_power(
    table: dict[str, dict[int, float]], n_images: int, n_eval: int, draws: int, cut: float | None
) -> None:
    """One line per simulated challenger: its power at each size, and the size it needs for 90%; then
    the cost cut a challenger needs for 90% at the protocol's evaluation size (``cut``)."""
    print(
        f"  promotion power of the declared test (paired one-sided sign-flip on the cost per case, alpha 0.05; "
        f"{draws} simulated draws of n random evaluation labels from the {n_images} images; an upper bound on "
        f"the promotion rate, which also needs non-inferiority; the protocol judges on {n_eval}):"
    )
    for name, by_n in table.items():
        need = next((n for n, pw in by_n.items() if pw >= 0.90), None)
        print(
            f"    {name}: "
            + ", ".join(f"n={n} {pw:.0%}" for n, pw in by_n.items())
            + f"; 90% needs {'n = ' + str(need) if need else 'more than ' + str(max(by_n))} evaluation labels"
        )
    print(
        f"    found better in >= 90% of draws on {n_eval} evaluation labels: a challenger (no new error) that cuts "
        "the cost per case by "
        + (
            f"at least {cut:.0%}"
            if cut is not None
            else "more than any challenger can (not even a perfect one)"
        )
        + " (the issue's cost target: 40%)"
    )
