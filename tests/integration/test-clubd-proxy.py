#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""
clubd's data path against real upstreams (club-test-upstream) on loopback:
routing, streaming timing, backpressure, cancellation, truncation, limits,
every error path, bad input, connection reuse, config errors and reload.

Usage: test-clubd-proxy.py CLUBD CLUB_TEST_UPSTREAM
Prints "ok - …" / "FAIL - …" per check and "N passed, N failed" at the end.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

CLUBD, UPSTREAM = sys.argv[1], sys.argv[2]
WORK = tempfile.mkdtemp(prefix="club-proxy-test.")
PROCS = []
passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"FAIL - {name} {detail}")
    sys.stdout.flush()
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_upstream(*args):
    p = subprocess.Popen([UPSTREAM, "--listen", "127.0.0.1:0", *args], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(WORK, "upstream.log"), "a"), text=True)
    PROCS.append(p)
    line = p.stdout.readline().strip()
    assert line.startswith("PORT="), f"upstream said {line!r}"
    return p, int(line[5:])


def write_config(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start_clubd(config, wait=True, env=None):
    log = open(os.path.join(WORK, "clubd.log"), "a")
    p = subprocess.Popen([CLUBD, "--config", config, "--log-level", "debug"], stdout=log, stderr=log,
                         env=dict(os.environ, **(env or {})))
    PROCS.append(p)
    return p


def wait_port(port, timeout=5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def request(port, method, path, body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r, data


def jbody(data):
    try:
        return json.loads(data)
    except Exception:
        return None


def is_openai_error(data, code=None, etype=None):
    j = jbody(data)
    if not isinstance(j, dict) or not isinstance(j.get("error"), dict):
        return False
    e = j["error"]
    if not all(k in e for k in ("message", "type", "param", "code")):
        return False
    if code is not None and e["code"] != code:
        return False
    if etype is not None and e["type"] != etype:
        return False
    return bool(e["message"])


def stats(port):
    r, d = request(port, "GET", "/_test/stats")
    return json.loads(d)


def reset(port):
    request(port, "POST", "/_test/reset", body="{}")


def raw(port, payload, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(payload)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out and (b"Content-Length: " in out or b"content-length: " in out):
                head, _, rest = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(rest) >= int(line.split(b":")[1]):
                            s.close()
                            return out
    except socket.timeout:
        pass
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except Exception:
        return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    up1, p1 = start_upstream("--name", "alpha", "--models", "model-a,model-b", "--api-key", "alpha-secret")
    up2, p2 = start_upstream("--name", "beta", "--models", "model-c")
    dead_port = free_port()
    port = free_port()
    cfg = write_config("clubd.conf", f"""
# two real upstreams
[Agent]
LogLevel=debug

[Proxy]
Listen=127.0.0.1:{port}
MaxBodySize=1M
MaxHeaderSize=8K
StreamBufferSize=64K
FirstByteTimeout=1500ms
ConnectTimeout=2s

[Upstream]
Name=alpha
URL=http://127.0.0.1:{p1}/v1
APIKey=alpha-secret

[Upstream]
Name=beta
URL=http://localhost:{p2}/v1/
""")
    os.makedirs(cfg + ".d")
    write_config("clubd.conf.d/50-dead.conf", f"""
[Upstream]
Name=dead
URL=http://127.0.0.1:{dead_port}
""")
    # The self-test makes clubd try exec, ptrace and a raw socket right after loading its
    # syscall filter; everything below then runs against the sandboxed daemon.
    clubd = start_clubd(cfg, env={"CLUBD_SANDBOX_SELFTEST": "1"})
    check("clubd starts and listens", wait_port(port))
    status = open(f"/proc/{clubd.pid}/status").read()
    check("clubd runs under a seccomp filter", "Seccomp:\t2" in status, [l for l in status.splitlines() if "Seccomp" in l])
    log = open(os.path.join(WORK, "clubd.log")).read()
    for what in ("execve()", "ptrace()", "socket(AF_PACKET)"):
        check(f"the sandbox refuses {what} inside the running daemon",
              f"Sandbox self-test: {what} refused: Operation not permitted" in log, log[-400:])

    # --- health and listings -------------------------------------------------------
    r, d = request(port, "GET", "/healthz")
    h = jbody(d) or {}
    ups = {u["name"]: u for u in h.get("upstreams", [])}
    check("/healthz answers 200 while some upstream is reachable", r.status == 200, r.status)
    check("/healthz reports each upstream's reachability",
          ups.get("alpha", {}).get("reachable") is True and ups.get("beta", {}).get("reachable") is True
          and ups.get("dead", {}).get("reachable") is False and ups["dead"].get("error"), h)
    check("/healthz status is degraded with one upstream down", h.get("status") == "degraded", h.get("status"))
    check("/healthz lists models per upstream", ups.get("alpha", {}).get("models") == ["model-a", "model-b"], ups.get("alpha"))

    r, d = request(port, "GET", "/v1/models")
    ids = sorted(m["id"] for m in (jbody(d) or {}).get("data", []))
    check("GET /v1/models merges the upstreams' lists", r.status == 200 and ids == ["model-a", "model-b", "model-c"], (r.status, d[:200]))
    r, d = request(port, "GET", "/v1/models/model-c")
    check("GET /v1/models/{id} describes one model", r.status == 200 and (jbody(d) or {}).get("id") == "model-c", d[:200])
    r, d = request(port, "GET", "/v1/models/nope")
    check("GET /v1/models/{unknown} is 404 model_not_found", r.status == 404 and is_openai_error(d, "model_not_found"), d[:200])

    # --- routing and header hygiene -----------------------------------------------------
    r, d = request(port, "POST", "/v1/chat/completions",
                   {"model": "model-c", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"X-Test-Echo": "1"})
    e = jbody(d) or {}
    check("a request goes to the upstream that serves its model", r.status == 200 and e.get("upstream") == "beta", d[:300])

    r, d = request(port, "POST", "/v1//chat/completions/",
                   {"model": "model-a", "messages": []},
                   headers={"X-Test-Echo": "1", "Authorization": "Bearer client-secret",
                            "Connection": "keep-alive, X-Drop-Me", "X-Drop-Me": "1", "Keep-Alive": "timeout=5",
                            "Proxy-Authorization": "Basic abc", "Cookie": "a=b", "X-Keep-Me": "yes",
                            "TE": "trailers"})
    e = jbody(d) or {}
    hdrs = {k.lower(): v for k, v in (e.get("headers") or {}).items()}
    check("double and trailing slashes still route", r.status == 200 and e.get("upstream") == "alpha", d[:300])
    check("the path joins the base URL without doubling /v1", e.get("path") == "/v1/chat/completions", e.get("path"))
    check("the client's Authorization is replaced by the upstream's key",
          hdrs.get("authorization") == "Bearer alpha-secret", hdrs.get("authorization"))
    check("hop-by-hop headers are dropped",
          not any(k in hdrs for k in ("connection", "keep-alive", "proxy-authorization", "te", "x-drop-me", "cookie")), hdrs)
    check("end-to-end headers pass", hdrs.get("x-keep-me") == "yes", hdrs)
    check("every response carries x-request-id", bool(r.getheader("x-request-id")))

    r, d = request(port, "POST", "/v1/chat/completions", {"model": "model-zzz", "messages": []})
    check("a model no upstream serves is 404 model_not_found",
          r.status == 404 and is_openai_error(d, "model_not_found", "invalid_request_error"), d[:300])

    # --- streaming: each chunk reaches the client before the next one exists -------------
    delay = 0.25
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/chat/completions", body=json.dumps({"model": "model-a", "stream": True, "messages": []}),
              headers={"Content-Type": "application/json", "X-Test-Chunks": "6",
                       "X-Test-Chunk-Delay-Ms": str(int(delay * 1000))})
    t0 = time.monotonic()
    resp = c.getresponse()
    arrivals = []
    buf = b""
    while True:
        b = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not b:
            break
        buf += b
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            arrivals.append((time.monotonic() - t0, ev))
    c.close()
    data_events = [(t, ev) for t, ev in arrivals if ev.startswith(b"data: {")]
    done = any(ev == b"data: [DONE]" for _, ev in arrivals)
    check("a stream arrives complete through clubd", len(data_events) == 6 and done, [e for _, e in arrivals][:3])
    # Chunk i is produced at about i*delay; it must reach us before chunk i+1 is produced.
    held = [(i, round(t, 3)) for i, (t, _) in enumerate(data_events) if t > (i + 1) * delay + 0.05]
    check("no SSE chunk is held back (each arrives before the next is produced)", not held, held)
    gaps = [round(data_events[i + 1][0] - data_events[i][0], 3) for i in range(len(data_events) - 1)]
    check("chunks arrive spaced as the upstream sent them", all(delay * 0.6 < g < delay * 1.6 for g in gaps), gaps)

    # --- backpressure: a client that does not read pauses the upstream ---------------------
    reset(p1)
    chunk = 64 * 1024
    n_chunks = 1024  # 64 MiB in all
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    body = json.dumps({"model": "model-a", "stream": True, "messages": []}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Test-Chunks: %d\r\nX-Test-Chunk-Size: %d\r\nContent-Length: %d\r\n\r\n" % (n_chunks, chunk, len(body)) + body)
    rss_before = rss_kib(clubd.pid)
    time.sleep(2.0)
    st = stats(p1)
    rss_during = rss_kib(clubd.pid)
    sent = st.get("bytes_written", 0)
    check("a slow client pauses the upstream (it has not sent the whole stream)",
          sent < n_chunks * chunk // 4, f"upstream wrote {sent} of {n_chunks * chunk} bytes")
    check("clubd does not buffer a paused stream (RSS grows < 8 MiB)",
          rss_during - rss_before < 8 * 1024, f"{rss_before} KiB -> {rss_during} KiB")
    got = 0
    s.settimeout(20)
    tail = b""
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        got += len(b)
        tail = (tail + b)[-64:]
        if tail.endswith(b"0\r\n\r\n") and b"[DONE]" in tail:
            break
    s.close()
    check("after the client reads again the whole stream arrives", got > n_chunks * chunk and b"[DONE]" in tail, got)

    # --- a client that goes away cancels the upstream request ------------------------------
    reset(p1)
    s = socket.create_connection(("127.0.0.1", port))
    body = json.dumps({"model": "model-a", "stream": True, "messages": []}).encode()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Test-Chunks: 100\r\nX-Test-Chunk-Delay-Ms: 500\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.settimeout(5)
    first = s.recv(65536)
    s.close()
    t0 = time.monotonic()
    cancelled = False
    while time.monotonic() - t0 < 1.0:
        if stats(p1).get("streams_cancelled", 0) >= 1:
            cancelled = True
            break
        time.sleep(0.05)
    check("a client disconnect cancels the upstream request within a second",
          first.startswith(b"HTTP/1.1 200") and cancelled, f"after {time.monotonic() - t0:.2f} s: {stats(p1)}")

    # Same while still waiting for the first byte (the exchange is suspended in clubd).
    reset(p1)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Test-First-Byte-Delay-Ms: 1000\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    time.sleep(0.2)
    s.close()
    time.sleep(1.5)
    r, d = request(port, "GET", "/healthz")
    check("a disconnect before the first byte leaves nothing in flight", (jbody(d) or {}).get("in_flight") == 0, d[:200])

    # --- an upstream that dies mid-stream: the client sees a truncated response ---------------
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"X-Test-Chunks: 10\r\nX-Test-Die-After: 3\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    s.settimeout(5)
    out = b""
    closed = False
    t0 = time.monotonic()
    try:
        while True:
            b = s.recv(65536)
            if not b:
                closed = True
                break
            out += b
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    closed_after = time.monotonic() - t0
    s.close()
    check("mid-stream death: the client gets the chunks sent so far", out.count(b"data: {") == 3, out[-200:])
    check("mid-stream death: the connection closes at once, without the terminating chunk",
          closed and closed_after < 2 and not out.endswith(b"0\r\n\r\n") and b"[DONE]" not in out,
          (closed, round(closed_after, 2), out[-80:]))

    # Same with a Content-Length response: the client sees fewer bytes than announced.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("POST", "/v1/chat/completions", body=json.dumps({"model": "model-a", "messages": []}),
              headers={"Content-Type": "application/json", "X-Test-Response-Size": "200000", "X-Test-Die-After": "1"})
    resp = c.getresponse()
    try:
        resp.read()
        truncated = False
    except http.client.IncompleteRead:
        truncated = True
    c.close()
    check("a truncated fixed-length response stays visibly truncated", truncated)

    # A small fixed-length response is collected whole first: failing half-way, it becomes a 502.
    r, d = request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []},
                   headers={"X-Test-Response-Size": "2000", "X-Test-Die-After": "100"})
    check("a small response cut half-way is a clean 502 upstream_error",
          r.status == 502 and is_openai_error(d, "upstream_error"), (r.status, d[:200]))
    r, d = request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []},
                   headers={"X-Test-Response-Size": "2000"})
    check("a small response arrives whole, with the upstream's headers and x-request-id",
          r.status == 200 and len(d) == 2000 and r.getheader("Content-Type", "").startswith("application/json")
          and r.getheader("X-Upstream-Name") == "alpha" and r.getheader("x-request-id"), (r.status, len(d)))

    # --- error paths -------------------------------------------------------------------------
    cfg_dead = write_config("dead-only.conf", f"[Proxy]\nListen=127.0.0.1:{free_port()}\n[Upstream]\nURL=http://127.0.0.1:{dead_port}/v1\n")
    # (single upstream: requests go to it even without a model listing)
    port_dead = int(open(cfg_dead).read().split("127.0.0.1:")[1].split("\n")[0])
    pd = start_clubd(cfg_dead)
    wait_port(port_dead)
    r, d = request(port_dead, "POST", "/v1/chat/completions", {"model": "x", "messages": []})
    check("connect failure is 502 upstream_unreachable", r.status == 502 and is_openai_error(d, "upstream_unreachable"), d[:200])
    r, d = request(port_dead, "GET", "/healthz")
    check("/healthz is 503 when no upstream is reachable", r.status == 503 and (jbody(d) or {}).get("status") == "down", d[:200])
    pd.terminate()

    t0 = time.monotonic()
    r, d = request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []},
                   headers={"X-Test-First-Byte-Delay-Ms": "4000"})
    took = time.monotonic() - t0
    check("no first byte within FirstByteTimeout is 504 upstream_timeout",
          r.status == 504 and is_openai_error(d, "upstream_timeout") and took < 3.5, (r.status, took, d[:200]))

    r, d = request(port, "GET", "/v2/whatever")
    check("an unknown path is 404 unknown_url", r.status == 404 and is_openai_error(d, "unknown_url"), d[:200])
    r, d = request(port, "DELETE", "/v1/models")
    check("a wrong method is 405 with Allow", r.status == 405 and r.getheader("Allow") and is_openai_error(d), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", '{"model": "model-a", ')
    check("invalid JSON is 400 invalid_request_error", r.status == 400 and is_openai_error(d, None, "invalid_request_error"), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", {"messages": []})
    check("a missing model is 400 naming param 'model'", r.status == 400 and (jbody(d) or {}).get("error", {}).get("param") == "model", d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", {"model": 42})
    check("a non-string model is 400", r.status == 400 and is_openai_error(d), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", "[1,2]")
    check("a body that is not an object is 400", r.status == 400 and is_openai_error(d), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", "[" * 200 + "]" * 200)
    check("JSON nested too deeply is 400", r.status == 400 and is_openai_error(d), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", "")
    check("an empty body is 400", r.status == 400 and is_openai_error(d), d[:200])
    r, d = request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []},
                   headers={"X-Test-Status": "429"})
    check("an upstream's own error passes through unchanged", r.status == 429 and is_openai_error(d), (r.status, d[:200]))

    # --- limits -----------------------------------------------------------------------------------
    big = json.dumps({"model": "model-a", "pad": "x" * (2 << 20)}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    resp = raw(port, head + b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(big))
    check("a body over MaxBodySize (by Content-Length) with Expect: 100-continue is 413 before it is sent",
          status_of(resp) == 413 and b'"error"' in resp, resp[:120])
    resp = raw(port, head + b"Content-Length: %d\r\n\r\n" % (100 << 20))
    check("a Content-Length far beyond MaxBodySize is 413 at once, nothing read",
          status_of(resp) == 413 and b'"error"' in resp, resp[:120])
    # Somewhat over the limit, sent whole: read and thrown away, then the 413, so that no
    # connection reset can overtake the answer (lib/http-server.c).
    resp = raw(port, head + b"Content-Length: %d\r\n\r\n" % len(big) + big, timeout=10)
    check("a body over MaxBodySize (by Content-Length), sent whole, gets its 413",
          status_of(resp) == 413 and b'"error"' in resp, resp[:120])
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    try:
        for i in range(0, len(big), 65536):
            part = big[i:i + 65536]
            s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        s.sendall(b"0\r\n\r\n")
    except OSError as ex:
        print("# send:", ex)
    resp = b""
    try:
        while b"\r\n\r\n" not in resp:
            b = s.recv(65536)
            if not b:
                break
            resp += b
    except OSError as ex:
        print("# recv:", ex)
    s.close()
    check("a chunked body over MaxBodySize is 413", status_of(resp) == 413, resp[:120])
    resp = raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 12000 + b"\r\n\r\n")
    check("headers over MaxHeaderSize are refused with 431 or 413", status_of(resp) in (413, 431), resp[:120])

    # --- bad input never hurts the daemon --------------------------------------------------------
    # A request line that is not HTTP at all cannot be answered in HTTP: libmicrohttpd closes
    # the connection at once. Everything that is HTTP gets a status.
    for name, payload in {"not HTTP": b"HELLO\r\n\r\n", "HTTP/0.9": b"GET /healthz\r\n\r\n",
                          "extra token in request line": b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n"}.items():
        t0 = time.monotonic()
        resp = raw(port, payload, timeout=3)
        st_ = status_of(resp)
        check(f"bad input ({name}) gets a 4xx or an immediate close",
              400 <= st_ < 500 or (resp == b"" and time.monotonic() - t0 < 1.0), resp[:100])
    resp = raw(port, b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", timeout=3)
    check("bad input (unknown HTTP version) gets 505", status_of(resp) == 505, resp[:100])
    bad = {
        "header without colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        "space before colon": b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n",
        "Content-Length and Transfer-Encoding": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two different Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
        "negative Content-Length": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "bad chunk size": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "missing Host": b"GET /healthz HTTP/1.1\r\n\r\n",
        "NUL in the path": b"GET /v1/mo\x00dels HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for name, payload in bad.items():
        resp = raw(port, payload, timeout=3)
        st_ = status_of(resp)
        check(f"bad input ({name}) gets a 4xx", 400 <= st_ < 500, resp[:100])
    r, d = request(port, "GET", "/healthz")
    check("the daemon keeps serving after bad input", r.status == 200 and clubd.poll() is None)

    # --- upstream connections are reused ---------------------------------------------------------
    for _ in range(3):
        request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []})
    reset(p1)
    for _ in range(30):
        request(port, "POST", "/v1/chat/completions", {"model": "model-a", "messages": []})
    st = stats(p1)
    # At most one more connection: a model-list refresh may run beside a request.
    check("steady state opens no new upstream connection per request",
          st.get("requests", 0) >= 30 and st.get("connections_accepted", 99) <= 2, st)

    # --- reload keeps streams and applies the new upstream set -----------------------------------
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", "/v1/chat/completions", body=json.dumps({"model": "model-a", "stream": True, "messages": []}),
              headers={"Content-Type": "application/json", "X-Test-Chunks": "8", "X-Test-Chunk-Delay-Ms": "150"})
    resp = c.getresponse()
    first = resp.read1(65536)
    os.unlink(os.path.join(WORK, "clubd.conf.d/50-dead.conf"))
    clubd.send_signal(signal.SIGHUP)
    rest = resp.read()
    c.close()
    whole = first + rest
    check("SIGHUP does not drop a running stream", whole.count(b"data: {") == 8 and b"[DONE]" in whole, whole[-100:])
    time.sleep(0.3)
    r, d = request(port, "GET", "/healthz")
    names = sorted(u["name"] for u in (jbody(d) or {}).get("upstreams", []))
    check("SIGHUP applies the new upstream set", names == ["alpha", "beta"] and (jbody(d) or {}).get("status") == "ok", d[:200])

    # --- an Ollama upstream (Kind=ollama), and sd_notify ------------------------------------------
    # club-test-upstream --ollama answers GET /api/tags the way Ollama does (name, model,
    # digest, details); clubd must list those models (owned_by "ollama": the native list, not
    # /v1/models, where owned_by would be the upstream's name) and route requests to them.
    up3, p3 = start_upstream("--name", "olla", "--ollama", "--models", "llama3:8b,qwen2.5:7b")
    port_o = free_port()
    cfg_o = write_config("ollama.conf", f"[Proxy]\nListen=127.0.0.1:{port_o}\n"
                                        f"[Upstream]\nName=ollama\nKind=ollama\nURL=http://127.0.0.1:{p3}/v1\n")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(os.path.join(WORK, "notify.sock"))
    nsock.settimeout(0.2)
    po = start_clubd(cfg_o, env={"NOTIFY_SOCKET": os.path.join(WORK, "notify.sock"), "WATCHDOG_USEC": "400000"})
    notes = []

    def collect(until, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline and not until():
            try:
                notes.extend(nsock.recv(4096).decode().split("\n"))
            except socket.timeout:
                pass
        return until()

    check("sd_notify: READY=1 and a STATUS= line, then WATCHDOG=1",
          collect(lambda: "READY=1" in notes and "WATCHDOG=1" in notes and any(n.startswith("STATUS=") for n in notes)),
          notes[:10])
    status = [n for n in notes if n.startswith("STATUS=")]
    check("…STATUS= is one readable sentence naming the state and the upstreams",
          status and status[0].startswith("STATUS=Not registered: run clubctl register") and "upstream(s)" in status[0], status[:2])
    ids = []
    for _ in range(50):
        r, d = request(port_o, "GET", "/v1/models")
        ids = [(m.get("id"), m.get("owned_by")) for m in (jbody(d) or {}).get("data", [])]
        if ids:
            break
        time.sleep(0.1)
    check("Kind=ollama: the models come from Ollama's native GET /api/tags",
          sorted(ids) == [("llama3:8b", "ollama"), ("qwen2.5:7b", "ollama")], ids)
    r, d = request(port_o, "POST", "/v1/chat/completions", {"model": "qwen2.5:7b", "messages": []})
    check("…and a request for one of them is served by it", r.status == 200 and r.getheader("X-Upstream-Name") == "olla",
          (r.status, d[:200]))
    del notes[:]
    po.send_signal(signal.SIGHUP)
    check("SIGHUP: RELOADING=1, then READY=1 again",
          collect(lambda: "RELOADING=1" in notes and "READY=1" in notes[notes.index("RELOADING=1"):]
                  if "RELOADING=1" in notes else False), notes[:10])
    del notes[:]
    po.send_signal(signal.SIGTERM)
    check("SIGTERM: STOPPING=1", collect(lambda: "STOPPING=1" in notes), notes[:10])
    check("…and exits 0", po.wait(timeout=15) == 0)
    nsock.close()
    up3.terminate()

    # --- configuration errors name file and line -----------------------------------------------
    bad_cfg = write_config("bad.conf", "[Proxy]\nListen=127.0.0.1:1\nMaxBodySize=lots\n[Upstream]\nURL=ftp://x\nColour=blue\n")
    res = subprocess.run([CLUBD, "--config", bad_cfg, "--check-config"], capture_output=True, text=True, timeout=10)
    check("an invalid value names file and line", res.returncode != 0 and f"{bad_cfg}:3" in res.stderr, res.stderr)
    check("an invalid URL names file and line", f"{bad_cfg}:5" in res.stderr, res.stderr)
    check("an unknown key is warned about with file and line", f"{bad_cfg}:6" in res.stderr and "Colour" in res.stderr, res.stderr)
    res = subprocess.run([CLUBD, "--config", os.path.join(WORK, "missing.conf"), "--check-config"],
                         capture_output=True, text=True, timeout=10)
    check("a missing config file is a clear error", res.returncode != 0 and "missing.conf" in res.stderr, res.stderr)
    # An agent with capabilities and no upstream is up: the gateway's probe of /healthz must
    # not take it off the network.
    port_c = free_port()
    cap_only = write_config("cap-only.conf", f"[Proxy]\nListen=127.0.0.1:{port_c}\n"
                                             "[Capability]\nName=echo\nURL=http://127.0.0.1:9/x\n")
    pc = start_clubd(cap_only)
    if wait_port(port_c):
        r, d = request(port_c, "GET", "/healthz")
        check("capabilities and no upstream: /healthz is 200 \"ok\"",
              r.status == 200 and (jbody(d) or {}).get("status") == "ok", (r.status, d[:200]))
    else:
        check("capabilities and no upstream: clubd starts", False, "no listener")
    pc.terminate()
    pc.wait(timeout=5)
    # The gateway's store takes names that start with a letter or digit; clubd must refuse
    # the others itself, or the agent's heartbeats would be refused later.
    cap_cfg = write_config("cap.conf", "[Proxy]\nListen=127.0.0.1:1\n[Capability]\nName=-echo\nURL=http://127.0.0.1:9/x\n")
    res = subprocess.run([CLUBD, "--config", cap_cfg, "--check-config"], capture_output=True, text=True, timeout=10)
    check("a capability name starting with '-' is refused, naming file and line",
          res.returncode != 0 and f"{cap_cfg}:4" in res.stderr and "starting with a letter or digit" in res.stderr, res.stderr)

    # --- clean stop ----------------------------------------------------------------------------------
    clubd.send_signal(signal.SIGTERM)
    try:
        rc = clubd.wait(timeout=5)
    except subprocess.TimeoutExpired:
        rc = None
    check("SIGTERM stops clubd cleanly", rc == 0, rc)
    check("the sandboxed daemon served the whole run", "ALLOWED" not in open(os.path.join(WORK, "clubd.log")).read())


try:
    main()
except Exception:
    failed += 1
    print("FAIL - test raised an exception")
    traceback.print_exc()
finally:
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            p.wait()
    if failed:
        for f in ("clubd.log", "upstream.log"):
            path = os.path.join(WORK, f)
            if os.path.exists(path):
                print(f"--- {f} (last 40 lines)")
                print("".join(open(path, errors="replace").readlines()[-40:]))
    subprocess.run(["rm", "-rf", WORK])
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
