#!/usr/bin/env python3
"""Parses voxgate's /metrics with the Prometheus project's own Python parsers and checks its shape.

    parse_metrics.py text|openmetrics [--per-app] < exposition

`text` uses prometheus_client.parser (the Prometheus text format 0.0.4); `openmetrics` uses
prometheus_client.openmetrics.parser, which is strict (it rejects, for instance, a missing
`# EOF`, a counter sample without `_total`, or a histogram whose buckets do not add up).

Asserts that every expected family is there with its type and label names, that no family
came out untyped (a sample whose name does not fit its TYPE line), and that each histogram's
buckets are cumulative and end in +Inf equal to _count. `--per-app` expects the per-app
family; without it, the per-app family must be absent.

Prints the parsed families as JSON on standard output (name -> type and samples) for the
Rust test to check values. Exits non-zero with a message on standard error on any failure.
"""

import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_text
except ImportError:
    sys.exit("python package `prometheus_client` is missing: pip install prometheus_client "
             "(scripts/test-deps.sh installs it)")

# family name (as the parser names it: counters without _total) -> (type, label names)
EXPECTED = {
    "voxgate_decisions": ("counter", {"service", "outcome", "reason"}),
    "voxgate_decision_duration_seconds": ("histogram", {"service"}),
    "voxgate_forward_auth_rejections": ("counter", {"code"}),
    "voxgate_leases_in_use": ("gauge", {"service"}),
    "voxgate_counter_store_degraded": ("gauge", {"store"}),
    "voxgate_counter_store_errors": ("counter", {"store"}),
    "voxgate_usage_flush_lag_seconds": ("gauge", set()),
    "voxgate_usage_last_flush_timestamp_seconds": ("gauge", set()),
    "voxgate_snapshot_apps": ("gauge", set()),
    "voxgate_build_info": ("gauge", {"version"}),
}
PER_APP = ("voxgate_app_decisions", ("counter", {"app", "service", "outcome", "reason"}))


def fail(message):
    sys.exit(f"parse_metrics.py: {message}")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("text", "openmetrics"):
        fail("usage: parse_metrics.py text|openmetrics [--per-app] < exposition")
    per_app = "--per-app" in sys.argv[2:]
    text = sys.stdin.read()
    parse = parse_text if sys.argv[1] == "text" else parse_openmetrics
    try:
        families = list(parse(text))
    except Exception as e:  # the parsers raise ValueError and friends on malformed input
        fail(f"{sys.argv[1]} parser rejected the exposition: {type(e).__name__}: {e}")

    by_name = {}
    for f in families:
        if f.name in by_name:
            fail(f"family `{f.name}` appears twice")
        if f.type in ("untyped", "unknown"):
            fail(f"family `{f.name}` came out {f.type}: a sample name does not fit its TYPE")
        by_name[f.name] = f

    expected = dict(EXPECTED)
    if per_app:
        expected[PER_APP[0]] = PER_APP[1]
    elif PER_APP[0] in by_name:
        fail(f"`{PER_APP[0]}` is exposed without --metrics-per-app")

    for name, (typ, labels) in expected.items():
        f = by_name.get(name)
        if f is None:
            fail(f"missing family `{name}`; have {sorted(by_name)}")
        if f.type != typ:
            fail(f"`{name}` is a {f.type}, expected a {typ}")
        if not f.samples:
            fail(f"`{name}` has no samples")
        for s in f.samples:
            got = set(s.labels) - {"le"}
            if got != labels:
                fail(f"`{s.name}` has labels {sorted(got)}, expected {sorted(labels)}")

    for f in by_name.values():
        if f.type != "histogram":
            continue
        series = {}
        for s in f.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
        for key, h in series.items():
            values = [v for _, v in h["buckets"]]
            if values != sorted(values):
                fail(f"`{f.name}` {key}: buckets are not cumulative: {h['buckets']}")
            if not h["buckets"] or h["buckets"][-1][0] != float("inf"):
                fail(f"`{f.name}` {key}: the last bucket is not +Inf")
            if h["buckets"][-1][1] != h["count"]:
                fail(f"`{f.name}` {key}: +Inf bucket {h['buckets'][-1][1]} != count {h['count']}")

    out = {
        f.name: {"type": f.type, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
        for f in families
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
