# SPDX-License-Identifier: BSD-3-Clause
"""Torch EM Gaussian mixture: recovers synthetic clusters, matches scikit-learn's log-likelihood, seeds, sampling."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ganops.models.gmm import GaussianMixture, kmeans, kmeans_plusplus

MEANS = torch.tensor([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, -4.0, 2.0], [0.0, 9.0, 3.0, -6.0]], dtype=torch.float64)
STDS = torch.tensor([[1.0, 0.5, 1.0, 2.0], [0.7, 0.7, 0.7, 0.7], [1.5, 1.0, 0.5, 1.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def synthetic(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lab = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    x = MEANS[lab] + torch.randn(n, 4, generator=g, dtype=torch.float64) * STDS[lab]
    return x, lab


def _match(means: torch.Tensor) -> list[int]:
    """Permutation mapping true components to fitted ones (closest means)."""
    best = min(itertools.permutations(range(3)), key=lambda p: float((means[list(p)] - MEANS).norm()))
    return list(best)


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_recovers_known_clusters(cov):
    x, lab = synthetic()
    gm = GaussianMixture(3, covariance_type=cov, seed=0).fit(x)
    p = _match(gm.means_)
    torch.testing.assert_close(gm.means_[p], MEANS, atol=0.15, rtol=0)
    torch.testing.assert_close(gm.weights_[p], WEIGHTS, atol=0.03, rtol=0)
    var = gm.covariances_[p] if cov == "diag" else torch.diagonal(gm.covariances_[p], dim1=1, dim2=2)
    torch.testing.assert_close(var.sqrt(), STDS, atol=0.1, rtol=0.1)
    if cov == "full":  # independent dimensions: off-diagonal covariances near zero
        off = gm.covariances_ - torch.diag_embed(torch.diagonal(gm.covariances_, dim1=1, dim2=2))
        assert off.abs().max() < 0.2
    # hard assignments agree with the generating labels (up to the permutation)
    inv = torch.empty(3, dtype=torch.long)
    inv[torch.tensor(p)] = torch.arange(3)
    assert (inv[gm.predict(x)] == lab).double().mean() > 0.99
    assert gm.converged_ and gm.n_iter_ < 100


@pytest.mark.parametrize("cov", ["diag", "full"])
def test_matches_sklearn_loglik(cov):
    sk = pytest.importorskip("sklearn.mixture")
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(400, 6, generator=g, dtype=torch.float64) * s + m
                   for m, s in ((0.0, 1.0), (3.0, 0.5), (-3.0, 2.0), (6.0, 1.0))])
    ours = GaussianMixture(4, covariance_type=cov, seed=0, tol=1e-6, max_iter=500).fit(x)
    ref = sk.GaussianMixture(4, covariance_type=cov, random_state=0, tol=1e-6, max_iter=500).fit(x.numpy())
    ll_ours, ll_ref = ours.score(x), float(ref.score(x.numpy()))
    assert abs(ll_ours - ll_ref) < 1e-3 * abs(ll_ref), (ll_ours, ll_ref)
    # the same parameters give the same per-sample log-likelihood under both implementations' formulas
    ref2 = sk.GaussianMixture(4, covariance_type=cov)
    ref2.weights_, ref2.means_ = ours.weights_.numpy(), ours.means_.numpy()
    ref2.covariances_ = ours.covariances_.numpy()
    cov_np = ref2.covariances_
    if cov == "diag":
        ref2.precisions_cholesky_ = 1 / np.sqrt(cov_np)
    else:
        ref2.precisions_cholesky_ = np.stack([np.linalg.inv(np.linalg.cholesky(c)).T for c in cov_np])
    np.testing.assert_allclose(ours.score_samples(x).numpy(), ref2.score_samples(x.numpy()), rtol=1e-9, atol=1e-9)


def test_loglik_monotone_seeded_and_subset():
    x, _ = synthetic(2000, seed=1)
    a = GaussianMixture(3, seed=5, tol=1e-8).fit(x)
    h = np.asarray(a.history_)
    assert (np.diff(h) > -1e-9).all(), "EM log-likelihood must not decrease"
    assert a.lower_bound_ == a.history_[-1]
    b = GaussianMixture(3, seed=5, tol=1e-8).fit(x)
    assert a.history_ == b.history_ and torch.equal(a.means_, b.means_)
    s = GaussianMixture(3, seed=0, max_samples=500).fit(x)
    assert s.converged_
    torch.testing.assert_close(s.means_[_match(s.means_)], MEANS, atol=0.4, rtol=0)


def test_float32_and_sampling_round_trip():
    x, _ = synthetic(3000)
    gm = GaussianMixture(3, seed=0, dtype=torch.float32).fit(x.float())
    xs, labels = gm.sample(20000, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (20000, 4) and labels.shape == (20000,)
    freq = torch.bincount(labels, minlength=3).double() / 20000
    torch.testing.assert_close(freq, gm.weights_.double(), atol=0.015, rtol=0)
    for k in range(3):
        sel = xs[labels == k]
        torch.testing.assert_close(sel.mean(0), gm.means_[k], atol=0.1, rtol=0)
        torch.testing.assert_close(sel.var(0), gm.covariances_[k], atol=0.15, rtol=0.1)
    back = GaussianMixture.from_state_dict(gm.state_dict())
    assert abs(back.score(x.float()) - gm.score(x.float())) < 1e-4
    full = GaussianMixture(3, covariance_type="full", seed=0).fit(x)
    xf, _ = full.sample(5000, generator=torch.Generator().manual_seed(1))
    assert abs(full.score(xf) - full.score(x)) < 0.2  # samples are as likely as the data they were fitted to


def test_kmeans_init_and_errors():
    x, lab = synthetic(1500)
    c = kmeans_plusplus(x, 3, generator=torch.Generator().manual_seed(0))
    assert c.shape == (3, 4) and len({tuple(r.tolist()) for r in c}) == 3
    centres, labels = kmeans(x, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(centres[_match(centres)], MEANS, atol=0.2, rtol=0)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixture(3, covariance_type="tied")
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixture(5).fit(x[:3])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        GaussianMixture(2).fit(torch.randn(10))
