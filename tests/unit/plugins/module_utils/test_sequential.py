"""Unit tests for module_utils/sequential.py: the SPRT against the allowed share and the
anytime-valid comparison with the stable colour, with the worked figures of the notes."""

from __future__ import annotations

import math

import pytest
from ansible.module_utils import sequential as seq


def binom_pmf(k: int, n: int, p: float) -> float:
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def integrate(f, lo: float, hi: float, steps: int = 20_000) -> float:  # type: ignore[no-untyped-def]
    """Simpson's rule, plenty for smooth integrands on [0, 1]."""
    h = (hi - lo) / steps
    total = f(lo) + f(hi)
    for i in range(1, steps):
        total += (4 if i % 2 else 2) * f(lo + i * h)
    return total * h / 3


# --- the SPRT -----------------------------------------------------------------------


def test_the_worked_example_of_the_notes() -> None:
    """p0 10 %, p1 30 %, alpha 0.01, beta 0.05: each error adds ln 3, each success ln(7/9)."""
    lower, upper = seq.sprt_thresholds(0.01, 0.05)
    assert upper == pytest.approx(math.log(100)) and lower == pytest.approx(math.log(0.05 / 0.99))
    assert seq.sprt_llr(1, 1, 0.1, 0.3) == pytest.approx(math.log(3))
    assert seq.sprt_llr(1, 0, 0.1, 0.3) == pytest.approx(math.log(7 / 9))
    # Seven errors in the first fifteen requests abort, six do not (alone, or with half of
    # alpha as the judgement gives it).
    for alpha in (0.01, 0.005):
        assert seq.sprt(15, 7, 0.1, 0.3, alpha, 0.05)["decision"] == seq.BAD
        assert seq.sprt(15, 6, 0.1, 0.3, alpha, 0.05)["decision"] == seq.CONTINUE
    # Twelve clean requests call it good.
    assert seq.sprt(11, 0, 0.1, 0.3, 0.005, 0.05)["decision"] == seq.CONTINUE
    assert seq.sprt(12, 0, 0.1, 0.3, 0.005, 0.05)["decision"] == seq.GOOD
    # A colour failing 30 % gains 0.15 a request: about 30 of its requests to abort.
    drift = 0.3 * math.log(3) + 0.7 * math.log(7 / 9)
    assert drift == pytest.approx(0.154, abs=0.001)
    assert 29 <= upper / drift <= 31


@pytest.mark.parametrize(
    ("p0", "factor", "p1"),
    [(0.1, 3, 0.3), (0.02, 3, 0.06), (0.4, 3, 0.7), (0.1, 20, 0.55), (0.1, 1.5, 0.15)],
)
def test_the_bad_share_is_a_multiple_capped_halfway_to_one(
    p0: float, factor: float, p1: float
) -> None:
    assert seq.alternative(p0, factor) == pytest.approx(p1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: seq.alternative(0, 3), "between 0 and 1"),
        (lambda: seq.alternative(1, 3), "between 0 and 1"),
        (lambda: seq.alternative(0.1, 1), "above 1"),
        (lambda: seq.sprt_thresholds(0, 0.05), "alpha"),
        (lambda: seq.sprt_thresholds(0.01, 0.6), "beta"),
        (lambda: seq.sprt_llr(5, 6, 0.1, 0.3), "errors must be between"),
        (lambda: seq.sprt_llr(5, 1, 0.3, 0.1), "p1 must be between"),
        (lambda: seq.log_mixture_evalue(1, 1, 0), "theta0"),
        (lambda: seq.log_mixture_evalue(1, 1, 0.5, (0, 1)), "positive"),
    ],
)
def test_bad_input_is_named(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


def test_the_sprt_bound_holds_for_every_look() -> None:
    """exp(LLR) is a martingale at p0: its expectation after n requests is exactly 1, and
    below 1 for a share below p0 (so Ville's inequality bounds the false aborts)."""
    p0, p1 = 0.1, 0.3
    for n in (1, 5, 20, 60):
        for share, expected in ((p0, 1.0), (0.05, None), (0.0, None)):
            mean = sum(
                binom_pmf(k, n, share) * math.exp(seq.sprt_llr(n, k, p0, p1)) for k in range(n + 1)
            )
            if expected is None:
                assert mean < 1
            else:
                assert mean == pytest.approx(expected)


# --- the incomplete beta function -------------------------------------------------


def binomial_tail(a: int, b: int, x: float) -> float:
    """ln(1 - I_x(a, b)) for whole a, b: the chance of fewer than a successes in a + b - 1."""
    n = a + b - 1
    terms = [
        math.log(math.comb(n, j)) + j * math.log(x) + (n - j) * math.log1p(-x) for j in range(a)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


@pytest.mark.parametrize(
    ("a", "b", "x"),
    [
        (1, 1, 0.3),
        (3, 2, 0.9),
        (3, 1, 0.05),
        (1, 20, 0.5),
        (10, 300, 0.05),
        (50, 40, 0.6),
        (5, 3000, 0.2),
        (2, 2, 0.999),
    ],
)
def test_incomplete_beta_of_whole_parameters_is_a_binomial_tail(a: int, b: int, x: float) -> None:
    assert seq.log_ibeta_upper(a, b, x) == pytest.approx(binomial_tail(a, b, x), rel=1e-9)


def test_incomplete_beta_of_other_parameters() -> None:
    # Beta(1/2, 1/2), the arcsine law.
    for x in (0.01, 0.1, 0.5, 0.93):
        expected = 2 / math.pi * math.asin(math.sqrt(x))
        assert math.exp(seq.log_ibeta(0.5, 0.5, x)) == pytest.approx(expected, rel=1e-9)
    # Beta(2.5, 4) by Simpson's rule (its density is 0 at both ends).
    log_b = math.lgamma(2.5) + math.lgamma(4) - math.lgamma(6.5)
    expected = integrate(
        lambda t: math.exp(1.5 * math.log(t) + 3 * math.log1p(-t) - log_b) if 0 < t < 1 else 0.0,
        0,
        0.2,
    )
    assert math.exp(seq.log_ibeta(2.5, 4, 0.2)) == pytest.approx(expected, rel=1e-8)


def test_incomplete_beta_edges() -> None:
    assert seq.log_ibeta(2, 3, 0) == -math.inf and seq.log_ibeta(2, 3, 1) == 0.0
    # A tail far too small for 1 - I to hold in a float stays exact in logs.
    assert seq.log_ibeta_upper(5, 3000, 0.2) < -600


# --- against the stable colour ---------------------------------------------------------


def test_no_errors_is_no_evidence() -> None:
    assert seq.log_mixture_evalue(0, 0, 0.05) == pytest.approx(0.0)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_the_uniform_prior_in_closed_form(k: int) -> None:
    """All errors the new colour's: E = (1 - t^(k+1)) / ((k + 1)(1 - t) t^k)."""
    theta0 = 0.05
    closed = (1 - theta0 ** (k + 1)) / ((k + 1) * (1 - theta0) * theta0**k)
    assert math.exp(seq.log_mixture_evalue(k, k, theta0)) == pytest.approx(closed)


@pytest.mark.parametrize(
    ("k", "total", "theta0", "prior"),
    [(3, 10, 0.2, (1.0, 1.0)), (8, 9, 0.5, (2.0, 3.0)), (1, 40, 0.05, (1.0, 1.0))],
)
def test_the_mixture_matches_its_integral(
    k: int, total: int, theta0: float, prior: tuple[float, float]
) -> None:
    a, b = prior
    log_b = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def prior_density(t: float) -> float:
        return math.exp((a - 1) * math.log(t) + (b - 1) * math.log1p(-t) - log_b)

    def weighted(t: float) -> float:
        return prior_density(t) * t**k * (1 - t) ** (total - k)

    mass = integrate(prior_density, theta0, 1 - 1e-12)
    expected = integrate(weighted, theta0, 1 - 1e-12) / mass
    expected /= theta0**k * (1 - theta0) ** (total - k)
    assert math.exp(seq.log_mixture_evalue(k, total, theta0, prior)) == pytest.approx(
        expected, rel=1e-5
    )


@pytest.mark.parametrize("theta0", [0.05, 0.3, 0.5])
@pytest.mark.parametrize("total", [1, 4, 12])
def test_the_mixture_is_an_e_value_when_the_new_colour_is_no_worse(
    theta0: float, total: int
) -> None:
    """Its expectation is 1 at theta0 and below 1 for a smaller share of the errors."""
    for share in (theta0, theta0 / 2):
        mean = sum(
            binom_pmf(k, total, share) * math.exp(seq.log_mixture_evalue(k, total, theta0))
            for k in range(total + 1)
        )
        assert mean == pytest.approx(1.0) if share == theta0 else mean < 1


def test_a_bad_canary_against_a_clean_stable_colour() -> None:
    """5 % of the requests; its errors only: 2 give E = 140, 3 give 2,105 (half of alpha 0.01
    needs 200)."""
    two = seq.versus_stable(20, 2, 380, 0, alpha=0.005)
    three = seq.versus_stable(20, 3, 380, 0, alpha=0.005)
    assert two["theta0"] == pytest.approx(0.05)
    assert two["e_value"] == pytest.approx(140.33, rel=1e-3) and two["decision"] == seq.CONTINUE
    assert three["e_value"] == pytest.approx(2105, rel=1e-3) and three["decision"] == seq.BAD
    assert three["threshold"] == pytest.approx(200)


def test_the_comparison_needs_traffic_on_both_sides_and_a_difference_that_matters() -> None:
    assert seq.versus_stable(100, 30, 0, 0, 0.005)["decision"] == seq.NOT_APPLICABLE
    assert seq.versus_stable(0, 0, 100, 3, 0.005)["decision"] == seq.NOT_APPLICABLE
    # Strong evidence, but 4 % against 0.5 %: within a tolerance of 5 points.
    clear = seq.versus_stable(2000, 80, 20000, 100, 0.005)
    assert clear["e_value"] > 1e6 and clear["decision"] == seq.BAD
    assert seq.versus_stable(2000, 80, 20000, 100, 0.005, tolerance=0.05)["decision"] == (
        seq.CONTINUE
    )
    # Better than the stable colour is never evidence against it.
    better = seq.versus_stable(100, 0, 100, 20, 0.005)
    assert better["e_value"] < 1 and better["decision"] == seq.CONTINUE
