#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# test-upstream-http.py PATH-TO-club-test-upstream
#
# HTTP/1.1-level self-test of club-test-upstream over raw sockets: pipelining, chunked and
# 100-continue request bodies, malformed requests, limits, EOF-delimited and chunked responses,
# cancellation noticed while a stream is idle, X-Test-Die-After (fin, rst), and a stream paused by a
# reader that does not read. Prints "ok - ..."/"FAIL - ..."; exits 0 or 1.
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time

proc = subprocess.Popen([sys.argv[1], "--port", "0", "--name", "up-http"], stdout=subprocess.PIPE)
line = proc.stdout.readline().decode()
if not line.startswith("PORT="):
    print("FAIL - club-test-upstream did not start")
    sys.exit(1)
port = int(line[5:])
H = ("127.0.0.1", port)


def conn():
    s = socket.create_connection(H)
    s.settimeout(5)
    return s


def recv_all(s):
    d = b""
    while True:
        try:
            x = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            d += b"<RST>"
            break
        if not x:
            break
        d += x
    return d


def stats():
    s = conn()
    s.sendall(b"GET /_test/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return json.loads(recv_all(s).split(b"\r\n\r\n", 1)[1])


def reset():
    s = conn()
    s.sendall(b"POST /_test/reset HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    recv_all(s)


fails = 0


def check(name, cond, extra=""):
    global fails
    print(("ok - " if cond else "FAIL - ") + name + ("" if cond else " :: " + str(extra)[:600]), flush=True)
    if not cond:
        fails += 1


# pipelining: 3 requests in one write, keep-alive
s = conn()
s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /models HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
d = recv_all(s); check("pipelining 3 responses", d.count(b"HTTP/1.1 200 OK") == 3 and d.endswith(b'{"status":"ok"}'), d)

# chunked request body + echo
body = b'{"model":"test-model","messages":[{"role":"user","content":"a b c"}]}'
s = conn()
req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Test-Echo: 1\r\nConnection: keep-alive, Upgrade\r\nAuthorization: Bearer zz\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"
chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i+7]), body[i:i+7]) for i in range(0, len(body), 7)) + b"0\r\nTrailer-A: b\r\n\r\n"
s.sendall(req + chunks[:10]); time.sleep(0.05); s.sendall(chunks[10:])
s.sendall(b"GET /_test/last-request HTTP/1.1\r\nConnection: close\r\n\r\n")
d = recv_all(s)
parts = d.split(b"HTTP/1.1 ")
e = json.loads(parts[1].split(b"\r\n\r\n",1)[1])
check("chunked body decoded", e["body_length"] == len(body) and e["body_sha256"] == hashlib.sha256(body).hexdigest() and e["body_chunked"] is True and e["body"] == body.decode(), e)
check("echo headers", e["headers"]["x-dup"] == "1, 2" and e["headers"]["authorization"] == "Bearer zz" and ["X-Dup","1"] in e["header_list"], e)
lr = json.loads(parts[2].split(b"\r\n\r\n",1)[1])
check("last-request == echo", lr == e, lr)

# Expect: 100-continue
s = conn()
s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n" % len(body))
first = s.recv(100)
check("100 Continue", first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first)
s.sendall(body); d = first + recv_all(s)
check("response after 100", b"HTTP/1.1 200 OK" in d and b"tok4" in d, d)

# bad requests
for name, raw, want in [
    ("garbage", b"\x00\x01\x02garbage\r\n\r\n", b"400"),
    ("no version", b"GET /\r\n\r\n", b"400"),
    ("http/2", b"GET / HTTP/2.0\r\n\r\n", b"505"),
    ("bad header", b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", b"400"),
    ("obs-fold", b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", b"400"),
    ("CL+TE", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
    ("TE gzip", b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
    ("bad CL", b"POST /v1/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    ("huge CL", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", b"413"),
    ("bad chunk", b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"400"),
    ("bad control", b"GET /v1/models HTTP/1.1\r\nX-Test-Chunks: -3\r\n\r\n", b"400"),
    ("unknown control", b"GET /v1/models HTTP/1.1\r\nX-Test-Bogus: 1\r\n\r\n", b"400"),
    ("unknown path", b"GET /v1/nope HTTP/1.1\r\n\r\n", b"404"),
    ("wrong method", b"GET /v1/chat/completions HTTP/1.1\r\n\r\n", b"405"),
    ("json array", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", b"400"),
    ("json trailing", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}{}", b"400"),
    ("no model", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", b"400"),
    ("bad club_test", b'POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 26\r\n\r\n{"club_test":{"nope":1}}  ', b"400"),
    ("forced 503", b"GET /v1/models HTTP/1.1\r\nX-Test-Status: 503\r\n\r\n", b"503"),
    ("forced 429 in body", b'POST /v1/embeddings HTTP/1.1\r\nContent-Length: 28\r\n\r\n{"club_test":{"status":429}}', b"429"),
    ("absolute-form", b"GET http://x:1/v1/models?a=b HTTP/1.1\r\n\r\n", b"200"),
]:
    s = conn(); s.sendall(raw.replace(b" HTTP/1.1\r\n", b" HTTP/1.1\r\nConnection: close\r\n", 1)); d = recv_all(s)
    ok = d.startswith(b"HTTP/1.1 " + want)
    if ok and want != b"200" and b"\r\n\r\n" in d and not d.startswith(b"HTTP/1.1 304"):
        try: ok = "error" in json.loads(d.split(b"\r\n\r\n",1)[1])
        except ValueError: ok = False
    check("bad request: " + name + " -> " + want.decode(), ok, d)

# header too large
s = conn(); s.sendall(b"GET / HTTP/1.1\r\nA: " + b"x"*20000 + b"\r\n\r\n"); d = recv_all(s)
check("431 on 20 KiB head", d.startswith(b"HTTP/1.1 431"), d[:100])

# HTTP/1.0 stream: EOF-delimited
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 47\r\n\r\n{"model":"test-model","messages":[],"stream":1}')
d = recv_all(s); check("stream:1 (not bool) -> 400", d.startswith(b"HTTP/1.1 400"), d)
b2 = b'{"model":"test-model","messages":[],"stream":true}'
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s' % (len(b2), b2))
d = recv_all(s); check("HTTP/1.0 stream EOF-delimited", b"Transfer-Encoding" not in d and d.endswith(b"data: [DONE]\n\n") and b"Connection: close" in d, d)

# chunked plain response
s = conn(); s.sendall(b"GET /v1/models HTTP/1.1\r\nX-Test-Chunked: 1\r\nX-Test-Response-Size: 40000\r\nConnection: close\r\n\r\n")
d = recv_all(s); h, bb = d.split(b"\r\n\r\n", 1)
out = b""; 
while True:
    ln, rest = bb.split(b"\r\n", 1); n = int(ln, 16)
    if n == 0: break
    out += rest[:n]; bb = rest[n+2:]
check("chunked plain response padded to 40000", b"Transfer-Encoding: chunked" in h and len(out) == 40000 and json.loads(out)["object"] == "list", len(out))

# cancellation during an idle gap is noticed promptly
reset()
b3 = b'{"model":"test-model","messages":[],"stream":true}'
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-Chunks: 100\r\nX-Test-Chunk-Delay-Ms: 5000\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
time.sleep(0.2); s.recv(65536); s.close(); t0 = time.time()
while time.time() - t0 < 2 and stats()["streams_cancelled"] < 1: time.sleep(0.01)
st = stats(); dt = time.time() - t0
check("cancel noticed while idle between chunks (%.0f ms)" % (dt*1000), st["streams_cancelled"] == 1 and dt < 0.5 and st["streams_active"] == 0, st)

# cancellation during the first-byte delay
reset()
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-First-Byte-Delay-Ms: 3000\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
time.sleep(0.1); s.close(); time.sleep(0.1)
st = stats(); check("cancel during first-byte delay", st["streams_cancelled"] == 1 and st["streams_started"] == 1, st)

# first byte delay + chunk delay timing
s = conn(); t0 = time.time()
s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-First-Byte-Delay-Ms: 300\r\nX-Test-Chunk-Delay-Ms: 100\r\nX-Test-Chunks: 4\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
first = s.recv(10); t1 = time.time(); d = first + recv_all(s); t2 = time.time()
check("first-byte delay ~300 ms (%.0f)" % ((t1-t0)*1000), 0.29 <= t1 - t0 < 2.0)
check("3 gaps of 100 ms (%.0f)" % ((t2-t1)*1000), 0.29 <= t2 - t1 < 2.5 and d.count(b"data: ") == 5)

# die-after (fin): 2 chunks, then EOF without the last chunk
reset()
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-Die-After: 2\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
d = recv_all(s)
check("die-after fin: 2 chunks, EOF, no terminator", d.count(b"data: {") == 2 and not d.endswith(b"0\r\n\r\n") and b"[DONE]" not in d and b"<RST>" not in d, d[-80:])
time.sleep(0.05); st = stats(); check("streams_aborted=1", st["streams_aborted"] == 1 and st["streams_cancelled"] == 0, st)
# die-after (rst)
s = conn(); s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-Die-After: 3\r\nX-Test-Die-Mode: rst\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
d = recv_all(s)
check("die-after rst: 3 chunks then RST", d.count(b"data: {") == 3 and d.endswith(b"<RST>"), d[-80:])
# die-after on a plain response
s = conn(); s.sendall(b"GET /v1/models HTTP/1.1\r\nX-Test-Die-After: 10\r\n\r\n"); d = recv_all(s)
check("die-after plain: 10 body bytes", len(d.split(b"\r\n\r\n",1)[1]) == 10, d)

# backpressure: client does not read
reset()
s = conn(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)
s.sendall(b'POST /v1/chat/completions HTTP/1.1\r\nX-Test-Chunks: 1000\r\nX-Test-Chunk-Size: 65536\r\nContent-Length: %d\r\n\r\n%s' % (len(b3), b3))
time.sleep(0.5); st = stats()
check("backpressure: stream paused", st["paused_now"] == 1 and st["write_stalls"] >= 1 and st["chunks_generated"] < 100 and st["chunks_generated"] - st["chunks_written"] == 1 and st["unsent_bytes"] > 0, st)
g = st["chunks_generated"]; time.sleep(0.3); st = stats()
check("backpressure: no progress while not reading", st["chunks_generated"] == g, st)
total = 0
s.settimeout(10)
while True:
    x = s.recv(1 << 20)
    if not x: break
    total += len(x)
    if x.endswith(b"0\r\n\r\n"): break
st = stats()
check("backpressure: completes once read (%d bytes)" % total, st["streams_completed"] == 1 and st["chunks_written"] == 1000 and st["paused_now"] == 0 and st["unsent_bytes"] == 0, st)
s.close()

proc.send_signal(signal.SIGTERM)
try:
    rc = proc.wait(timeout=5)
except subprocess.TimeoutExpired:
    proc.kill()
    rc = None
check("exits 0 on SIGTERM", rc == 0, rc)
sys.exit(1 if fails else 0)
