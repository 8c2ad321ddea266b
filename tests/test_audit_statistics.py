"""The audit's statistics: ε lower bounds, ROC curves, LiRA, the ceiling."""

import math

import numpy as np
import pytest
from scipy import stats

from jaxdp.audit import bounds
from jaxdp.audit import ceiling
from jaxdp.audit import membership
from jaxdp.audit import modes


def test_one_run_bound_matches_the_papers_setting():
  # 1000 canaries, 100 guesses all right, δ = 0, 95%: about 3.49
  # (Steinke, Nasr & Jagielski 2023): p^100 = 0.05 with p = e^ε / (1 + e^ε).
  got = bounds.one_run_lower_bound(1000, 100, 100, 0.0, 0.95)
  p = 0.05 ** (1 / 100)
  assert got == pytest.approx(math.log(p / (1 - p)), abs=1e-5)
  assert round(got, 2) == 3.49


def test_one_run_bound_is_where_the_p_value_reaches_the_level():
  for delta in (0.0, 1e-5):
    eps = bounds.one_run_lower_bound(1000, 200, 170, delta, 0.95)
    assert 0 < eps < 10
    assert bounds.one_run_p_value(1000, 200, 170, eps, delta) == pytest.approx(
        0.05, rel=1e-4)


def test_one_run_bound_grows_with_evidence_and_shrinks_with_delta():
  assert (bounds.one_run_lower_bound(1000, 200, 150, 0.0)
          < bounds.one_run_lower_bound(1000, 200, 180, 0.0)
          < bounds.one_run_lower_bound(1000, 200, 200, 0.0))
  # δ > 0 makes the null hypothesis weaker, so less is refuted ...
  assert (bounds.one_run_lower_bound(1000, 200, 180, 1e-3)
          < bounds.one_run_lower_bound(1000, 200, 180, 0.0))
  # ... and guessing at chance refutes nothing.
  assert bounds.one_run_lower_bound(1000, 200, 100, 0.0) == 0.0


def test_one_run_p_value_is_valid_for_randomised_response():
  # ε-randomised response is exactly ε-DP: each of r guesses is right with
  # probability e^ε / (1 + e^ε). Testing the true ε must reject at most 5%
  # of the time (the bound is exact here, so close to 5%).
  eps, r, trials = 1.0, 100, 4000
  rng = np.random.default_rng(0)
  right = rng.binomial(r, 1 / (1 + math.exp(-eps)), trials)
  p_values = np.array([bounds.one_run_p_value(1000, r, int(v), eps, 0.0)
                       for v in right])
  rejected = np.mean(p_values < 0.05)
  assert rejected <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
  assert rejected > 0.02  # Not vacuous: the test does reject at times.


def test_clopper_pearson_upper_limit():
  # 0 of n: the exact limit is 1 − (1 − c)^(1/n).
  assert bounds.clopper_pearson_upper(0, 100, 0.95) == pytest.approx(
      1 - 0.05 ** (1 / 100))
  assert bounds.clopper_pearson_upper(100, 100, 0.95) == 1.0
  # Covers the true rate at least 95% of the time.
  rng = np.random.default_rng(1)
  hits = [bounds.clopper_pearson_upper(int(k), 50, 0.95) >= 0.2
          for k in rng.binomial(50, 0.2, 2000)]
  assert np.mean(hits) >= 0.95


def test_multi_run_bound():
  # No errors in 250 + 250 runs: both rates ≤ about 1.5%, ε ≥ about 4.2.
  perfect = bounds.multi_run_lower_bound(0, 250, 0, 250, 1e-5, 0.95)
  fpr = bounds.clopper_pearson_upper(0, 250, 0.975)
  assert perfect == pytest.approx(math.log((1 - 1e-5 - fpr) / fpr))
  # Errors at chance refute nothing.
  assert bounds.multi_run_lower_bound(125, 250, 125, 250, 1e-5) == 0.0
  assert 0 < bounds.multi_run_lower_bound(10, 250, 60, 250, 1e-5) < perfect


def test_roc_and_auc_against_mann_whitney():
  rng = np.random.default_rng(2)
  members = rng.random(500) < 0.5
  scores = rng.normal(size=500) + members * 0.8
  scores[:50] = np.round(scores[:50])  # Some ties.
  roc = membership.roc(scores, members)
  u = stats.mannwhitneyu(scores[members], scores[~members]).statistic
  assert roc.auc == pytest.approx(u / (members.sum() * (~members).sum()))
  assert roc.fpr[0] == roc.tpr[0] == 0 and roc.fpr[-1] == roc.tpr[-1] == 1
  assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
  assert roc.negatives == (~members).sum()
  # TPR at an FPR: the best threshold whose FPR does not exceed it.
  order = np.argsort(-scores)
  first_negative = np.argmax(~members[order])
  assert roc.tpr_at(0.0) == pytest.approx(
      members[order[:first_negative]].sum() / members.sum())


def test_logit_confidence():
  log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]]))
  got = membership.logit_confidence(log_probs, np.array([0, 1]))
  np.testing.assert_allclose(got, [math.log(0.7 / 0.3),
                                   math.log(0.05 / 0.95)])


@pytest.mark.parametrize('shift', [0.0, 3.0])
def test_lira_separates_what_differs_and_nothing_else(shift):
  # Each candidate has its own typical score (hard and easy examples);
  # membership adds `shift`. A global threshold is blurred by the
  # per-candidate offsets; LiRA's per-candidate fits remove them.
  rng = np.random.default_rng(3)
  models, candidates = 32, 300
  offsets = rng.normal(0, 3, candidates)
  members = rng.random((models, candidates)) < 0.5
  observed = offsets + members * shift + rng.normal(size=(models, candidates))
  lira = membership.roc(membership.lira_scores(observed, members), members)
  threshold = membership.roc(observed, members)
  if shift == 0:
    assert abs(lira.auc - 0.5) < 0.03
  else:
    # Optimal AUC for two unit Gaussians 3 apart: Φ(3 / √2) ≈ 0.983.
    assert lira.auc == pytest.approx(stats.norm.cdf(3 / math.sqrt(2)),
                                     abs=0.02)
    assert lira.auc > threshold.auc + 0.1


def test_lira_gives_no_evidence_for_one_sided_candidates():
  # With 3 models, a candidate's 2 shadows often all trained on it (or
  # none did): there is then no ratio to form, and the score must be 0,
  # not one Gaussian's density.
  rng = np.random.default_rng(5)
  members = rng.random((3, 400)) < 0.5
  observed = rng.normal(size=(3, 400))
  scores = membership.lira_scores(observed, members)
  for target in range(3):
    shadows = np.delete(members, target, axis=0)
    one_sided = shadows.all(0) | (~shadows).all(0)
    assert one_sided.any()
    np.testing.assert_array_equal(scores[target][one_sided], 0.0)
    assert np.all(scores[target][~one_sided] != 0.0)


def test_lira_treats_a_diverged_shadow_as_missing():
  rng = np.random.default_rng(6)
  members = rng.random((20, 100)) < 0.5
  observed = rng.normal(size=(20, 100)) + 2.0 * members
  observed[4, 7] = -np.inf  # Model 4 diverged on candidate 7.
  observed[5, 8] = np.nan
  scores = membership.lira_scores(observed, members)
  assert np.all(np.isfinite(scores))
  assert scores[4, 7] == 0.0 and scores[5, 8] == 0.0
  # 19 shadows: own variances, which need two scores on each side.
  members[:, 0] = False
  members[0, 0] = True  # Candidate 0: one member model only.
  scores = membership.lira_scores(observed, members)
  assert np.all(scores[1:, 0] == 0.0)


def test_roc_merges_ties_at_minus_infinity():
  roc = membership.roc(np.array([1.0, -np.inf, -np.inf]),
                       np.array([True, True, False]))
  np.testing.assert_allclose(roc.fpr, [0.0, 0.0, 1.0])
  np.testing.assert_allclose(roc.tpr, [0.0, 0.5, 1.0])


def test_tpr_ceiling():
  fpr = np.linspace(0, 1, 11)
  np.testing.assert_allclose(ceiling.tpr_ceiling(fpr, 0.0, 0.0), fpr)
  assert ceiling.tpr_ceiling(0.01, 1.0, 0.0) == pytest.approx(math.e * 0.01)
  # The second branch: 1 − e^{−ε}(1 − δ − FPR).
  assert ceiling.tpr_ceiling(0.9, 1.0, 0.0) == pytest.approx(
      1 - math.exp(-1) * 0.1)


def test_profile_ceiling_is_below_the_single_point_ceiling(small_config):
  from jaxdp.mechanism import build_mechanism
  small_config.dp.batch_size = 64
  small_config.train.num_steps = 50
  mechanism = build_mechanism(small_config.dp, small_config.perf, 1437, 50,
                              None, 0)
  fpr = np.logspace(-4, 0, 30)
  profile = ceiling.profile_ceiling(fpr, mechanism)
  point = ceiling.tpr_ceiling(fpr, mechanism.epsilon(), mechanism.delta)
  assert np.all(profile <= point + 1e-9)
  assert np.all(profile >= fpr - 1e-9)
  assert profile[0] < point[0]  # The profile is strictly tighter somewhere.


def test_one_run_guesses_use_bonferroni():
  presence = np.arange(1000) % 2 == 0
  perfect = {'a': presence.astype(float)}
  bound, most, best = modes.one_run_bound(perfect, presence, 0.0, 0.95)
  assert best.startswith('a: 400 of 400') and bound == pytest.approx(most)
  # 8 guess counts are tried, so each is tested at 1 − 0.05 / 8.
  tries = len(modes.guess_grid(1000))
  assert bound == pytest.approx(bounds.one_run_lower_bound(
      1000, 400, 400, 0.0, 1 - 0.05 / tries))
  assert bound < bounds.one_run_lower_bound(1000, 400, 400, 0.0, 0.95)
  # Scores unrelated to presence refute (almost surely) nothing.
  rng = np.random.default_rng(4)
  noise = {'a': rng.normal(size=1000), 'b': rng.normal(size=1000)}
  assert modes.one_run_bound(noise, presence, 0.0, 0.95)[0] == 0.0
