# SPDX-License-Identifier: BSD-3-Clause
"""Gaussian mixture fitted by EM in torch on the data's device (DISP's large-scale prior sampler)."""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["GaussianMixture", "kmeans_plusplus", "kmeans"]

_LOG_2PI = math.log(2 * math.pi)


def _sqdist(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances (N, K) from rows of x (with precomputed row norms x2) to rows of c."""
    return torch.addmm((c * c).sum(1)[None], x, c.T, alpha=-2).add_(x2[:, None]).clamp_min_(0)


def _nearest(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row of c for every row of x (the row norm of x does not change the argmin)."""
    return torch.addmm((c * c).sum(1)[None], x, c.T, alpha=-2).argmin(1)


def kmeans_plusplus(x: torch.Tensor, k: int, *, generator: torch.Generator | None = None,
                    n_local_trials: int | None = None) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; the greedy variant scikit-learn uses).

    Args:
        x: data (N, D).
        k: number of centres.
        generator: torch RNG for the draws (on x's device, or CPU).
        n_local_trials: candidates per step (default 2 + log k).

    Returns:
        Centres (k, D), rows of x.
    """
    n = x.shape[0]
    if k > n:
        raise ValueError(f"kmeans_plusplus: k ({k}) > number of samples ({n})")
    trials = n_local_trials or 2 + int(math.log(k))
    x2 = (x * x).sum(1)
    dev = generator.device if generator is not None else x.device
    first = int(torch.randint(n, (1,), generator=generator, device=dev))
    centres = [x[first]]
    d2 = _sqdist(x, x2, x[first:first + 1])[:, 0]
    for _ in range(1, k):
        p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1.0 / n)
        cand = torch.multinomial(p.to(dev), trials, replacement=True, generator=generator).to(x.device)
        dc = torch.minimum(d2[None], _sqdist(x, x2, x[cand]).T)  # (trials, N)
        best = int(dc.sum(1).argmin())
        d2 = dc[best]
        centres.append(x[cand[best]])
    return torch.stack(centres)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, restarts: int = 1, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means++ seeding followed by at most ``iters`` Lloyd iterations (stops when labels are stable); with
    ``restarts`` > 1 the run of lowest inertia is kept.

    Returns:
        (centres (k, D), labels (N,)).
    """
    x2 = (x * x).sum(1)
    best = None
    for _ in range(max(restarts, 1)):
        c, labels = _lloyd(x, x2, kmeans_plusplus(x, k, generator=generator), iters)
        inertia = float(_sqdist(x, x2, c).gather(1, labels[:, None]).sum())
        if best is None or inertia < best[0]:
            best = (inertia, c, labels)
    return best[1], best[2]


def _lloyd(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = c.shape[0]
    labels = None
    for _ in range(max(iters, 1)):
        new = _nearest(x, c)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        onehot = torch.nn.functional.one_hot(labels, k).to(x.dtype)
        cnt = onehot.sum(0)
        s = onehot.T @ x  # one GEMM pass over x (index_add_ is a slow scatter on CPU)
        c = torch.where(cnt[:, None] > 0, s / cnt.clamp_min(1)[:, None], c)  # empty cluster keeps its centre
    return c, labels


class GaussianMixture:
    """Gaussian mixture model fitted by expectation-maximisation in torch (CPU or GPU).

    Follows scikit-learn's ``GaussianMixture`` (same log-likelihood, ``reg_covar`` on the diagonal, convergence
    on the change of the mean log-likelihood < ``tol``), initialised from k-means++ + Lloyd hard assignments.
    Computation runs on the device of the data (or ``device``) in ``dtype``; data are centred internally so
    float32 keeps its precision in the expanded distance formulas.

    Args:
        n_components: K.
        covariance_type: "diag" (cheap default) or "full".
        tol: convergence threshold on the mean log-likelihood.
        reg_covar: added to the covariance diagonal.
        max_iter: EM iterations at most.
        init_iters: Lloyd iterations after k-means++ seeding.
        init_restarts: k-means runs (different seedings); the one of lowest inertia initialises EM.
        init_samples: run the k-means init on a random subset of this many rows (None: all rows); the full data
            are then assigned to the nearest centre. scikit-learn runs k-means on all rows.
        seed: RNG seed for the seeding, the subset and nothing else.
        max_samples: fit on a random subset of at most this many rows (the paper: 200k of million-image sets).
        device: compute device (default: the data's).
        dtype: compute dtype: float64 (default) keeps the expanded distance formulas exact when a component
            has near-zero variance in some dimension (ReLU features); float32 halves memory traffic.
        progress: show a tqdm bar with the log-likelihood.

    Attributes (after ``fit``): ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` (K, D) or (K, D, D),
    ``lower_bound_`` (last E-step's mean log-likelihood, as scikit-learn), ``history_`` (per-iteration mean log-likelihood),
    ``n_iter_``, ``converged_``.
    """

    def __init__(self, n_components: int = 10, *, covariance_type: str = "diag", tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, init_iters: int = 20, init_restarts: int = 3,
                 init_samples: int | None = 4096, seed: int = 0,
                 max_samples: int | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype = torch.float64, progress: bool = False) -> None:
        if covariance_type not in ("diag", "full"):
            raise ValueError(f"covariance_type must be 'diag' or 'full', got {covariance_type!r}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components, self.covariance_type = n_components, covariance_type
        self.tol, self.reg_covar, self.max_iter, self.init_iters = tol, reg_covar, max_iter, init_iters
        self.init_samples, self.init_restarts = init_samples, init_restarts
        self.seed, self.max_samples, self.device, self.dtype, self.progress = (
            seed, max_samples, device, dtype, progress)
        self.history_: list[float] = []
        self.converged_ = False
        self.n_iter_ = 0

    # ----------------------------------------------------------------------------------------- internals
    def _prep(self, x: Any) -> torch.Tensor:
        x = torch.as_tensor(x)
        if x.dim() != 2:
            raise ValueError(f"GaussianMixture: data must be (N, D), got {tuple(x.shape)}")
        dev = torch.device(self.device) if self.device is not None else x.device
        return x.to(device=dev, dtype=self.dtype)

    def _set_params(self, nk: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor, n: int) -> None:
        self.weights_ = nk / n
        self._mu_c = mu  # centred means
        self.covariances_ = cov
        if self.covariance_type == "diag":
            self._prec = 1.0 / cov
        else:
            chol = torch.linalg.cholesky(cov)  # cov = L L^T; precision cholesky = L^-T
            eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
            self._prec_chol = torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)

    def _log_prob(self, xc: torch.Tensor, x2: torch.Tensor | None) -> torch.Tensor:
        """Weighted log densities log(w_k N(x | mu_k, S_k)), (N, K), for centred data."""
        d = xc.shape[1]
        if self.covariance_type == "diag":
            prec, mu = self._prec, self._mu_c
            maha = x2 @ prec.T - 2 * xc @ (mu * prec).T + (mu * mu * prec).sum(1)[None]
            logdet = -0.5 * torch.log(prec).sum(1)  # log |S|^{1/2} with S diag
            lp = -0.5 * (d * _LOG_2PI + maha.clamp_min(0)) - logdet[None]
        else:
            lp = torch.empty(xc.shape[0], self.n_components, dtype=xc.dtype, device=xc.device)
            for k in range(self.n_components):
                pc = self._prec_chol[k]
                y = xc @ pc - self._mu_c[k] @ pc
                half_logdet = torch.log(torch.diagonal(pc)).sum()
                lp[:, k] = -0.5 * (d * _LOG_2PI + (y * y).sum(1)) + half_logdet
        return lp + torch.log(self.weights_)[None]

    def _m_step(self, xc: torch.Tensor, x2: torch.Tensor | None, resp: torch.Tensor) -> None:
        n = xc.shape[0]
        nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps
        mu = (resp.T @ xc) / nk[:, None]
        if self.covariance_type == "diag":
            cov = (resp.T @ x2) / nk[:, None] - mu * mu + self.reg_covar
            cov = cov.clamp_min(self.reg_covar)
        else:
            d = xc.shape[1]
            cov = torch.empty(self.n_components, d, d, dtype=xc.dtype, device=xc.device)
            eye = torch.eye(d, dtype=xc.dtype, device=xc.device)
            for k in range(self.n_components):
                diff = xc - mu[k]
                cov[k] = (diff * resp[:, k:k + 1]).T @ diff / nk[k] + self.reg_covar * eye
        self._set_params(nk, mu, cov, n)

    # ----------------------------------------------------------------------------------------- public
    def fit(self, x: Any) -> "GaussianMixture":
        """Fit the mixture to rows of ``x`` (N, D) and return self."""
        x = self._prep(x)
        n, d = x.shape
        gen_dev = x.device if x.device.type == "cuda" else torch.device("cpu")
        g = torch.Generator(device=gen_dev).manual_seed(self.seed)
        if self.max_samples is not None and n > self.max_samples:
            x = x[torch.randperm(n, generator=g, device=gen_dev)[: self.max_samples].to(x.device)]
            n = x.shape[0]
        if n < self.n_components:
            raise ValueError(f"GaussianMixture: {n} samples < n_components ({self.n_components})")
        self._shift = x.mean(0)
        xc = x - self._shift
        x2 = xc * xc if self.covariance_type == "diag" else None
        # hard-assignment init: k-means on a random subset of `init_samples` rows (labels only, so float32), then
        # every row takes its nearest centre
        xi = xc
        if self.init_samples is not None and n > self.init_samples:
            xi = xc[torch.randperm(n, generator=g, device=gen_dev)[: self.init_samples].to(xc.device)]
        centres, _ = kmeans(xi.float(), self.n_components, iters=self.init_iters, restarts=self.init_restarts,
                            generator=g)
        labels = _nearest(xc.float(), centres)
        resp = torch.nn.functional.one_hot(labels, self.n_components).to(xc.dtype)
        self._m_step(xc, x2, resp)
        self.history_, self.converged_, prev = [], False, -math.inf
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, desc=f"GMM K={self.n_components} {self.covariance_type}", leave=False)
        for it in range(1, self.max_iter + 1):
            lp = self._log_prob(xc, x2)
            norm = torch.logsumexp(lp, dim=1)
            ll = float(norm.mean())
            self.history_.append(ll)
            resp = torch.exp(lp - norm[:, None])
            self._m_step(xc, x2, resp)
            self.n_iter_ = it
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loglik=f"{ll:.4f}")
            if abs(ll - prev) < self.tol:
                self.converged_ = True
                break
            prev = ll
        if bar is not None:
            bar.close()
        self.lower_bound_ = self.history_[-1]  # as scikit-learn: the last E-step's mean log-likelihood
        return self

    @property
    def means_(self) -> torch.Tensor:
        return self._mu_c + self._shift

    def score_samples(self, x: Any) -> torch.Tensor:
        """Per-sample log-likelihood log p(x), (N,)."""
        xc = self._prep(x) - self._shift
        return torch.logsumexp(self._log_prob(xc, xc * xc if self.covariance_type == "diag" else None), dim=1)

    def score(self, x: Any) -> float:
        """Mean log-likelihood (scikit-learn's ``score``)."""
        return float(self.score_samples(x).mean())

    def predict(self, x: Any) -> torch.Tensor:
        """Most likely component per row, (N,)."""
        xc = self._prep(x) - self._shift
        return self._log_prob(xc, xc * xc if self.covariance_type == "diag" else None).argmax(1)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` samples. Returns (samples (n, D), component labels (n,))."""
        dev = self._mu_c.device
        gdev = generator.device if generator is not None else dev
        labels = torch.multinomial(self.weights_.to(gdev), n, replacement=True, generator=generator).to(dev)
        eps = torch.randn(n, self._mu_c.shape[1], generator=generator, device=gdev, dtype=self.dtype).to(dev)
        if self.covariance_type == "diag":
            out = self._mu_c[labels] + eps * self.covariances_[labels].sqrt()
        else:
            chol = torch.linalg.cholesky(self.covariances_)
            out = self._mu_c[labels] + torch.einsum("nij,nj->ni", chol[labels], eps)
        return out + self._shift, labels

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers (``torch.load(weights_only=True)`` accepts them)."""
        return dict(n_components=self.n_components, covariance_type=self.covariance_type,
                    weights=self.weights_.cpu(), means_c=self._mu_c.cpu(), shift=self._shift.cpu(),
                    covariances=self.covariances_.cpu(), history=list(self.history_), dtype=str(self.dtype))

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any], device: str | torch.device = "cpu") -> "GaussianMixture":
        """Rebuild a fitted mixture from :meth:`state_dict`."""
        dtype = getattr(torch, sd.get("dtype", "torch.float32").split(".")[-1])
        g = cls(sd["n_components"], covariance_type=sd["covariance_type"], device=device, dtype=dtype)
        t = {k: sd[k].to(device=device, dtype=dtype) for k in ("weights", "means_c", "shift", "covariances")}
        g._shift = t["shift"]
        g._set_params(t["weights"], t["means_c"], t["covariances"], 1)
        g.history_ = list(sd.get("history", []))
        return g
