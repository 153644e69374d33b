-- wrk script: POST /v1/check for the demo app, 1 request and 1.5 audio seconds each.
wrk.method = "POST"
wrk.path = "/v1/check"
wrk.body = '{"app_id":"demo","service":"asr","units":1.5}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
