"""Two-sided spectral-norm bounds: jaxpde vs scipy.sparse.linalg.svds vs dense SVD.

For each operator (a random neumann stencil with k = 5 taps at n = 2^8 ... 2^14, and a
periodic 2 -> 3 channel stencil) the script times, in the same run and in float64,

- jaxpde: `verify.spectral_norm(op)` (method "auto": symbol / toeplitz upper bound,
  power iteration from a Fourier start for the lower bound), compiled first;
- SciPy: `scipy.sparse.linalg.svds(K, k=1)` on the same operator as a CSR matrix
  (an estimate, not a bound);
- NumPy: the dense `numpy.linalg.svd` (where n <= 2048), the reference sigma.

Reported: median seconds, jaxpde's certified relative gap (upper - lower) / upper, and
SciPy's relative error against the dense SVD (or against jaxpde's interval above 2048).
Results go to `benchmarks/results/spectral-<device>.{md,json}`.

Usage: `python benchmarks/spectral.py [--repeats R]`.
"""

import argparse
import json
import pathlib
import statistics
import timeit

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
import scipy
import scipy.sparse
import scipy.sparse.linalg
from common import machine

from jaxpde import Stencil, verify

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
DENSE_MAX = 2048
SVDS_SINGLE = 2048  # from this n on, svds is timed once (no warm-up, no median)
SVDS_MAX = 4096  # above, ARPACK takes minutes (125 s at n = 8192 on 2 shared cores): skipped


def sparse_matrix(kernel: np.ndarray, n: int, boundary: str) -> scipy.sparse.csr_matrix:
    """The stencil as a SciPy sparse matrix, built from the definition (see tests.helpers)."""
    kernel = kernel[None, None] if kernel.ndim == 1 else kernel
    c_out, c_in, k = kernel.shape
    rows = {"neumann": n - k + 1, "periodic": n, "dirichlet": n + k - 1}[boundary]
    data, row_index, col_index = [], [], []
    for o in range(c_out):
        for c in range(c_in):
            for j in range(k):
                i = np.arange(rows)
                column = {"neumann": i + j, "periodic": (i + j) % n, "dirichlet": i + j - (k - 1)}[boundary]
                inside = (column >= 0) & (column < n)
                data.append(np.full(inside.sum(), kernel[o, c, j]))
                row_index.append(o * rows + i[inside])
                col_index.append(c * n + column[inside])
    shape = (c_out * rows, c_in * n)
    return scipy.sparse.csr_matrix((np.concatenate(data), (np.concatenate(row_index), np.concatenate(col_index))), shape)


def median_seconds(fn, repeats: int) -> float:
    fn()  # compile / warm up
    return statistics.median(timeit.repeat(fn, number=1, repeat=repeats))


def bench_case(kernel: np.ndarray, n: int, boundary: str, repeats: int) -> dict:
    op = Stencil(kernel, n, boundary=boundary)
    bounds = verify.spectral_norm(op)
    jaxpde_s = median_seconds(lambda: jax.block_until_ready(verify.spectral_norm(op).lower), repeats)
    lower, upper = float(bounds.lower), float(bounds.upper)
    matrix = sparse_matrix(kernel, n, boundary)

    def run_svds():
        return scipy.sparse.linalg.svds(matrix, k=1, return_singular_vectors=False, random_state=0)[0]

    if n > SVDS_MAX:
        svds_s = svds_sigma = None
    elif n >= SVDS_SINGLE:  # ARPACK needs seconds to minutes here: one timed run
        start = timeit.default_timer()
        svds_sigma = float(run_svds())
        svds_s = timeit.default_timer() - start
    else:
        svds_s = median_seconds(run_svds, max(3, repeats // 2))
        svds_sigma = float(run_svds())
    dense_s = dense_sigma = None
    if max(matrix.shape) <= DENSE_MAX:
        dense = matrix.toarray()
        dense_s = median_seconds(lambda: np.linalg.svd(dense, compute_uv=False), 3 if n < DENSE_MAX else 1)
        dense_sigma = float(np.linalg.svd(dense, compute_uv=False)[0])
    reference = dense_sigma
    return {
        "operator": f"{'1ch' if kernel.ndim == 1 else f'{kernel.shape[1]}->{kernel.shape[0]}ch'} k={kernel.shape[-1]} {boundary}",
        "n": n,
        "method": bounds.method,
        "jaxpde_s": jaxpde_s,
        "jaxpde_lower": lower,
        "jaxpde_upper": upper,
        "jaxpde_relative_gap": (upper - lower) / upper,
        "svds_s": svds_s,
        "svds_sigma": svds_sigma,
        "svds_inside_interval": None if svds_sigma is None else lower <= svds_sigma <= upper,
        "svds_relative_error": None if reference is None or svds_sigma is None else abs(svds_sigma - reference) / reference,
        "dense_s": dense_s,
        "dense_sigma": dense_sigma,
        "dense_inside_interval": None if dense_sigma is None else lower <= dense_sigma <= upper,
        "speedup_vs_svds": None if svds_s is None else svds_s / jaxpde_s,
        "speedup_vs_dense": None if dense_s is None else dense_s / jaxpde_s,
    }


def _fmt(value, scale=1e3, digits=2) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def _sci(value) -> str:
    return "-" if value is None else f"{value:.1e}"


def _times(value) -> str:
    return "-" if value is None else f"{value:.1f}x"


def markdown(results: list[dict], meta: dict) -> str:
    lines = [
        "# Spectral-norm bounds: jaxpde vs scipy.sparse.linalg.svds vs dense SVD",
        "",
        (
            f"Device: {meta['device']} ({meta['processor']}, {meta['cpu_count']} cores); jax {meta['jax']}, "
            f"numpy {meta['numpy']}, scipy {meta['scipy']}; float64."
        ),
        "jaxpde: `verify.spectral_norm(op)` (auto), certified lower and upper bounds; svds: `k=1` estimate on a CSR matrix;",
        "dense: `numpy.linalg.svd` (n <= 2048). Medians of repeated timings after compilation (jaxpde blocks until ready);",
        "svds from n = 2048 on is timed once, and skipped above n = 4096 (minutes per call); svds rel. err. is against the dense SVD.",
        "",
        "| operator | n | jaxpde ms | jaxpde gap | svds ms | svds rel. err. | dense ms | svds / jaxpde | dense / jaxpde | sigma in [lower, upper] |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        inside = "yes" if r["dense_inside_interval"] else ("-" if r["dense_inside_interval"] is None else "NO")
        lines.append(
            f"| {r['operator']} | {r['n']} | {_fmt(r['jaxpde_s'])} | {r['jaxpde_relative_gap']:.1e} | {_fmt(r['svds_s'])} "
            f"| {_sci(r['svds_relative_error'])} | {_fmt(r['dense_s'])} "
            f"| {_times(r['speedup_vs_svds'])} | {_times(r['speedup_vs_dense'])} | {inside} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="directory of the results table")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal(5)
    channels = rng.standard_normal((3, 2, 5))
    cases = [(kernel, 2**e, "neumann") for e in range(8, 15)] + [(channels, 2**e, "periodic") for e in (10, 12)]
    cases += [(channels, 4096, "dirichlet")]
    results = []
    for kernel_, n, boundary in cases:
        result = bench_case(kernel_, n, boundary, args.repeats)
        results.append(result)
        print(
            f"{result['operator']:>22} n={n:6d}: jaxpde {result['jaxpde_s'] * 1e3:8.2f} ms gap {result['jaxpde_relative_gap']:.1e}, "
            f"svds {_fmt(result['svds_s'])} ms, dense {_fmt(result['dense_s'])} ms",
            flush=True,
        )
    meta = {
        **machine(),
        "scipy": scipy.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"spectral-{meta['device']}"
    (args.out / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (args.out / f"{stem}.md").write_text(markdown(results, meta))
    print(f"wrote {args.out / stem}.md")


if __name__ == "__main__":
    main()
