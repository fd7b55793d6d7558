-- wrk script for bench/run.py's "+post" targets: keep-alive POST / with a
-- 4 KiB body (one read's worth: what request buffering must hold before it
-- takes an upstream connection).
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
