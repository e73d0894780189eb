"""Staleness statistics: PDF(τ) summaries, parametric fits and distances.

Everything here works on a *histogram* of staleness values: ``counts[t]`` is
the number of updates with τ = t (τ ≥ 0 integer).  :func:`histogram` turns raw
τ samples into one (``np.bincount``, fast on 10⁷ samples); every other function
then costs time proportional to the histogram length, not to the number of
samples.  Histograms may also hold float weights (e.g. a PDF): fits then
return the maximum-likelihood parameters of the empirical law, with likelihoods
scaled by the total weight.

Provided (DESIGN §8):

* summaries: :func:`pdf`, :func:`cdf`, :func:`mean`, :func:`variance`,
  :func:`dispersion_index`, :func:`quantiles`, :func:`summarize`;
* maximum-likelihood fits, each with log-likelihood and AIC:
  :func:`fit_geometric`, :func:`fit_poisson`, :func:`fit_cmp`
  (Conway–Maxwell–Poisson, normaliser in log space), :func:`fit_negbin`
  (not applicable to under-dispersed data, reported rather than raised),
  :func:`fit_all` and :func:`best_fit` (lowest AIC);
* distances between two PDFs: :func:`tv_distance`, :func:`ks_test`,
  :func:`wasserstein1`, :func:`distances`, and the TV two samples of one law show
  by chance (:func:`tv_sampling_floor`).
"""

from .cmp import cmp_log_normalizer, cmp_logpmf, cmp_pmf
from .distances import (
    PdfDistances,
    distances,
    ks_test,
    tv_distance,
    tv_sampling_floor,
    wasserstein1,
)
from .fits import (
    FAMILIES,
    Fit,
    best_fit,
    fit,
    fit_all,
    fit_cmp,
    fit_geometric,
    fit_negbin,
    fit_poisson,
)
from .histograms import (
    StalenessSummary,
    cdf,
    dispersion_index,
    histogram,
    mean,
    pdf,
    quantiles,
    summarize,
    variance,
)

__all__ = [
    "FAMILIES",
    "Fit",
    "PdfDistances",
    "StalenessSummary",
    "best_fit",
    "cdf",
    "cmp_log_normalizer",
    "cmp_logpmf",
    "cmp_pmf",
    "dispersion_index",
    "distances",
    "fit",
    "fit_all",
    "fit_cmp",
    "fit_geometric",
    "fit_negbin",
    "fit_poisson",
    "histogram",
    "ks_test",
    "mean",
    "pdf",
    "quantiles",
    "summarize",
    "tv_distance",
    "tv_sampling_floor",
    "variance",
    "wasserstein1",
]
