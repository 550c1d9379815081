# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sequential tests of a colour's 5xx answers: judged on evidence, at any traffic.

A fixed window ("60 s and at least 50 requests") is slow when the new colour is
clearly bad and cannot decide at all when traffic is low. The tests here look
at the counts as often as they are read (every second) and decide as soon as
the evidence is strong enough, while the chance of aborting a healthy colour
stays below the rate chosen however often they look. Notes and worked figures:
OPERATIONS.md 2.4; ``scripts/bench-judgement.py`` measures them.

Two tests, each given half of the false-abort rate ``alpha`` (Bonferroni), so
that a colour for which both hypotheses of "healthy" hold is aborted with a
probability of at most ``alpha`` in all:

``sprt`` -- against the allowed share (Wald's SPRT, Bernoulli).
    Each request to the colour is a trial and a 5xx answer (nginx's own 502 and
    504 included) an error. H0: error share ``p0`` (the allowed share), H1:
    ``p1 > p0`` (a clearly bad share; ``alternative`` makes it a multiple of
    ``p0``). After ``n`` requests with ``k`` errors::

        LLR = k ln(p1/p0) + (n - k) ln((1 - p1)/(1 - p0))

    ``bad`` when LLR >= ln(1/alpha'), ``good`` when LLR <= ln(beta/(1 - alpha')),
    with alpha' its half of ``alpha``. Wald's upper boundary is ln((1 - beta)/alpha');
    ln(1/alpha') is 0.05 higher (beta = 0.05) and makes the bound exact when the
    colour keeps being watched after ``good``: exp(LLR) is a martingale at p0
    (a supermartingale below it), so by Ville's inequality it ever reaches
    1/alpha' with a probability of at most alpha'.
    Assumes: requests independent, one error share for the whole time judged.
    Between p0 and p1 it may take long to decide either way (the indifference
    zone): the caller then falls back on a fixed rule at its time bound.

``versus_stable`` -- against the stable colour (anytime-valid, count data).
    After Lindon, Sanden and Shirikian, "Rapid regression detection in software
    deployments through sequential testing" (KDD 2022, arXiv 2205.14762), and
    Lindon and Malek, "Anytime-valid inference for multinomial count data"
    (NeurIPS 2022), as Netflix's "Sequential A/B testing keeps the world
    streaming", part 2 (counting processes), describes: each colour's errors
    are a Poisson process; given the total number of errors of both colours,
    the number that are the new colour's is binomial with parameter theta, and
    with equal error rates per request theta is the new colour's share of the
    requests, ``theta0 = n_new / (n_new + n_stable)``. The mixture likelihood
    ratio over a Beta(a, b) prior on theta, restricted to theta >= theta0
    (only "worse" counts)::

        E = [int_{theta0}^1 theta^k (1 - theta)^(K - k) dBeta(theta)] / P_Beta(theta >= theta0)
            / (theta0^k (1 - theta0)^(K - k))

    (k the new colour's errors, K both colours') is a test supermartingale for
    every theta <= theta0, hence an e-value at any time: aborting the first
    time E >= 1/alpha' keeps the false-abort rate below alpha' under continuous
    monitoring (Ville). Assumes: the new colour's share of requests is steady
    over the time judged (nginx splits by weight; its observed share stands for
    it), errors are rare among requests (the binomial is the Poisson limit of
    drawing errors among requests), and H0 is "no worse per request than the
    stable colour". The default prior Beta(1, 1) weighs every share of the
    errors above theta0 alike.

Pure functions of counts, Python's standard library only; the modules
(library/canary_gate.py) read the counts and decide what to do.
"""

from __future__ import annotations

import math
from typing import Any

BAD = "bad"
GOOD = "good"
CONTINUE = "continue"
NOT_APPLICABLE = "not applicable"
# How many of the false-abort rate each test gets (two tests: sprt, versus_stable).
TESTS = 2


def check_share(p0: float) -> None:
    if not 0 < p0 < 1:
        raise ValueError(f"the allowed error share must be between 0 and 1 (exclusive), got {p0}")


def check_rates(alpha: float, beta: float) -> None:
    if not 0 < alpha < 0.5 or not 0 < beta < 0.5:
        raise ValueError(
            f"alpha (the false-abort rate) and beta (the miss rate) must be between 0 and 0.5, "
            f"got alpha={alpha}, beta={beta}"
        )


def alternative(p0: float, factor: float) -> float:
    """The clearly bad share p1: ``factor`` times p0, capped halfway between p0 and 1."""
    check_share(p0)
    if factor <= 1:
        raise ValueError(
            f"the factor of the bad share p1 = factor x p0 must be above 1, got {factor}"
        )
    return min(factor * p0, (1 + p0) / 2)


def sprt_thresholds(alpha: float, beta: float) -> tuple[float, float]:
    """(lower, upper) boundaries of the LLR for a test given ``alpha`` (its own share) and beta."""
    check_rates(alpha, beta)
    return math.log(beta / (1 - alpha)), math.log(1 / alpha)


def sprt_llr(requests: int, errors: int, p0: float, p1: float) -> float:
    """Wald's log-likelihood ratio of p1 against p0 after ``errors`` of ``requests``."""
    check_share(p0)
    if not p0 < p1 < 1:
        raise ValueError(f"the bad share p1 must be between p0 ({p0}) and 1, got {p1}")
    if not 0 <= errors <= requests:
        raise ValueError(f"errors must be between 0 and the requests ({requests}), got {errors}")
    return errors * math.log(p1 / p0) + (requests - errors) * math.log((1 - p1) / (1 - p0))


def sprt(
    requests: int, errors: int, p0: float, p1: float, alpha: float, beta: float
) -> dict[str, Any]:
    """One look of the SPRT: the LLR, its boundaries and what they say now."""
    lower, upper = sprt_thresholds(alpha, beta)
    llr = sprt_llr(requests, errors, p0, p1)
    decision = BAD if llr >= upper else GOOD if llr <= lower else CONTINUE
    return {"llr": llr, "lower": lower, "upper": upper, "decision": decision}


# --- the regularised incomplete beta function, in logs -----------------------


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), for x < (a + 1)/(a + b + 2)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 100_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < eps:
            return result
    raise ArithmeticError(f"the incomplete beta function did not converge for {a}, {b}, {x}")


def _log_lower_direct(a: float, b: float, x: float) -> float:
    front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b) - math.log(a)
    return front + math.log(_continued_fraction(a, b, x))


def log_ibeta(a: float, b: float, x: float) -> float:
    """ln I_x(a, b), the regularised incomplete beta function (the Beta(a, b) CDF at x)."""
    if x <= 0:
        return -math.inf
    if x >= 1:
        return 0.0
    if x < (a + 1) / (a + b + 2):
        return _log_lower_direct(a, b, x)
    return math.log1p(-math.exp(_log_lower_direct(b, a, 1 - x)))


def log_ibeta_upper(a: float, b: float, x: float) -> float:
    """ln(1 - I_x(a, b)): the Beta(a, b) probability above x, in logs (it may be tiny)."""
    return log_ibeta(b, a, 1 - x)


# --- against the stable colour --------------------------------------------------


def log_mixture_evalue(
    new_errors: int, total_errors: int, theta0: float, prior: tuple[float, float] = (1.0, 1.0)
) -> float:
    """ln E of the Beta-mixture likelihood ratio of the new colour's share of the errors,
    the prior restricted to theta >= theta0 (see the module's docstring)."""
    if not 0 < theta0 < 1:
        raise ValueError(f"theta0 must be between 0 and 1 (exclusive), got {theta0}")
    if not 0 <= new_errors <= total_errors:
        raise ValueError(f"new errors must be between 0 and {total_errors}, got {new_errors}")
    a, b = prior
    if a <= 0 or b <= 0:
        raise ValueError(f"the Beta prior's parameters must be positive, got {prior}")
    k, rest = new_errors, total_errors - new_errors
    return (
        _log_beta(a + k, b + rest)
        - _log_beta(a, b)
        + log_ibeta_upper(a + k, b + rest, theta0)
        - log_ibeta_upper(a, b, theta0)
        - k * math.log(theta0)
        - rest * math.log1p(-theta0)
    )


def versus_stable(
    new_requests: int,
    new_errors: int,
    stable_requests: int,
    stable_errors: int,
    alpha: float,
    prior: tuple[float, float] = (1.0, 1.0),
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """One look of the comparison with the stable colour: theta0, E, its threshold 1/alpha
    (``alpha`` this test's own share) and the decision. ``bad`` needs E >= 1/alpha and the new
    colour's share more than ``tolerance`` above the stable one's (a difference too small to
    matter never aborts; it only makes an abort rarer, so the bound holds)."""
    threshold = 1 / alpha
    out: dict[str, Any] = {"theta0": None, "e_value": None, "threshold": threshold}
    if new_requests <= 0 or stable_requests <= 0:
        return {**out, "decision": NOT_APPLICABLE}
    theta0 = new_requests / (new_requests + stable_requests)
    log_e = log_mixture_evalue(new_errors, new_errors + stable_errors, theta0, prior)
    e_value = math.exp(min(log_e, 700.0))
    worse = new_errors / new_requests - stable_errors / stable_requests > tolerance
    decision = BAD if log_e >= math.log(threshold) and worse else CONTINUE
    return {**out, "theta0": theta0, "e_value": e_value, "decision": decision}
