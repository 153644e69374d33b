#!/usr/bin/env python3
"""A third-party client of voxgate's Envoy rate limit service.

Calls envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit with Python grpcio and the
stubs generated from Envoy's own protos (PyPI package `xds-protos`), the way Envoy's
ratelimit filter does, against a running `voxgate serve` with the built-in catalogue and its
demo app, and checks statuses, headers and atomicity. Reads counters back through the HTTP
API as the admin.

    python3 rls_client.py --grpc 127.0.0.1:8081 --http 127.0.0.1:8080 --admin-token TOKEN

Exits 0 and prints "rls_client: all checks passed" when every check holds; raises otherwise.
Run by the Rust test `rls::python` (crates/voxgate-server/tests/http/rls.rs).

Built-in catalogue figures (app `demo`, plan `free`): tts 20 000 characters a day, rate 10/s
burst 20; asr 1800 audio seconds a day, rate 5/s burst 10. The server's clock is real, so the
checks leave room for the rate to refill between calls and never depend on the time of day
except through the figures the server reports.
"""

import argparse
import json
import sys
import urllib.request

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf import wrappers_pb2

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
Unit = rls_pb2.RateLimitResponse.RateLimit


def descriptor(app, service, units=None, hits=None):
    entries = [
        ratelimit_pb2.RateLimitDescriptor.Entry(key="app_id", value=app),
        ratelimit_pb2.RateLimitDescriptor.Entry(key="service", value=service),
    ]
    if units is not None:
        entries.append(ratelimit_pb2.RateLimitDescriptor.Entry(key="units", value=str(units)))
    d = ratelimit_pb2.RateLimitDescriptor(entries=entries)
    if hits is not None:
        d.hits_addend.CopyFrom(wrappers_pb2.UInt64Value(value=hits))
    return d


class Client:
    def __init__(self, grpc_addr, http_addr, admin_token):
        self.channel = grpc.insecure_channel(grpc_addr)
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.stub = rls_pb2_grpc.RateLimitServiceStub(self.channel)
        self.http = http_addr
        self.token = admin_token

    def ask(self, *descriptors, hits_addend=0, domain="voice"):
        req = rls_pb2.RateLimitRequest(domain=domain, descriptors=list(descriptors), hits_addend=hits_addend)
        return self.stub.ShouldRateLimit(req, timeout=5)

    def used(self, service, policy):
        req = urllib.request.Request(
            f"http://{self.http}/v1/apps/demo/limits", headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            body = json.load(r)
        for item in body["limits"]:
            if item["service"] == service and item["policy"] == policy:
                return item["used"]
        raise AssertionError(f"no {service} {policy} limit in {body}")


def headers(resp):
    return {h.key.lower(): h.value for h in resp.response_headers_to_add}


def sf_items(value):
    """Items of a structured-field list: {name: {param: value}}."""
    out = {}
    for item in value.split(", "):
        name, *params = item.split(";")
        out[name.strip('"')] = dict((p.split("=", 1)[0], p.split("=", 1)[1].strip('"')) for p in params)
    return out


def expect(cond, what, resp=None):
    if not cond:
        raise AssertionError(f"{what}\n{resp}")
    print(f"ok - {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--admin-token", required=True)
    args = ap.parse_args()
    c = Client(args.grpc, args.http, args.admin_token)

    # 1. An allowed descriptor: one OK status with the binding limit, RateLimit headers.
    r = c.ask(descriptor("demo", "tts", units=19990))
    expect(r.overall_code == OK and len(r.statuses) == 1 and r.statuses[0].code == OK, "allowed call is OK", r)
    st = r.statuses[0]
    expect(st.current_limit.name == "tts.daily", "binding limit is the tts daily quota (10 of 20000 left)", r)
    expect(st.current_limit.unit == Unit.DAY and st.current_limit.requests_per_unit == 20000, "unit DAY, 20000", r)
    expect(st.limit_remaining == 10, "limit_remaining is 10", r)
    expect(st.duration_until_reset.seconds > 0, "duration_until_reset until the day ends", r)
    h = headers(r)
    policy = sf_items(h["ratelimit-policy"])
    expect(policy["daily"]["q"] == "20000" and policy["daily"]["qu"] == "character", "RateLimit-Policy daily", r)
    expect(sf_items(h["ratelimit"])["daily"]["r"] == "10", "RateLimit daily r=10", r)
    expect("retry-after" not in h, "no Retry-After when allowed", r)
    expect(c.used("tts", "daily") == 19990, "19990 characters charged")

    # 2. Atomicity: asr would pass, tts is over its day; neither is charged.
    asr_before = c.used("asr", "daily")
    r = c.ask(descriptor("demo", "asr", units=10), descriptor("demo", "tts", units=20))
    expect(r.overall_code == OVER_LIMIT, "over the limit overall", r)
    expect([s.code for s in r.statuses] == [OK, OVER_LIMIT], "asr OK, tts OVER_LIMIT", r)
    expect(r.statuses[1].current_limit.name == "tts.daily", "the refusing status names tts.daily", r)
    h = headers(r)
    expect(list(sf_items(h["ratelimit-policy"])) == ["daily"], "headers describe only the refusing limit", r)
    expect(h["ratelimit-policy"].endswith('qu="character"'), "... the tts one, not asr's", r)
    t = int(sf_items(h["ratelimit"])["daily"]["t"])
    expect(int(h["retry-after"]) >= t > 0, "Retry-After is the day's reset, never earlier than t", r)
    expect(c.used("asr", "daily") == asr_before, "the passing asr descriptor consumed nothing")
    expect(c.used("tts", "daily") == 19990, "the refused tts descriptor consumed nothing")

    # 3. A check (hits_addend 0) is decided but never charged.
    r = c.ask(descriptor("demo", "asr", units=100, hits=0))
    expect(r.overall_code == OK, "a check with room is OK", r)
    expect(c.used("asr", "daily") == asr_before, "a check charges nothing")
    r = c.ask(descriptor("demo", "tts", units=0, hits=0), descriptor("demo", "asr", units=1))
    expect(r.overall_code == OK, "a check of 0 units on a quota with 10 left is OK", r)
    expect(c.used("asr", "daily") == asr_before + 1, "the other descriptor was charged")

    # 4. The rate: the request's hits_addend takes the whole asr burst; the next is refused
    #    with the rate's own headers (a second descriptor that passed adds none).
    r = c.ask(descriptor("demo", "asr", units=0), hits_addend=9)
    expect(r.overall_code == OK, "9 hits fit the asr burst", r)
    r = c.ask(descriptor("demo", "asr", units=0, hits=5), descriptor("demo", "tts", units=1))
    expect([s.code for s in r.statuses] == [OVER_LIMIT, OK], "5 more asr hits are over the rate", r)
    expect(r.statuses[0].current_limit.name == "asr.rate" and r.statuses[0].current_limit.unit == Unit.SECOND,
           "the rate binds, per SECOND", r)
    h = headers(r)
    expect(list(sf_items(h["ratelimit"])) == ["rate"], "headers describe only the rate", r)
    expect(int(h["retry-after"]) >= 1, "Retry-After at least 1 s", r)
    expect(c.used("tts", "daily") == 19990, "tts not charged while asr was over")

    # 5. Unknown app: let through by default, no limit reported.
    r = c.ask(descriptor("no-such-app", "asr", units=1))
    expect(r.overall_code == OK and not r.statuses[0].HasField("current_limit"), "unknown app is OK, no limit", r)

    c.channel.close()
    print("rls_client: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
