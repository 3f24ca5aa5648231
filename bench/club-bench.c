/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-bench: the load generator behind bench/run.sh, plus a timestamping SSE origin.
 *
 * One thread, one epoll loop, non-blocking sockets, HTTP/1.1 keep-alive, libc only.
 *
 *   club-bench latency --target H:P --clients N --duration S [--warmup S] [--rate R] [--cpu-pid PID…] [--ref-pid PID]
 *   club-bench sse     --target H:P --streams N --chunks C --delay-ms D [--cpu-pid PID…]
 *   club-bench streams --target H:P --streams N [--delay-ms D] [--hold S] [--rss-pid PID…]
 *   club-bench origin  [--listen H:P]        (prints PORT=N; SSE chunks carry their send time)
 *   club-bench wait    --target H:P [--timeout S]   (until GET /v1/models answers 200)
 *   club-bench port                          (prints a free loopback port)
 *
 * Every measuring mode prints one line "RESULT key=value ..." on stdout, and exits 0 when the
 * measurement is meaningful, 1 when it is not (target down, errors, nothing completed).
 * --cpu-pid and --rss-pid may be given up to MAX_PIDS times (a chain of proxies): the first
 * process's figures are cpu_us_per_req, kib_per_stream…, the second's cpu2_us_per_req,
 * kib2_per_stream…, and so on. --header adds a request header (an API key), --model sets the
 * request's model.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_USEC 1000ULL
#define NSEC_PER_MSEC 1000000ULL
#define NSEC_PER_SEC 1000000000ULL
#define IN_BUF_SIZE (16U * 1024U)
#define MAX_EVENTS 256
#define TS_MARKER "\"club_bench_ts\":"
#define MODEL "test-model"
#define MAX_PIDS 8
#define MAX_HEADERS 8

/* ---- small helpers --------------------------------------------------------------------- */

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * NSEC_PER_SEC + (uint64_t) ts.tv_nsec;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        fputs("club-bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(2);
}

static void *xmalloc(size_t n) {
        void *p = calloc(1, n ?: 1);

        if (!p)
                die("out of memory");
        return p;
}

static int parse_addr(const char *s, struct sockaddr_in *ret) {
        const char *colon = strrchr(s, ':');
        char host[64];
        char *end;
        long port;

        if (!colon || (size_t) (colon - s) >= sizeof host)
                return -EINVAL;
        memcpy(host, s, (size_t) (colon - s));
        host[colon - s] = 0;
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (errno || *end || port < 0 || port > 65535)
                return -EINVAL;
        memset(ret, 0, sizeof *ret);
        ret->sin_family = AF_INET;
        ret->sin_port = htons((uint16_t) port);
        if (inet_pton(AF_INET, host, &ret->sin_addr) != 1)
                return -EINVAL;
        return 0;
}

static void set_nodelay(int fd) {
        int one = 1;

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* CPU time of a process (all its threads) in microseconds, from the nanosecond run times in
 * /proc/PID/task/TID/schedstat, summed over the threads; -1 if not available. */
static int64_t proc_cpu_usec_schedstat(pid_t pid) {
        char path[64], file[384], buf[128];
        unsigned long long sum = 0, run;
        struct dirent *de;
        DIR *d;

        snprintf(path, sizeof path, "/proc/%d/task", (int) pid);
        d = opendir(path);
        if (!d)
                return -1;
        while ((de = readdir(d))) {
                ssize_t n;
                int fd;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(file, sizeof file, "%s/%s/schedstat", path, de->d_name);
                fd = open(file, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                n = read(fd, buf, sizeof buf - 1);
                close(fd);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                if (sscanf(buf, "%llu", &run) != 1) {
                        closedir(d);
                        return -1;
                }
                sum += run;
        }
        closedir(d);
        return (int64_t) (sum / 1000);
}

/* CPU time of a process (all its threads), in microseconds; -1 if it is gone. The same as
 * utime + stime in /proc/PID/stat, but with nanosecond resolution where the kernel keeps
 * schedstats, instead of clock ticks (10 ms). */
static int64_t proc_cpu_usec(pid_t pid) {
        char path[64], buf[2048], *p;
        unsigned long long ut = 0, st = 0;
        int64_t v;
        ssize_t n;
        int fd;

        if (pid <= 0)
                return -1;
        v = proc_cpu_usec_schedstat(pid);
        if (v > 0)
                return v;
        snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0)
                return -1;
        buf[n] = 0;
        /* The command name may contain spaces and parentheses: start after the last ')'. */
        p = strrchr(buf, ')');
        if (!p)
                return -1;
        /* Fields after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -1;
        return (int64_t) ((ut + st) * 1000000ULL / (unsigned long long) sysconf(_SC_CLK_TCK));
}

/* VmRSS in KiB; -1 if the process is gone. */
static long proc_rss_kib(pid_t pid) {
        char path[64], line[256];
        long kib = -1;
        FILE *f;

        if (pid <= 0)
                return -1;
        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "VmRSS:", 6) == 0) {
                        kib = strtol(line + 6, NULL, 10);
                        break;
                }
        fclose(f);
        return kib;
}

static int64_t self_cpu_usec(void) {
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (int64_t) ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
               (int64_t) ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

/* ---- samples ------------------------------------------------------------------------------ */

typedef struct Samples {
        uint64_t *v;
        size_t n, cap;
} Samples;

static void samples_add(Samples *s, uint64_t x) {
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 4096;
                uint64_t *v = realloc(s->v, cap * sizeof *v);

                if (!v)
                        die("out of memory");
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = x;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void samples_sort(Samples *s) {
        qsort(s->v, s->n, sizeof *s->v, cmp_u64);
}

/* Nearest rank on sorted samples, in µs with one decimal. */
static double samples_pct_us(const Samples *s, double q) {
        size_t i;

        if (s->n == 0)
                return -1;
        i = (size_t) (q * (double) s->n + 0.999999);
        i = i == 0 ? 0 : i - 1;
        if (i >= s->n)
                i = s->n - 1;
        return (double) s->v[i] / 1000.0;
}

static double samples_mean_us(const Samples *s) {
        long double sum = 0;

        if (s->n == 0)
                return -1;
        for (size_t i = 0; i < s->n; i++)
                sum += s->v[i];
        return (double) (sum / s->n / 1000.0);
}

/* ---- options ----------------------------------------------------------------------------- */

typedef struct Options {
        struct sockaddr_in target;
        bool have_target;
        const char *target_str;
        struct sockaddr_in listen;
        unsigned clients;
        double duration;
        double warmup;
        double rate;
        pid_t cpu_pid[MAX_PIDS];
        unsigned n_cpu_pids;
        pid_t ref_pid;
        pid_t rss_pid[MAX_PIDS];
        unsigned n_rss_pids;
        const char *headers[MAX_HEADERS];
        unsigned n_headers;
        const char *model;
        unsigned streams;
        unsigned chunks;
        unsigned delay_ms;
        double hold;
        double timeout;
        const char *path;
} Options;

static Options opt = {
        .clients = 1,
        .duration = 3,
        .warmup = 0.5,
        .streams = 100,
        .chunks = 50,
        .delay_ms = 20,
        .hold = 2,
        .timeout = 10,
        .path = "/v1/chat/completions",
        .model = MODEL,
};

/* The result key for the I-th process of a repeated option: "cpu_us_per_req" for the first,
 * "cpu2_us_per_req" for the second, … (PREFIX "cpu", SUFFIX "_us_per_req"). */
static const char *pid_key(const char *prefix, unsigned i, const char *suffix) {
        static char key[64];

        if (i == 0)
                snprintf(key, sizeof key, "%s%s", prefix, suffix);
        else
                snprintf(key, sizeof key, "%s%u%s", prefix, i + 1, suffix);
        return key;
}

/* ---- HTTP response parsing (client side) ---------------------------------------------------- */

enum {
        RS_HEAD,
        RS_BODY_CL,
        RS_BODY_EOF,
        RS_CHUNK_SIZE,
        RS_CHUNK_DATA,
        RS_CHUNK_CRLF,
        RS_TRAILER,
        RS_DONE,
};

typedef enum ConnState {
        C_IDLE,
        C_CONNECTING,
        C_ACTIVE,   /* request (being) sent, response (being) read */
        C_WAITING,  /* latency with --rate: connected, waiting for the next slot */
        C_FINISHED, /* one-shot streams: done, socket closed */
} ConnState;

typedef struct Conn {
        int fd;
        unsigned idx;
        ConnState state;
        bool want_out;

        const char *req;       /* the request bytes, shared */
        size_t req_len, req_off;
        uint64_t t_start;      /* request written (first byte) */
        uint64_t t_due;        /* when to start (staggered stream starts) */

        char *in;
        size_t in_off, in_len;

        int rs;
        unsigned status;
        bool chunked, conn_close;
        uint64_t remaining;
        uint64_t body_bytes;

        /* SSE */
        char ev[4096];
        size_t ev_len;
        unsigned n_events;
} Conn;

typedef struct Loop Loop;
typedef void (*BodyHandler)(Loop *l, Conn *c, const char *p, size_t n, uint64_t t);

static bool ci_prefix(const char *line, size_t len, const char *name) {
        size_t l = strlen(name);
        return len >= l && strncasecmp(line, name, l) == 0;
}

static bool ci_contains(const char *s, size_t len, const char *needle) {
        size_t l = strlen(needle);

        for (size_t i = 0; i + l <= len; i++)
                if (strncasecmp(s + i, needle, l) == 0)
                        return true;
        return false;
}

/* Parse the head in c->in; returns bytes consumed, 0 if incomplete, -1 if malformed. */
static ssize_t parse_head(Conn *c) {
        const char *b = c->in + c->in_off, *end, *p;
        size_t avail = c->in_len - c->in_off;
        long long cl = -1;

        end = memmem(b, avail, "\r\n\r\n", 4);
        if (!end)
                return avail >= IN_BUF_SIZE - 1 ? -1 : 0;
        if (avail < 12 || memcmp(b, "HTTP/1.", 7) != 0)
                return -1;
        c->status = (unsigned) atoi(b + 9);
        c->chunked = false;
        c->conn_close = b[7] == '0';
        p = memchr(b, '\n', (size_t) (end - b)) ;
        while (p && p < end) {
                const char *line = p + 1, *eol = memchr(line, '\r', (size_t) (end + 2 - line));
                size_t len;

                if (!eol)
                        break;
                len = (size_t) (eol - line);
                if (ci_prefix(line, len, "content-length:"))
                        cl = strtoll(line + 15, NULL, 10);
                else if (ci_prefix(line, len, "transfer-encoding:") && ci_contains(line, len, "chunked"))
                        c->chunked = true;
                else if (ci_prefix(line, len, "connection:")) {
                        if (ci_contains(line, len, "close"))
                                c->conn_close = true;
                        else if (ci_contains(line, len, "keep-alive"))
                                c->conn_close = false;
                }
                p = eol + 1;
        }
        if (c->status >= 100 && c->status < 200) {
                c->rs = RS_HEAD;
                return (ssize_t) (end + 4 - b);
        }
        if (c->chunked)
                c->rs = RS_CHUNK_SIZE;
        else if (cl >= 0) {
                c->remaining = (uint64_t) cl;
                c->rs = cl == 0 ? RS_DONE : RS_BODY_CL;
        } else if (c->status == 204 || c->status == 304)
                c->rs = RS_DONE;
        else
                c->rs = RS_BODY_EOF;
        return (ssize_t) (end + 4 - b);
}

/* Feed what is buffered; returns 1 when a response is complete, 0 for more, -1 on error. */
static int conn_parse(Loop *l, Conn *c, BodyHandler on_body, uint64_t t) {
        for (;;) {
                const char *b = c->in + c->in_off, *eol;
                size_t avail = c->in_len - c->in_off, n;
                ssize_t k;

                switch (c->rs) {
                case RS_HEAD:
                        k = parse_head(c);
                        if (k <= 0)
                                return (int) k;
                        c->in_off += (size_t) k;
                        break;
                case RS_BODY_CL:
                case RS_CHUNK_DATA:
                        if (avail == 0)
                                return 0;
                        n = avail < c->remaining ? avail : (size_t) c->remaining;
                        if (on_body)
                                on_body(l, c, b, n, t);
                        c->body_bytes += n;
                        c->in_off += n;
                        c->remaining -= n;
                        if (c->remaining == 0)
                                c->rs = c->rs == RS_BODY_CL ? RS_DONE : RS_CHUNK_CRLF;
                        break;
                case RS_BODY_EOF:
                        if (avail == 0)
                                return 0;
                        if (on_body)
                                on_body(l, c, b, avail, t);
                        c->body_bytes += avail;
                        c->in_off += avail;
                        break;
                case RS_CHUNK_SIZE:
                        eol = memmem(b, avail, "\r\n", 2);
                        if (!eol)
                                return avail > 64 ? -1 : 0;
                        {
                                char *e;
                                unsigned long long sz = strtoull(b, &e, 16);

                                if (e == b)
                                        return -1;
                                c->remaining = sz;
                                c->rs = sz == 0 ? RS_TRAILER : RS_CHUNK_DATA;
                        }
                        c->in_off += (size_t) (eol + 2 - b);
                        break;
                case RS_CHUNK_CRLF:
                        if (avail < 2)
                                return 0;
                        if (b[0] != '\r' || b[1] != '\n')
                                return -1;
                        c->in_off += 2;
                        c->rs = RS_CHUNK_SIZE;
                        break;
                case RS_TRAILER:
                        eol = memmem(b, avail, "\r\n", 2);
                        if (!eol)
                                return avail > 4096 ? -1 : 0;
                        c->in_off += (size_t) (eol + 2 - b);
                        if (eol == b)
                                c->rs = RS_DONE;
                        break;
                case RS_DONE:
                        return 1;
                }
                if (c->in_off == c->in_len)
                        c->in_off = c->in_len = 0;
        }
}

/* ---- the client loop ------------------------------------------------------------------------ */

typedef enum Mode {
        MODE_LATENCY,
        MODE_SSE,
        MODE_STREAMS,
} Mode;

struct Loop {
        Mode mode;
        int ep;
        Conn *conns;
        unsigned n;
        char *req;
        size_t req_len;

        uint64_t t_begin, t_warm, t_end;
        uint64_t t_next, interval; /* latency with --rate: the next request's slot, the gap */
        bool measuring, measured;
        int64_t cpu0[MAX_PIDS], ref0, self0;
        int64_t cpu1[MAX_PIDS], ref1, self1;

        Samples lat;          /* latency: request latency; sse: per-chunk delay (events ≥ 1) */
        Samples first;        /* sse: delay of event 0 */
        uint64_t completed;   /* within the window */
        uint64_t completed_total;
        uint64_t errors;
        uint64_t reconnects;
        uint64_t bad_status;
        unsigned connecting;  /* streams mode: connects in progress */
        unsigned finished;
        unsigned established; /* streams mode: streams that got body bytes */
};

static void conn_close(Loop *l, Conn *c) {
        if (c->fd >= 0) {
                epoll_ctl(l->ep, EPOLL_CTL_DEL, c->fd, NULL);
                close(c->fd);
        }
        c->fd = -1;
        c->in_off = c->in_len = 0;
        c->want_out = false;
}

static void conn_watch(Loop *l, Conn *c, bool out) {
        struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c };

        if (out == c->want_out)
                return;
        c->want_out = out;
        (void) epoll_ctl(l->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_reset_response(Conn *c) {
        c->rs = RS_HEAD;
        c->status = 0;
        c->remaining = 0;
        c->body_bytes = 0;
        c->ev_len = 0;
        c->n_events = 0;
}

static int conn_flush(Loop *l, Conn *c) {
        while (c->req_off < c->req_len) {
                ssize_t k = send(c->fd, c->req + c->req_off, c->req_len - c->req_off, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EAGAIN)
                                break;
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                c->req_off += (size_t) k;
        }
        conn_watch(l, c, c->req_off < c->req_len);
        return 0;
}

static int conn_send_request(Loop *l, Conn *c) {
        conn_reset_response(c);
        c->req_off = 0;
        c->t_start = now_ns();
        c->state = C_ACTIVE;
        return conn_flush(l, c);
}

static int conn_open(Loop *l, Conn *c) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = c };
        int fd;

        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        set_nodelay(fd);
        c->fd = fd;
        c->want_out = true;
        c->in_off = c->in_len = 0;
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
                close(fd);
                c->fd = -1;
                return -errno;
        }
        if (connect(fd, (struct sockaddr *) &opt.target, sizeof opt.target) < 0 && errno != EINPROGRESS) {
                int r = -errno;
                conn_close(l, c);
                return r;
        }
        c->state = C_CONNECTING;
        if (l->mode == MODE_STREAMS)
                l->connecting++;
        return 0;
}

/* SSE: split the body into events, take the send timestamp out of each. */
static void sse_body(Loop *l, Conn *c, const char *p, size_t n, uint64_t t) {
        while (n > 0) {
                size_t take = n, room = sizeof c->ev - 1 - c->ev_len;
                const char *sep;

                if (take > room)
                        take = room;
                memcpy(c->ev + c->ev_len, p, take);
                c->ev_len += take;
                c->ev[c->ev_len] = 0;
                p += take;
                n -= take;

                while ((sep = strstr(c->ev, "\n\n"))) {
                        const char *m = memmem(c->ev, (size_t) (sep - c->ev), TS_MARKER, strlen(TS_MARKER));
                        size_t used = (size_t) (sep + 2 - c->ev);

                        if (m) {
                                uint64_t ts = strtoull(m + strlen(TS_MARKER), NULL, 10);

                                if (ts > 0 && t >= ts) {
                                        if (c->n_events == 0)
                                                samples_add(&l->first, t - ts);
                                        else
                                                samples_add(&l->lat, t - ts);
                                }
                                c->n_events++;
                        }
                        memmove(c->ev, c->ev + used, c->ev_len - used + 1);
                        c->ev_len -= used;
                }
                if (c->ev_len == sizeof c->ev - 1)
                        c->ev_len = 0; /* an event larger than we care about: drop it */
        }
}

static void streams_body(Loop *l, Conn *c, const char *p, size_t n, uint64_t t) {
        if (c->body_bytes == 0 && n > 0)
                l->established++;
}

static void conn_failed(Loop *l, Conn *c, bool in_flight) {
        if (l->mode == MODE_STREAMS) {
                if (c->state == C_CONNECTING)
                        l->connecting--;
                else if (c->body_bytes > 0)
                        l->established--;
        }
        l->errors++;
        conn_close(l, c);
        if (l->mode == MODE_LATENCY) {
                c->state = C_IDLE;   /* reopened by the main loop */
                l->reconnects++;
        } else {
                c->state = C_FINISHED;
                l->finished++;
        }
}

static void on_response_done(Loop *l, Conn *c, uint64_t t) {
        if (c->status != 200)
                l->bad_status++;
        l->completed_total++;
        if (l->mode == MODE_LATENCY) {
                if (l->measuring && c->t_start >= l->t_warm && c->status == 200) {
                        l->completed++;
                        samples_add(&l->lat, t - c->t_start);
                }
                if (c->conn_close || c->rs != RS_DONE) {
                        conn_close(l, c);
                        c->state = C_IDLE;
                        l->reconnects++;
                        return;
                }
                if (t < l->t_end && opt.rate > 0)
                        c->state = C_WAITING;   /* the main loop sends at the next slot */
                else if (t < l->t_end) {
                        if (conn_send_request(l, c) < 0)
                                conn_failed(l, c, false);
                } else {
                        conn_close(l, c);
                        c->state = C_FINISHED;
                        l->finished++;
                }
                return;
        }
        /* sse / streams: one request per connection */
        if (l->mode == MODE_STREAMS && c->body_bytes > 0)
                l->established--;
        conn_close(l, c);
        c->state = C_FINISHED;
        l->finished++;
}

static void conn_on_event(Loop *l, Conn *c, uint32_t events) {
        BodyHandler h = l->mode == MODE_SSE ? sse_body : l->mode == MODE_STREAMS ? streams_body : NULL;

        if (c->state == C_CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;

                if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                        return;
                (void) getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
                        conn_failed(l, c, false);
                        return;
                }
                if (l->mode == MODE_STREAMS)
                        l->connecting--;
                if (conn_send_request(l, c) < 0)
                        conn_failed(l, c, false);
                return;
        }
        if (c->state == C_WAITING && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                /* The server closed an idle keep-alive connection: reopen it. */
                conn_close(l, c);
                c->state = C_IDLE;
                l->reconnects++;
                return;
        }
        if (c->state != C_ACTIVE)
                return;

        if ((events & EPOLLOUT) && c->req_off < c->req_len && conn_flush(l, c) < 0) {
                conn_failed(l, c, true);
                return;
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (int rounds = 0; rounds < 16; rounds++) {
                        ssize_t k;
                        uint64_t t;
                        int r;

                        if (c->in_off > 0 && c->in_len == IN_BUF_SIZE) {
                                memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
                                c->in_len -= c->in_off;
                                c->in_off = 0;
                        }
                        k = recv(c->fd, c->in + c->in_len, IN_BUF_SIZE - c->in_len, 0);
                        t = now_ns();
                        if (k < 0 && (errno == EAGAIN || errno == EINTR))
                                return;
                        if (k <= 0) {
                                if (k == 0 && c->rs == RS_BODY_EOF) {
                                        c->conn_close = true;
                                        on_response_done(l, c, t);
                                } else
                                        conn_failed(l, c, true);
                                return;
                        }
                        c->in_len += (size_t) k;
                        r = conn_parse(l, c, h, t);
                        if (r < 0) {
                                conn_failed(l, c, true);
                                return;
                        }
                        if (r > 0) {
                                on_response_done(l, c, t);
                                return;
                        }
                }
        }
}

static char *build_request(Mode mode, size_t *ret_len) {
        char body[768], extra[1024] = "", *req;
        size_t el = 0;
        int bl, n;

        if (mode == MODE_LATENCY)
                bl = snprintf(body, sizeof body,
                              "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello.\"}],"
                              "\"max_tokens\":8}", opt.model);
        else {
                bl = snprintf(body, sizeof body,
                              "{\"model\":\"%s\",\"stream\":true,"
                              "\"messages\":[{\"role\":\"user\",\"content\":\"Say hello.\"}]}", opt.model);
                el = (size_t) snprintf(extra, sizeof extra, "X-Test-Chunks: %u\r\nX-Test-Chunk-Delay-Ms: %u\r\n",
                                       opt.chunks, opt.delay_ms);
        }
        if (bl < 0 || (size_t) bl >= sizeof body)
                die("request body too long");
        for (unsigned i = 0; i < opt.n_headers; i++) {
                n = snprintf(extra + el, sizeof extra - el, "%s\r\n", opt.headers[i]);
                if (n < 0 || (size_t) n >= sizeof extra - el)
                        die("--header: too long");
                el += (size_t) n;
        }
        req = xmalloc(2048);
        n = snprintf(req, 2048,
                     "POST %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "User-Agent: club-bench\r\n"
                     "Accept: %s\r\n"
                     "Content-Type: application/json\r\n"
                     "%s"
                     "Content-Length: %d\r\n"
                     "\r\n%s",
                     opt.path, opt.target_str, mode == MODE_LATENCY ? "application/json" : "text/event-stream",
                     extra, bl, body);
        if (n < 0 || n >= 2048)
                die("request too long");
        *ret_len = (size_t) n;
        return req;
}

static void loop_init(Loop *l, Mode mode, unsigned n) {
        memset(l, 0, sizeof *l);
        l->mode = mode;
        l->n = n;
        l->ep = epoll_create1(EPOLL_CLOEXEC);
        if (l->ep < 0)
                die("epoll_create1: %m");
        l->req = build_request(mode, &l->req_len);
        l->conns = xmalloc(n * sizeof(Conn));
        for (unsigned i = 0; i < n; i++) {
                l->conns[i].fd = -1;
                l->conns[i].idx = i;
                l->conns[i].req = l->req;
                l->conns[i].req_len = l->req_len;
                l->conns[i].in = xmalloc(IN_BUF_SIZE);
        }
}

static void loop_done(Loop *l) {
        for (unsigned i = 0; i < l->n; i++) {
                conn_close(l, &l->conns[i]);
                free(l->conns[i].in);
        }
        free(l->conns);
        free(l->req);
        free(l->lat.v);
        free(l->first.v);
        close(l->ep);
}

static void loop_poll(Loop *l, int timeout_ms) {
        struct epoll_event evs[MAX_EVENTS];
        int n;

        n = epoll_wait(l->ep, evs, MAX_EVENTS, timeout_ms);
        for (int i = 0; i < n; i++)
                conn_on_event(l, evs[i].data.ptr, evs[i].events);
}

/* ---- mode: latency ---------------------------------------------------------------------------- */

static int run_latency(void) {
        Loop l;
        uint64_t t_stop;
        double window;
        int rc = 0;

        loop_init(&l, MODE_LATENCY, opt.clients);
        l.t_begin = now_ns();
        l.t_next = l.t_begin;
        l.interval = opt.rate > 0 ? (uint64_t) (NSEC_PER_SEC / opt.rate) : 0;
        l.t_warm = l.t_begin + (uint64_t) (opt.warmup * NSEC_PER_SEC);
        l.t_end = l.t_warm + (uint64_t) (opt.duration * NSEC_PER_SEC);
        t_stop = l.t_end + 2 * NSEC_PER_SEC;   /* grace for the last responses */

        for (;;) {
                uint64_t t = now_ns();

                if (!l.measuring && !l.measured && t >= l.t_warm) {
                        l.measuring = true;
                        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                                l.cpu0[i] = proc_cpu_usec(opt.cpu_pid[i]);
                        l.ref0 = proc_cpu_usec(opt.ref_pid);
                        l.self0 = self_cpu_usec();
                        l.t_warm = t;
                }
                if (l.measuring && t >= l.t_end) {
                        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                                l.cpu1[i] = proc_cpu_usec(opt.cpu_pid[i]);
                        l.ref1 = proc_cpu_usec(opt.ref_pid);
                        l.self1 = self_cpu_usec();
                        l.t_end = t;
                        l.measuring = false;
                        l.measured = true;
                }
                if (l.finished == l.n || t >= t_stop)
                        break;
                /* Target gone: nothing ever completes. */
                if (l.errors > 1000 && l.completed_total == 0)
                        break;
                for (unsigned i = 0; i < l.n && t < l.t_end; i++) {
                        Conn *c = &l.conns[i];

                        if (c->state == C_IDLE && conn_open(&l, c) < 0) {
                                l.errors++;
                                c->state = C_IDLE;
                        }
                }
                /* --rate: requests on an absolute schedule, on whichever connection is free. A
                 * slot missed because every connection was busy is not made up later. */
                for (unsigned i = 0; l.interval > 0 && i < l.n && t < l.t_end && t >= l.t_next; i++) {
                        Conn *c = &l.conns[i];

                        if (c->state != C_WAITING)
                                continue;
                        if (conn_send_request(&l, c) < 0)
                                conn_failed(&l, c, false);
                        l.t_next += l.interval;
                        if (l.t_next < t)
                                l.t_next = t;
                }
                /* Time out requests stuck longer than --timeout. */
                for (unsigned i = 0; i < l.n; i++) {
                        Conn *c = &l.conns[i];

                        /* (t_start may be later than t: a request just sent at its slot) */
                        if (c->state == C_ACTIVE && t > c->t_start && t - c->t_start > (uint64_t) (opt.timeout * NSEC_PER_SEC))
                                conn_failed(&l, c, true);
                        else if (t >= l.t_end && (c->state == C_IDLE || c->state == C_WAITING)) {
                                conn_close(&l, c);
                                c->state = C_FINISHED;
                                l.finished++;
                        }
                }
                if (l.interval > 0 && t < l.t_end) {
                        uint64_t d = l.t_next > t ? l.t_next - t : 0;

                        loop_poll(&l, d == 0 ? 0 : d >= 5 * NSEC_PER_MSEC ? 5 : (int) ((d + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC));
                } else
                        loop_poll(&l, l.measuring ? 5 : 20);
        }
        if (!l.measured) {
                for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                        l.cpu1[i] = proc_cpu_usec(opt.cpu_pid[i]);
                l.ref1 = proc_cpu_usec(opt.ref_pid);
                l.self1 = self_cpu_usec();
                l.t_end = now_ns();
        }

        /* Stopped before the warm-up was over (target down): no window at all. */
        window = l.t_end > l.t_warm ? (double) (l.t_end - l.t_warm) / NSEC_PER_SEC : 0;
        samples_sort(&l.lat);
        printf("RESULT mode=latency clients=%u duration_s=%.3f requests=%" PRIu64 " errors=%" PRIu64
               " bad_status=%" PRIu64 " reconnects=%" PRIu64 " rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f mean_us=%.1f",
               opt.clients, window, l.completed, l.errors, l.bad_status, l.reconnects,
               window > 0 ? (double) l.completed / window : 0, samples_pct_us(&l.lat, 0.50),
               samples_pct_us(&l.lat, 0.90), samples_pct_us(&l.lat, 0.99), samples_mean_us(&l.lat));
        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                if (l.cpu0[i] >= 0 && l.cpu1[i] >= 0 && l.completed > 0) {
                        printf(" %s=%.2f", pid_key("cpu", i, "_us_per_req"),
                               (double) (l.cpu1[i] - l.cpu0[i]) / (double) l.completed);
                        printf(" %s=%.3f", pid_key("cpu", i, "_util"), (double) (l.cpu1[i] - l.cpu0[i]) / (window * 1e6));
                }
        if (opt.ref_pid > 0 && l.ref0 >= 0 && l.ref1 >= 0 && l.completed > 0)
                printf(" ref_cpu_us_per_req=%.2f", (double) (l.ref1 - l.ref0) / (double) l.completed);
        if (l.completed > 0)
                printf(" gen_cpu_us_per_req=%.2f", (double) (l.self1 - l.self0) / (double) l.completed);
        printf("\n");
        fflush(stdout);
        if (l.completed == 0 || l.errors > l.completed / 100 || l.bad_status > 0)
                rc = 1;
        loop_done(&l);
        return rc;
}

/* ---- mode: sse --------------------------------------------------------------------------------- */

static int run_sse(void) {
        Loop l;
        uint64_t stagger, deadline;
        unsigned started = 0;
        int rc = 0;

        loop_init(&l, MODE_SSE, opt.streams);
        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                l.cpu0[i] = proc_cpu_usec(opt.cpu_pid[i]);
        l.t_begin = now_ns();
        /* Spread the stream starts over one chunk period, so chunks do not all fall due at once. */
        stagger = (uint64_t) opt.delay_ms * NSEC_PER_MSEC / (opt.streams ?: 1);
        for (unsigned i = 0; i < l.n; i++)
                l.conns[i].t_due = l.t_begin + i * stagger;
        deadline = l.t_begin + (uint64_t) opt.chunks * opt.delay_ms * NSEC_PER_MSEC +
                   (uint64_t) opt.delay_ms * NSEC_PER_MSEC + (uint64_t) (opt.timeout * NSEC_PER_SEC);

        while (l.finished < l.n) {
                uint64_t t = now_ns(), next = UINT64_MAX;
                int timeout;

                if (t >= deadline)
                        break;
                for (; started < l.n && l.conns[started].t_due <= t; started++)
                        if (conn_open(&l, &l.conns[started]) < 0) {
                                l.errors++;
                                l.conns[started].state = C_FINISHED;
                                l.finished++;
                        }
                if (started < l.n)
                        next = l.conns[started].t_due;
                timeout = next == UINT64_MAX ? 50 : (int) ((next - t + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
                loop_poll(&l, timeout > 50 ? 50 : timeout);
        }
        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                l.cpu1[i] = proc_cpu_usec(opt.cpu_pid[i]);
        samples_sort(&l.lat);
        samples_sort(&l.first);
        printf("RESULT mode=sse streams=%u chunks=%u delay_ms=%u samples=%zu errors=%" PRIu64 " bad_status=%" PRIu64
               " unfinished=%u chunk_p50_us=%.1f chunk_p90_us=%.1f chunk_p99_us=%.1f chunk_p999_us=%.1f"
               " chunk_mean_us=%.1f first_p50_us=%.1f",
               opt.streams, opt.chunks, opt.delay_ms, l.lat.n, l.errors, l.bad_status, l.n - l.finished,
               samples_pct_us(&l.lat, 0.50), samples_pct_us(&l.lat, 0.90), samples_pct_us(&l.lat, 0.99),
               samples_pct_us(&l.lat, 0.999), samples_mean_us(&l.lat), samples_pct_us(&l.first, 0.50));
        /* CPU of the processes in the middle, per chunk delivered; stream setup is amortised in it. */
        for (unsigned i = 0; i < opt.n_cpu_pids; i++)
                if (l.cpu0[i] >= 0 && l.cpu1[i] >= 0 && l.lat.n + l.first.n > 0)
                        printf(" %s=%.2f", pid_key("cpu", i, "_us_per_chunk"),
                               (double) (l.cpu1[i] - l.cpu0[i]) / (double) (l.lat.n + l.first.n));
        printf("\n");
        fflush(stdout);
        if (l.lat.n == 0 || l.errors > 0 || l.bad_status > 0 || l.finished < l.n)
                rc = 1;
        loop_done(&l);
        return rc;
}

/* ---- mode: streams ----------------------------------------------------------------------------- */

static int cmp_long(const void *a, const void *b) {
        long x = *(const long *) a, y = *(const long *) b;
        return x < y ? -1 : x > y;
}

static int run_streams(void) {
        Loop l;
        uint64_t deadline, t_open = 0, t_hold_end = 0, next_sample = 0;
        long rss_idle[MAX_PIDS], samples[MAX_PIDS][64];
        unsigned opened = 0, n_samples[MAX_PIDS] = {};
        int rc = 0;

        /* Settle, then the idle footprint. */
        usleep(200 * 1000);
        for (unsigned i = 0; i < opt.n_rss_pids; i++)
                rss_idle[i] = proc_rss_kib(opt.rss_pid[i]);

        loop_init(&l, MODE_STREAMS, opt.streams);
        l.t_begin = now_ns();
        deadline = l.t_begin + (uint64_t) (opt.timeout * NSEC_PER_SEC);

        for (;;) {
                uint64_t t = now_ns();

                /* Open gradually: a few connects at a time keeps listen backlogs from overflowing. */
                while (opened < l.n && l.connecting < 64) {
                        if (conn_open(&l, &l.conns[opened]) < 0) {
                                l.errors++;
                                l.conns[opened].state = C_FINISHED;
                                l.finished++;
                        }
                        opened++;
                }
                if (!t_open && opened == l.n && l.established + l.finished >= l.n) {
                        t_open = t;
                        /* At least one more delayed chunk goes through every stream before we look. */
                        next_sample = t + (uint64_t) opt.delay_ms * NSEC_PER_MSEC + 200 * NSEC_PER_MSEC;
                        t_hold_end = next_sample + (uint64_t) (opt.hold * NSEC_PER_SEC);
                }
                if (t_open && t >= next_sample) {
                        for (unsigned i = 0; i < opt.n_rss_pids; i++) {
                                long v = proc_rss_kib(opt.rss_pid[i]);

                                if (v >= 0 && n_samples[i] < 64)
                                        samples[i][n_samples[i]++] = v;
                        }
                        next_sample = t + 200 * NSEC_PER_MSEC;
                }
                if ((t_open && t >= t_hold_end) || t >= deadline)
                        break;
                loop_poll(&l, 10);
        }

        unsigned open_now = l.established;
        printf("RESULT mode=streams streams=%u open=%u errors=%" PRIu64 " bad_status=%" PRIu64 " open_s=%.2f",
               opt.streams, open_now, l.errors, l.bad_status,
               t_open ? (double) (t_open - l.t_begin) / NSEC_PER_SEC : -1.0);
        for (unsigned i = 0; i < opt.n_rss_pids; i++)
                if (n_samples[i] > 0 && rss_idle[i] >= 0 && open_now > 0) {
                        long med;

                        qsort(samples[i], n_samples[i], sizeof samples[i][0], cmp_long);
                        med = samples[i][n_samples[i] / 2];
                        printf(" %s=%ld", pid_key("rss", i, "_idle_kib"), rss_idle[i]);
                        printf(" %s=%ld", pid_key("rss", i, "_open_kib"), med);
                        printf(" %s=%.2f", pid_key("kib", i, "_per_stream"), (double) (med - rss_idle[i]) / open_now);
                } else
                        rc = 1;
        printf("\n");
        fflush(stdout);
        if (open_now < opt.streams)
                rc = 1;
        loop_done(&l);
        return rc;
}

/* ---- mode: wait ---------------------------------------------------------------------------------- */

static int run_wait(void) {
        uint64_t deadline = now_ns() + (uint64_t) (opt.timeout * NSEC_PER_SEC);

        while (now_ns() < deadline) {
                struct timeval tv = { .tv_sec = 1 };
                char req[1536], buf[512];
                int fd, n;

                fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        die("socket: %m");
                (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
                (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                if (connect(fd, (struct sockaddr *) &opt.target, sizeof opt.target) == 0) {
                        size_t len = (size_t) snprintf(req, sizeof req, "GET /v1/models HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n",
                                                       opt.target_str);

                        for (unsigned i = 0; i < opt.n_headers && len < sizeof req; i++)
                                len += (size_t) snprintf(req + len, sizeof req - len, "%s\r\n", opt.headers[i]);
                        if (len + 2 >= sizeof req)
                                die("wait: request too long");
                        memcpy(req + len, "\r\n", 3);
                        len += 2;
                        if (send(fd, req, len, MSG_NOSIGNAL) == (ssize_t) len) {
                                n = (int) recv(fd, buf, sizeof buf - 1, MSG_WAITALL);
                                if (n >= 12 && memcmp(buf, "HTTP/1.1 200", 12) == 0) {
                                        close(fd);
                                        return 0;
                                }
                        }
                }
                close(fd);
                usleep(50 * 1000);
        }
        fprintf(stderr, "club-bench: %s did not answer GET /v1/models with 200 in %.0f s\n", opt.target_str, opt.timeout);
        return 1;
}

static int run_port(void) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *) &a, &len) < 0)
                die("cannot find a free port: %m");
        printf("%u\n", ntohs(a.sin_port));
        close(fd);
        return 0;
}

/* ---- mode: origin ------------------------------------------------------------------------------------
 * A minimal OpenAI-shaped SSE server. Each content chunk carries "club_bench_ts": the
 * CLOCK_MONOTONIC nanoseconds taken right before its send(). The client reads the same clock
 * (same host), so arrival minus ts is the chunk's one-way delay through whatever sits between. */

typedef struct SConn {
        int fd;
        char in[8192];
        size_t in_len;
        char *out;
        size_t out_len, out_off, out_cap;
        bool watching_out;
        bool close_after;
        /* the stream in progress */
        bool streaming;
        unsigned next_chunk, n_chunks;
        uint64_t t0, delay_ns, due;
        unsigned seq;
        size_t slot;           /* index in the streaming set */
} SConn;

typedef struct Origin {
        int ep, lfd, tfd;
        SConn **streaming;
        size_t n_streaming, cap_streaming;
        uint64_t armed;
        unsigned seq;
} Origin;

static void sconn_free(Origin *o, SConn *c);

static void sconn_watch_out(Origin *o, SConn *c, bool on) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0), .data.ptr = c };

        if (c->watching_out == on)
                return;
        c->watching_out = on;
        (void) epoll_ctl(o->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send now if we can; queue what the kernel does not take. Returns -1 if the peer is gone. */
static int sconn_write(Origin *o, SConn *c, const char *p, size_t n) {
        if (c->out_len == c->out_off) {
                ssize_t k;

                c->out_len = c->out_off = 0;
                do
                        k = send(c->fd, p, n, MSG_NOSIGNAL);
                while (k < 0 && errno == EINTR);
                if (k < 0 && errno != EAGAIN)
                        return -1;
                if (k > 0) {
                        p += k;
                        n -= (size_t) k;
                }
                if (n == 0)
                        return 0;
        }
        if (c->out_len + n > c->out_cap) {
                size_t cap = (c->out_len + n) * 2;
                char *b = realloc(c->out, cap);

                if (!b)
                        die("out of memory");
                c->out = b;
                c->out_cap = cap;
        }
        memcpy(c->out + c->out_len, p, n);
        c->out_len += n;
        sconn_watch_out(o, c, true);
        return 0;
}

static void origin_arm(Origin *o) {
        uint64_t due = UINT64_MAX;
        struct itimerspec its = {};

        for (size_t i = 0; i < o->n_streaming; i++)
                if (o->streaming[i]->due < due)
                        due = o->streaming[i]->due;
        if (due == o->armed)
                return;
        o->armed = due;
        if (due != UINT64_MAX) {
                its.it_value.tv_sec = (time_t) (due / NSEC_PER_SEC);
                its.it_value.tv_nsec = (long) (due % NSEC_PER_SEC);
                if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                        its.it_value.tv_nsec = 1;
        }
        (void) timerfd_settime(o->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void stream_remove(Origin *o, SConn *c) {
        if (!c->streaming)
                return;
        c->streaming = false;
        o->streaming[c->slot] = o->streaming[--o->n_streaming];
        o->streaming[c->slot]->slot = c->slot;
}

static int respond_simple(Origin *o, SConn *c, unsigned status, const char *reason, const char *body) {
        char head[512];
        int n = snprintf(head, sizeof head,
                         "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n",
                         status, reason, strlen(body), c->close_after ? "Connection: close\r\n" : "");

        if (sconn_write(o, c, head, (size_t) n) < 0 || sconn_write(o, c, body, strlen(body)) < 0)
                return -1;
        return 0;
}

/* One content chunk (chunked encoding around one SSE event), stamped right before send(). */
static int stream_send_chunk(Origin *o, SConn *c) {
        char ev[512], out[600];
        int el, n;
        bool last = c->next_chunk + 1 == c->n_chunks;

        el = snprintf(ev, sizeof ev,
                      "data: {\"id\":\"chatcmpl-bench-%u\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                      "\"model\":\"" MODEL "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%u \"},"
                      "\"finish_reason\":%s}]," TS_MARKER "%" PRIu64 "}\n\n",
                      c->seq, c->next_chunk, last ? "\"stop\"" : "null", now_ns());
        n = snprintf(out, sizeof out, "%x\r\n%.*s\r\n", el, el, ev);
        if (sconn_write(o, c, out, (size_t) n) < 0)
                return -1;
        c->next_chunk++;
        if (c->next_chunk == c->n_chunks) {
                static const char done[] = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";

                stream_remove(o, c);
                if (sconn_write(o, c, done, sizeof done - 1) < 0)
                        return -1;
                return 1;
        }
        /* An absolute schedule: no drift from our own processing time. */
        c->due = c->t0 + (uint64_t) c->next_chunk * c->delay_ns;
        return 0;
}

static int sconn_process(Origin *o, SConn *c);

static int stream_start(Origin *o, SConn *c, unsigned chunks, unsigned delay_ms) {
        static const char head[] =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                "Transfer-Encoding: chunked\r\n\r\n";
        int r;

        if (sconn_write(o, c, head, sizeof head - 1) < 0)
                return -1;
        c->seq = ++o->seq;
        c->n_chunks = chunks ?: 1;
        c->next_chunk = 0;
        c->delay_ns = (uint64_t) delay_ms * NSEC_PER_MSEC;
        c->t0 = now_ns();
        if (o->n_streaming == o->cap_streaming) {
                size_t cap = o->cap_streaming ? o->cap_streaming * 2 : 256;
                SConn **s = realloc(o->streaming, cap * sizeof *s);

                if (!s)
                        die("out of memory");
                o->streaming = s;
                o->cap_streaming = cap;
        }
        c->streaming = true;
        c->slot = o->n_streaming;
        o->streaming[o->n_streaming++] = c;
        /* The first chunk goes right after the head, in its own send(). */
        r = stream_send_chunk(o, c);
        return r < 0 ? -1 : 0;
}

static unsigned header_uint(const char *head, size_t len, const char *name, unsigned def) {
        size_t nl = strlen(name);

        for (const char *p = head; p && p < head + len; p = memchr(p, '\n', (size_t) (head + len - p))) {
                if (*p == '\n')
                        p++;
                if ((size_t) (head + len - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':')
                        return (unsigned) strtoul(p + nl + 1, NULL, 10);
        }
        return def;
}

/* Handle complete requests in the input buffer; stop while a stream is running. */
static int sconn_process(Origin *o, SConn *c) {
        while (!c->streaming && !c->close_after) {
                char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4), *sp1, *sp2;
                size_t head_len, total;
                unsigned long cl;
                int r;

                if (!end)
                        return c->in_len >= sizeof c->in ? -1 : 0;
                head_len = (size_t) (end + 4 - c->in);
                cl = header_uint(c->in, head_len, "Content-Length", 0);
                total = head_len + cl;
                if (total > sizeof c->in)
                        return -1;
                if (c->in_len < total)
                        return 0;

                sp1 = memchr(c->in, ' ', head_len);
                sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t) (sp1 + 1 - c->in)) : NULL;
                if (!sp1 || !sp2)
                        return -1;
                *sp2 = 0;
                {
                        const char *method = c->in, *target = sp1 + 1;
                        bool is_post = strncmp(method, "POST ", 5) == 0;
                        bool is_get = strncmp(method, "GET ", 4) == 0;
                        const char *body = c->in + head_len;
                        bool stream = cl > 0 && (memmem(body, cl, "\"stream\":true", 13) || memmem(body, cl, "\"stream\": true", 14));

                        if (memmem(c->in, head_len, "\r\nConnection: close", 19) ||
                            memmem(c->in, head_len, "\r\nconnection: close", 19))
                                c->close_after = true;

                        if (is_get && (strcmp(target, "/v1/models") == 0 || strcmp(target, "/models") == 0))
                                r = respond_simple(o, c, 200, "OK",
                                                   "{\"object\":\"list\",\"data\":[{\"id\":\"" MODEL "\",\"object\":\"model\","
                                                   "\"created\":0,\"owned_by\":\"club-bench\"}]}");
                        else if (is_get && strcmp(target, "/health") == 0)
                                r = respond_simple(o, c, 200, "OK", "{\"status\":\"ok\"}");
                        else if (is_post && strstr(target, "/chat/completions") && stream)
                                r = stream_start(o, c, header_uint(c->in, head_len, "X-Test-Chunks", 50),
                                                 header_uint(c->in, head_len, "X-Test-Chunk-Delay-Ms", 20));
                        else if (is_post && strstr(target, "/chat/completions"))
                                r = respond_simple(o, c, 200, "OK",
                                                   "{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,"
                                                   "\"model\":\"" MODEL "\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                                                   "\"content\":\"tok0 tok1 tok2 tok3 tok4 \"},\"finish_reason\":\"stop\"}],"
                                                   "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":5,\"total_tokens\":6}}");
                        else
                                r = respond_simple(o, c, 404, "Not Found",
                                                   "{\"error\":{\"message\":\"unknown URL\",\"type\":\"invalid_request_error\","
                                                   "\"param\":null,\"code\":\"unknown_url\"}}");
                }
                memmove(c->in, c->in + total, c->in_len - total);
                c->in_len -= total;
                if (r < 0)
                        return -1;
        }
        return 0;
}

static void sconn_free(Origin *o, SConn *c) {
        stream_remove(o, c);
        epoll_ctl(o->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        free(c->out);
        free(c);
}

static volatile sig_atomic_t origin_stop;
static void on_signal(int sig) {
        origin_stop = 1;
}

static int run_origin(void) {
        struct sockaddr_in a = opt.listen;
        socklen_t len = sizeof a;
        struct epoll_event ev;
        Origin o = { .armed = UINT64_MAX };
        int one = 1;

        signal(SIGPIPE, SIG_IGN);
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);

        o.ep = epoll_create1(EPOLL_CLOEXEC);
        o.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        o.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (o.ep < 0 || o.lfd < 0 || o.tfd < 0)
                die("setup: %m");
        (void) setsockopt(o.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(o.lfd, (struct sockaddr *) &a, sizeof a) < 0 || listen(o.lfd, 4096) < 0 ||
            getsockname(o.lfd, (struct sockaddr *) &a, &len) < 0)
                die("cannot listen: %m");
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &o.lfd };
        epoll_ctl(o.ep, EPOLL_CTL_ADD, o.lfd, &ev);
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &o.tfd };
        epoll_ctl(o.ep, EPOLL_CTL_ADD, o.tfd, &ev);
        printf("PORT=%u\n", ntohs(a.sin_port));
        fflush(stdout);

        while (!origin_stop) {
                struct epoll_event evs[MAX_EVENTS];
                int n = epoll_wait(o.ep, evs, MAX_EVENTS, 1000);

                for (int i = 0; i < n; i++) {
                        void *p = evs[i].data.ptr;

                        if (p == &o.lfd) {
                                for (int k = 0; k < 64; k++) {
                                        int fd = accept4(o.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                                        SConn *c;

                                        if (fd < 0)
                                                break;
                                        set_nodelay(fd);
                                        c = xmalloc(sizeof *c);
                                        c->fd = fd;
                                        ev = (struct epoll_event) { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
                                        epoll_ctl(o.ep, EPOLL_CTL_ADD, fd, &ev);
                                }
                        } else if (p == &o.tfd) {
                                uint64_t exp, t = now_ns();

                                (void) !read(o.tfd, &exp, sizeof exp);
                                o.armed = UINT64_MAX;
                                for (size_t j = 0; j < o.n_streaming;) {
                                        SConn *c = o.streaming[j];
                                        int r = 0;

                                        if (c->due <= t && c->out_len == c->out_off)
                                                r = stream_send_chunk(&o, c);
                                        else if (c->due <= t)
                                                c->due = t + NSEC_PER_MSEC; /* blocked: try again shortly */
                                        if (r < 0)
                                                sconn_free(&o, c);
                                        else if (r > 0 && sconn_process(&o, c) < 0)
                                                sconn_free(&o, c);
                                        /* The set may have shrunk; only advance if c is still at j. */
                                        if (j < o.n_streaming && o.streaming[j] == c)
                                                j++;
                                }
                        } else {
                                SConn *c = p;
                                uint32_t e = evs[i].events;
                                bool dead = false;

                                if (e & EPOLLOUT) {
                                        while (c->out_off < c->out_len) {
                                                ssize_t k = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

                                                if (k < 0) {
                                                        dead = errno != EAGAIN && errno != EINTR;
                                                        break;
                                                }
                                                c->out_off += (size_t) k;
                                        }
                                        if (c->out_off == c->out_len) {
                                                c->out_off = c->out_len = 0;
                                                sconn_watch_out(&o, c, false);
                                                if (c->close_after && !c->streaming)
                                                        dead = true;
                                        }
                                }
                                if (!dead && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
                                        ssize_t k = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);

                                        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                                                dead = true;
                                        else if (k > 0) {
                                                c->in_len += (size_t) k;
                                                if (sconn_process(&o, c) < 0)
                                                        dead = true;
                                        } else if (c->in_len == sizeof c->in && !c->streaming)
                                                dead = true;
                                }
                                if (!dead && c->close_after && !c->streaming && c->out_off == c->out_len)
                                        dead = true;
                                if (dead)
                                        sconn_free(&o, c);
                        }
                }
                origin_arm(&o);
        }
        return 0;
}

/* ---- main ------------------------------------------------------------------------------------------ */

static void usage(void) {
        fputs("usage: club-bench latency|sse|streams|origin|wait|port [options]\n"
              "  --target H:P        what to load (direct upstream, or a proxy in front of it)\n"
              "  --clients N         latency: closed-loop clients (default 1)\n"
              "  --duration S        latency: measured seconds (default 3)\n"
              "  --warmup S          latency: seconds before measuring (default 0.5)\n"
              "  --rate R            latency: R requests a second in all, on a fixed schedule,\n"
              "                      instead of back to back (closed loop, the default)\n"
              "  --cpu-pid PID       latency/sse: report this process's CPU µs per request/chunk\n"
              "                      (repeatable: cpu2_…, cpu3_… for the second, third…)\n"
              "  --ref-pid PID       latency: the same for a reference process (the upstream)\n"
              "  --streams N         sse/streams: concurrent streams (default 100)\n"
              "  --chunks N          sse/streams: chunks per stream (default 50)\n"
              "  --delay-ms N        sse/streams: gap between chunks (default 20)\n"
              "  --hold S            streams: seconds to hold the streams open (default 2)\n"
              "  --rss-pid PID       streams: report this process's VmRSS growth per stream\n"
              "                      (repeatable: kib2_per_stream… for the second…)\n"
              "  --header 'N: V'     add this request header (repeatable)\n"
              "  --model NAME        the request's model (default " MODEL ")\n"
              "  --timeout S         per-request / per-mode timeout (default 10)\n"
              "  --listen H:P        origin: where to listen (default 127.0.0.1:0)\n"
              "  --path P            request path (default /v1/chat/completions)\n", stderr);
}

int main(int argc, char *argv[]) {
        static const struct option longopts[] = {
                { "target", required_argument, NULL, 't' },
                { "clients", required_argument, NULL, 'c' },
                { "duration", required_argument, NULL, 'd' },
                { "warmup", required_argument, NULL, 'w' },
                { "rate", required_argument, NULL, 'r' },
                { "cpu-pid", required_argument, NULL, 'P' },
                { "ref-pid", required_argument, NULL, 'R' },
                { "rss-pid", required_argument, NULL, 'M' },
                { "streams", required_argument, NULL, 's' },
                { "chunks", required_argument, NULL, 'k' },
                { "delay-ms", required_argument, NULL, 'D' },
                { "hold", required_argument, NULL, 'H' },
                { "timeout", required_argument, NULL, 'T' },
                { "listen", required_argument, NULL, 'l' },
                { "path", required_argument, NULL, 'p' },
                { "header", required_argument, NULL, 'e' },
                { "model", required_argument, NULL, 'm' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *mode;
        int c;

        if (argc < 2) {
                usage();
                return 2;
        }
        mode = argv[1];
        (void) parse_addr("127.0.0.1:0", &opt.listen);
        optind = 2;
        while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0)
                switch (c) {
                case 't':
                        if (parse_addr(optarg, &opt.target) < 0)
                                die("bad --target %s (want IPv4:PORT)", optarg);
                        opt.target_str = optarg;
                        opt.have_target = true;
                        break;
                case 'c': opt.clients = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'd': opt.duration = strtod(optarg, NULL); break;
                case 'w': opt.warmup = strtod(optarg, NULL); break;
                case 'r': opt.rate = strtod(optarg, NULL); break;
                case 'P':
                        if (opt.n_cpu_pids >= MAX_PIDS)
                                die("at most %d --cpu-pid", MAX_PIDS);
                        opt.cpu_pid[opt.n_cpu_pids++] = (pid_t) strtol(optarg, NULL, 10);
                        break;
                case 'R': opt.ref_pid = (pid_t) strtol(optarg, NULL, 10); break;
                case 'M':
                        if (opt.n_rss_pids >= MAX_PIDS)
                                die("at most %d --rss-pid", MAX_PIDS);
                        opt.rss_pid[opt.n_rss_pids++] = (pid_t) strtol(optarg, NULL, 10);
                        break;
                case 'e':
                        if (opt.n_headers >= MAX_HEADERS || !strchr(optarg, ':') || strpbrk(optarg, "\r\n"))
                                die("bad --header %s (want 'Name: value', at most %d)", optarg, MAX_HEADERS);
                        opt.headers[opt.n_headers++] = optarg;
                        break;
                case 'm':
                        if (!*optarg || strlen(optarg) > 256 || strpbrk(optarg, "\"\\"))
                                die("bad --model %s", optarg);
                        opt.model = optarg;
                        break;
                case 's': opt.streams = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'k': opt.chunks = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'D': opt.delay_ms = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'H': opt.hold = strtod(optarg, NULL); break;
                case 'T': opt.timeout = strtod(optarg, NULL); break;
                case 'l':
                        if (parse_addr(optarg, &opt.listen) < 0)
                                die("bad --listen %s (want IPv4:PORT)", optarg);
                        break;
                case 'p': opt.path = optarg; break;
                case 'h': usage(); return 0;
                default: usage(); return 2;
                }

        signal(SIGPIPE, SIG_IGN);
        if (opt.clients == 0 || opt.clients > 60000 || opt.streams == 0 || opt.streams > 60000 ||
            opt.duration <= 0 || opt.duration > 3600 || opt.timeout <= 0 || opt.hold < 0 || opt.rate < 0 || opt.rate > 1e6)
                die("option out of range");

        if (strcmp(mode, "origin") == 0)
                return run_origin();
        if (strcmp(mode, "port") == 0)
                return run_port();
        if (!opt.have_target)
                die("%s needs --target", mode);
        if (strcmp(mode, "latency") == 0)
                return run_latency();
        if (strcmp(mode, "sse") == 0)
                return run_sse();
        if (strcmp(mode, "streams") == 0)
                return run_streams();
        if (strcmp(mode, "wait") == 0)
                return run_wait();
        usage();
        return 2;
}
