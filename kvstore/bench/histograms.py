"""HDR latency histograms: recording in microseconds, summaries in milliseconds, merging.

Histograms cross process boundaries in their standard compressed base64 encoding (the same one
HdrHistogram uses in every language), so several generator processes merge exactly.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour: nothing is clipped in any sane run
SIGNIFICANT_DIGITS = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_seconds(hist: HdrHistogram, seconds: float) -> None:
    micros = int(seconds * 1e6)
    if micros < LOWEST_US:
        micros = LOWEST_US
    elif micros > HIGHEST_US:
        micros = HIGHEST_US
    hist.record_value(micros)


def encode(hist: HdrHistogram) -> str:
    return hist.encode().decode("ascii")


def decode(encoded: str) -> HdrHistogram:
    hist = new_histogram()
    hist.decode_and_add(encoded.encode("ascii"))
    return hist


def merge(encoded_histograms) -> HdrHistogram:
    """One histogram holding every value of the given encoded histograms."""
    total = new_histogram()
    for encoded in encoded_histograms:
        if encoded:
            total.decode_and_add(encoded.encode("ascii"))
    return total


def summarize(hist: HdrHistogram) -> dict:
    """count and latency percentiles (ms, 3 significant digits) of one histogram."""
    count = hist.get_total_count()
    out: dict = {"count": count}
    if count == 0:
        for name, _ in PERCENTILES:
            out[name] = None
        out["max"] = None
        out["mean"] = None
        return out
    for name, pct in PERCENTILES:
        out[name] = hist.get_value_at_percentile(pct) / 1000.0
    out["max"] = hist.get_max_value() / 1000.0
    out["mean"] = round(hist.get_mean_value() / 1000.0, 3)
    return out
