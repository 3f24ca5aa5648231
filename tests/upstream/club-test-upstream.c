/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * club-test-upstream: a small, deterministic, OpenAI-compatible HTTP/1.1 server that plays the
 * local LLM server (vLLM, Ollama, llama.cpp) behind clubd in integration tests and benchmarks.
 *
 * It does not use lib/ on purpose, so it cannot share a bug with the code under test. One thread,
 * one level-triggered epoll loop and one binary heap of per-connection deadlines; every socket is
 * non-blocking and TCP_NODELAY. Every SSE event goes out in its own send(), and the next one is
 * generated only once the previous one was taken by the kernel, so a reader that stops reading
 * pauses the stream (see "write_stalls"/"paused_now" in GET /_test/stats).
 *
 * Test controls come from X-Test-* request headers and from the body's "club_test" object
 * (headers win); see usage() and the table control_defs[] below.
 */

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/evp.h>

#define KIB 1024ULL
#define MIB (1024ULL * KIB)
#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL

#define HEAD_MAX            (16U * 1024U)     /* request line + headers */
#define HEADERS_MAX         128U
#define CHUNK_LINE_MAX      1024U             /* chunk-size line of a chunked request body */
#define TRAILERS_MAX        (16U * 1024U)
#define BODY_MAX_DEFAULT    (64ULL * MIB)
#define BODY_MAX_LIMIT      (1024ULL * MIB)
#define JSON_DEPTH_MAX      64
#define READ_CHUNK          (64U * 1024U)
#define READS_PER_WAKEUP    16U
#define RESPONSE_CHUNK      (16U * 1024U)     /* chunk size of a chunked non-streamed response */
#define LINGER_USEC         (2ULL * USEC_PER_SEC)
#define RST_WAIT_STEP_USEC  (2ULL * USEC_PER_MSEC)
#define RST_WAIT_MAX_USEC   USEC_PER_SEC
#define ACCEPT_RETRY_USEC   (100ULL * USEC_PER_MSEC)
#define MAX_CONNECTIONS_DEFAULT 10000U
#define CREATED_TIMESTAMP   1700000000
#define CHUNKS_DEFAULT      5
#define CHUNKS_MAX          10000000
#define DELAY_MS_MAX        3600000
#define CHUNK_SIZE_MAX      (16LL * 1024 * 1024)
#define RESPONSE_SIZE_MAX   (256LL * 1024 * 1024)
#define DIE_AFTER_MAX       (1LL << 40)
#define EMBED_DIM_DEFAULT   8
#define EMBED_DIM_MAX       4096
#define EMBED_INPUTS_MAX    2048
#define ECHO_BODY_MAX       (1U * 1024U * 1024U)
#define SCRATCH_KEEP        (1U * 1024U * 1024U)
#define NAME_MAX_LEN        128U

#define HEAP_NONE SIZE_MAX
#define DIE_NEVER UINT64_MAX

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define FORMAT_PRINTF(a, b) __attribute__((format(printf, a, b)))

typedef uint64_t usec_t;

/* ---------------------------------------------------------------------------------------------- */
/* Command line */

static const char *arg_listen = NULL;
static char **arg_models = NULL;
static size_t arg_n_models = 0;
static const char *arg_name = "test-upstream";
static char *arg_api_key = NULL;
static bool arg_ollama = false;
static bool arg_verbose = false;
static size_t arg_max_connections = MAX_CONNECTIONS_DEFAULT;
static uint64_t arg_max_body = BODY_MAX_DEFAULT;

/* ---------------------------------------------------------------------------------------------- */
/* Growable byte buffer: bytes [off, len) are pending. A failed allocation sets oom and turns every
 * later append into a no-op, so builders check once at the end. */

typedef struct Buf {
        char *data;
        size_t off;
        size_t len;
        size_t cap;
        bool oom;
} Buf;

static size_t buf_pending(const Buf *b) {
        return b->len - b->off;
}

static const char *buf_head(const Buf *b) {
        return b->data ? b->data + b->off : "";
}

static bool buf_reserve(Buf *b, size_t n) {
        size_t want, cap;
        char *d;

        if (b->oom)
                return false;
        if (b->cap - b->len >= n)
                return true;
        if (b->off > 0) {
                memmove(b->data, b->data + b->off, b->len - b->off);
                b->len -= b->off;
                b->off = 0;
                if (b->cap - b->len >= n)
                        return true;
        }
        if (n > SIZE_MAX - b->len) {
                b->oom = true;
                return false;
        }
        want = b->len + n;
        cap = b->cap > 0 ? b->cap : 256;
        while (cap < want)
                cap = cap > SIZE_MAX / 2 ? want : cap * 2;
        d = realloc(b->data, cap);
        if (!d) {
                b->oom = true;
                return false;
        }
        b->data = d;
        b->cap = cap;
        return true;
}

static void buf_put(Buf *b, const void *p, size_t n) {
        if (n == 0 || !buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

static void buf_puts(Buf *b, const char *s) {
        buf_put(b, s, strlen(s));
}

static void buf_putc(Buf *b, char ch) {
        buf_put(b, &ch, 1);
}

static void buf_put_repeat(Buf *b, char ch, size_t n) {
        if (n == 0 || !buf_reserve(b, n))
                return;
        memset(b->data + b->len, ch, n);
        b->len += n;
}

static void FORMAT_PRINTF(2, 3) buf_printf(Buf *b, const char *fmt, ...) {
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
                b->oom = true;
                return;
        }
        if (!buf_reserve(b, (size_t) n + 1))
                return;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t) n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t) n;
}

static void buf_consume(Buf *b, size_t n) {
        assert(n <= buf_pending(b));
        b->off += n;
        if (b->off == b->len)
                b->off = b->len = 0;
}

static void buf_clear(Buf *b) {
        b->off = b->len = 0;
        b->oom = false;
}

/* Empty the buffer, and give its memory back if it grew beyond keep bytes. */
static void buf_reset(Buf *b, size_t keep) {
        buf_clear(b);
        if (b->cap > keep) {
                free(b->data);
                b->data = NULL;
                b->cap = 0;
        }
}

static void buf_done(Buf *b) {
        free(b->data);
        *b = (Buf) {};
}

/* Length of the valid UTF-8 sequence at s, or 0 if there is none. */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
        unsigned char c = s[0];

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf)
                return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
        if (c >= 0xe0 && c <= 0xef) {
                if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
                        return 0;
                if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] >= 0xa0))
                        return 0; /* overlong, surrogate */
                return 3;
        }
        if (c >= 0xf0 && c <= 0xf4) {
                if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
                        return 0;
                if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] >= 0x90))
                        return 0; /* overlong, beyond U+10FFFF */
                return 4;
        }
        return 0;
}

/* A JSON string. Bytes that are not valid UTF-8 become U+0080..U+00FF, so the output always parses. */
static void buf_put_json_str(Buf *b, const char *s, size_t n) {
        const unsigned char *u = (const unsigned char *) s;
        size_t i = 0;

        buf_putc(b, '"');
        while (i < n) {
                size_t run = i, l;

                while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' && u[run] != '\\')
                        run++;
                buf_put(b, s + i, run - i);
                i = run;
                if (i >= n)
                        break;

                switch (u[i]) {
                case '"':  buf_puts(b, "\\\""); i++; continue;
                case '\\': buf_puts(b, "\\\\"); i++; continue;
                case '\n': buf_puts(b, "\\n"); i++; continue;
                case '\r': buf_puts(b, "\\r"); i++; continue;
                case '\t': buf_puts(b, "\\t"); i++; continue;
                default:
                        break;
                }
                if (u[i] < 0x20 || u[i] == 0x7f) {
                        buf_printf(b, "\\u%04x", u[i]);
                        i++;
                        continue;
                }
                l = utf8_valid_len(u + i, n - i);
                if (l == 0) {
                        buf_printf(b, "\\u%04x", u[i]);
                        i++;
                        continue;
                }
                buf_put(b, s + i, l);
                i += l;
        }
        buf_putc(b, '"');
}

static void buf_put_json_cstr(Buf *b, const char *s) {
        if (!s)
                buf_puts(b, "null");
        else
                buf_put_json_str(b, s, strlen(s));
}

/* ---------------------------------------------------------------------------------------------- */
/* Small helpers */

static usec_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t) ts.tv_sec * USEC_PER_SEC + (usec_t) ts.tv_nsec / 1000;
}

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static const char *startswith(const char *s, const char *prefix) {
        size_t l = strlen(prefix);

        return strncmp(s, prefix, l) == 0 ? s + l : NULL;
}

static const char *startswith_no_case(const char *s, const char *prefix) {
        size_t l = strlen(prefix);

        return strncasecmp(s, prefix, l) == 0 ? s + l : NULL;
}

/* Strict decimal: digits only, no sign, no blanks, at most max. */
static int parse_u64(const char *s, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        if (v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

static bool is_tchar(char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                (ch != '\0' && strchr("!#$%&'*+-.^_`|~", ch));
}

/* An identifier we put into headers and JSON: printable ASCII, bounded. */
static bool name_is_valid(const char *s) {
        size_t l = strlen(s);

        if (l == 0 || l > NAME_MAX_LEN)
                return false;
        for (; *s; s++)
                if (*s < 0x20 || *s > 0x7e)
                        return false;
        return true;
}

static void sha256_hex(const void *p, size_t n, char ret[static 65]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;

        if (EVP_Digest(p, n, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
                strcpy(ret, "error");
                return;
        }
        for (unsigned i = 0; i < 32; i++)
                sprintf(ret + 2 * i, "%02x", md[i]);
}

static void buf_put_base64(Buf *b, const unsigned char *p, size_t n) {
        static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t i;

        for (i = 0; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t) p[i] << 16 | (uint32_t) p[i + 1] << 8 | p[i + 2];
                char q[4] = { alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63], alphabet[v & 63] };
                buf_put(b, q, 4);
        }
        if (n - i == 1) {
                uint32_t v = (uint32_t) p[i] << 16;
                char q[4] = { alphabet[v >> 18], alphabet[(v >> 12) & 63], '=', '=' };
                buf_put(b, q, 4);
        } else if (n - i == 2) {
                uint32_t v = (uint32_t) p[i] << 16 | (uint32_t) p[i + 1] << 8;
                char q[4] = { alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63], '=' };
                buf_put(b, q, 4);
        }
}

static uint64_t fnv1a64(const void *p, size_t n, uint64_t h) {
        const unsigned char *u = p;

        for (size_t i = 0; i < n; i++) {
                h ^= u[i];
                h *= UINT64_C(0x100000001b3);
        }
        return h;
}

static uint64_t splitmix64(uint64_t x) {
        x += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
        return x ^ (x >> 31);
}

static uint64_t count_words(const char *s, size_t n) {
        uint64_t words = 0;
        bool in_word = false;

        for (size_t i = 0; i < n; i++) {
                if (isspace((unsigned char) s[i]))
                        in_word = false;
                else if (!in_word) {
                        in_word = true;
                        words++;
                }
        }
        return words;
}

static int hexval(char ch) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -1;
}

/* Percent-decode s into a new string. NULL on a bad escape, an embedded NUL, or OOM. */
static char *percent_decode(const char *s) {
        char *ret = malloc(strlen(s) + 1), *d = ret;

        if (!ret)
                return NULL;
        for (; *s; s++) {
                if (*s == '%') {
                        int hi = hexval(s[1]), lo = hi >= 0 ? hexval(s[2]) : -1;
                        if (lo < 0 || (hi == 0 && lo == 0)) {
                                free(ret);
                                return NULL;
                        }
                        *d++ = (char) (hi << 4 | lo);
                        s += 2;
                } else
                        *d++ = *s;
        }
        *d = '\0';
        return ret;
}

static bool model_is_served(const char *model) {
        for (size_t i = 0; i < arg_n_models; i++)
                if (streq(arg_models[i], model))
                        return true;
        return false;
}

/* ---------------------------------------------------------------------------------------------- */
/* Counters for GET /_test/stats. Those in Stats are zeroed by POST /_test/reset; the gauges below
 * describe the present and are not. */

typedef struct Stats {
        uint64_t connections_accepted;
        uint64_t requests;
        uint64_t bad_requests;
        uint64_t streams_started;
        uint64_t streams_completed;
        uint64_t streams_cancelled;
        uint64_t streams_aborted;
        uint64_t chunks_generated;
        uint64_t chunks_written;
        uint64_t bytes_written;
        uint64_t write_stalls;
        uint64_t max_unsent_bytes;
} Stats;

static Stats stats;
static uint64_t gauge_connections_open;
static uint64_t gauge_streams_active;
static uint64_t gauge_paused;
static uint64_t gauge_unsent_bytes;
static uint64_t request_seq;
static Buf last_request;        /* the echo of the last request that was not for /_test/ */

/* ---------------------------------------------------------------------------------------------- */
/* Test controls */

typedef enum ControlType {
        CONTROL_NUMBER,
        CONTROL_BOOL,
        CONTROL_DIE_MODE,
} ControlType;

typedef enum DieMode {
        DIE_FIN,        /* shutdown(SHUT_WR) after the last byte: the peer sees EOF mid-body */
        DIE_RST,        /* SO_LINGER 0 + close() once the kernel sent our bytes: the peer sees RST */
} DieMode;

/* Every field is -1 while unset. */
typedef struct Controls {
        int64_t chunks;
        int64_t chunk_delay_ms;
        int64_t first_byte_delay_ms;
        int64_t die_after;
        int64_t die_mode;
        int64_t chunk_size;
        int64_t response_size;
        int64_t status;
        int64_t echo;
        int64_t chunked;
        int64_t reject_stream_options;
} Controls;

#define CONTROLS_UNSET ((Controls) { -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1 })

typedef struct ControlDef {
        const char *header;
        const char *key;        /* in the body's "club_test" object */
        size_t offset;
        ControlType type;
        int64_t max;
} ControlDef;

static const ControlDef control_defs[] = {
        { "X-Test-Chunks",              "chunks",              offsetof(Controls, chunks),              CONTROL_NUMBER,   CHUNKS_MAX },
        { "X-Test-Chunk-Delay-Ms",      "chunk_delay_ms",      offsetof(Controls, chunk_delay_ms),      CONTROL_NUMBER,   DELAY_MS_MAX },
        { "X-Test-First-Byte-Delay-Ms", "first_byte_delay_ms", offsetof(Controls, first_byte_delay_ms), CONTROL_NUMBER,   DELAY_MS_MAX },
        { "X-Test-Die-After",           "die_after",           offsetof(Controls, die_after),           CONTROL_NUMBER,   DIE_AFTER_MAX },
        { "X-Test-Die-Mode",            "die_mode",            offsetof(Controls, die_mode),            CONTROL_DIE_MODE, DIE_RST },
        { "X-Test-Chunk-Size",          "chunk_size",          offsetof(Controls, chunk_size),          CONTROL_NUMBER,   CHUNK_SIZE_MAX },
        { "X-Test-Response-Size",       "response_size",       offsetof(Controls, response_size),       CONTROL_NUMBER,   RESPONSE_SIZE_MAX },
        { "X-Test-Status",              "status",              offsetof(Controls, status),              CONTROL_NUMBER,   599 },
        { "X-Test-Echo",                "echo",                offsetof(Controls, echo),                CONTROL_BOOL,     1 },
        { "X-Test-Chunked",             "chunked",             offsetof(Controls, chunked),             CONTROL_BOOL,     1 },
        { "X-Test-Reject-Stream-Options", "reject_stream_options", offsetof(Controls, reject_stream_options), CONTROL_BOOL, 1 },
};

static int64_t *controls_field(Controls *ctl, const ControlDef *d) {
        return (int64_t *) (void *) ((char *) ctl + d->offset);
}

static int control_parse_string(const ControlDef *d, const char *s, int64_t *ret) {
        uint64_t v;

        switch (d->type) {
        case CONTROL_NUMBER:
                if (parse_u64(s, (uint64_t) d->max, &v) < 0)
                        return -EINVAL;
                *ret = (int64_t) v;
                return 0;
        case CONTROL_BOOL:
                if (streq(s, "1") || strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0)
                        *ret = 1;
                else if (streq(s, "0") || strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0)
                        *ret = 0;
                else
                        return -EINVAL;
                return 0;
        case CONTROL_DIE_MODE:
                if (strcasecmp(s, "fin") == 0)
                        *ret = DIE_FIN;
                else if (strcasecmp(s, "rst") == 0 || strcasecmp(s, "reset") == 0)
                        *ret = DIE_RST;
                else
                        return -EINVAL;
                return 0;
        }
        return -EINVAL;
}

static int control_parse_json(const ControlDef *d, struct json_object *v, int64_t *ret) {
        int64_t i;

        switch (d->type) {
        case CONTROL_NUMBER:
        case CONTROL_BOOL:
                if (d->type == CONTROL_BOOL && json_object_is_type(v, json_type_boolean)) {
                        *ret = json_object_get_boolean(v) ? 1 : 0;
                        return 0;
                }
                if (!json_object_is_type(v, json_type_int))
                        return -EINVAL;
                errno = 0;
                i = json_object_get_int64(v);
                if (errno != 0 || i < 0 || i > d->max)
                        return -EINVAL;
                *ret = i;
                return 0;
        case CONTROL_DIE_MODE:
                if (!json_object_is_type(v, json_type_string))
                        return -EINVAL;
                return control_parse_string(d, json_object_get_string(v), ret);
        }
        return -EINVAL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Connections */

typedef enum ConnState {
        CONN_READ_HEAD,
        CONN_READ_BODY,
        CONN_WAIT_FIRST_BYTE,   /* response ready, held back by X-Test-First-Byte-Delay-Ms */
        CONN_SEND,              /* non-streamed response going out */
        CONN_STREAM,            /* SSE stream going out */
        CONN_LINGER,            /* write side shut down; reading until EOF before close() */
        CONN_RESET_WAIT,        /* waiting for the kernel to send our bytes before a RST */
} ConnState;

typedef enum Framing {
        FRAMING_LENGTH,
        FRAMING_CHUNKED,
        FRAMING_CLOSE,          /* body ends with the connection */
} Framing;

typedef enum ChunkState {
        CHUNK_SIZE,
        CHUNK_DATA,
        CHUNK_DATA_END,
        CHUNK_TRAILER,
} ChunkState;

typedef struct Header {
        const char *name;
        const char *value;
} Header;

typedef struct Stream {
        bool chat;              /* chat.completion.chunk, else text_completion */
        char *prefix;           /* the JSON of every event up to "choices" */
        uint64_t n_chunks;
        uint64_t next;          /* index of the next content chunk */
        uint64_t die_after;     /* DIE_NEVER, or close after this many content chunks */
        uint64_t chunk_size;
        usec_t delay;
        usec_t due;             /* when content chunk "next" may go */
        uint64_t prompt_tokens;
        const char *finish_reason;
        bool include_usage;
        bool usage_sent;
        bool done_sent;
} Stream;

typedef struct Conn Conn;
struct Conn {
        Conn *prev, *next;
        int fd;
        uint32_t events;        /* as registered with epoll */
        ConnState state;
        char peer[INET6_ADDRSTRLEN + 8];
        size_t heap_idx;
        usec_t deadline;
        bool dead;              /* to be freed by conn_run() */
        bool peer_closed;       /* EOF read, or half-close seen while answering */
        Buf in, out, body, resp;

        /* The current request. */
        bool request_active;    /* dispatched, not yet logged */
        char *head;             /* request head, split into NUL-terminated strings */
        char *path;             /* target without query, NULL until parsed */
        const char *method, *target;
        unsigned minor;
        Header headers[HEADERS_MAX];
        size_t n_headers;
        bool keep_alive;
        bool expect_continue;
        bool req_chunked;
        bool is_head;
        bool is_test;           /* /_test/ endpoints: not counted */
        uint64_t body_left;
        ChunkState chunk_state;
        uint64_t chunk_left;
        size_t trailer_bytes;
        Controls ctl;
        usec_t started;

        /* The current response. */
        int status;
        Framing framing;
        bool streaming;
        bool stream_counted;    /* in streams_started and gauge_streams_active, not yet ended */
        bool event_pending;     /* a content chunk sits in out */
        bool paused;            /* out could not be written completely: in gauge_paused */
        bool die_after_send;
        DieMode die_mode;
        usec_t first_byte_at;
        usec_t rst_wait_until;
        size_t unsent_accounted;
        Stream stream;
};

static int epoll_fd = -EBADF;
static int listen_fd = -EBADF;
static int signal_fd = -EBADF;
static bool listener_enabled = false;
static usec_t accept_retry_at = 0;
static Conn *conns = NULL;
static Conn **heap = NULL;
static size_t heap_n = 0;
static char read_buf[READ_CHUNK];
static Buf scratch_body;
static Buf scratch_event;
static int tag_listen, tag_signal;

/* ---- timers: a binary min-heap of connections ordered by deadline ---- */

static bool heap_less(size_t a, size_t b) {
        return heap[a]->deadline < heap[b]->deadline;
}

static void heap_swap(size_t a, size_t b) {
        Conn *t = heap[a];

        heap[a] = heap[b];
        heap[b] = t;
        heap[a]->heap_idx = a;
        heap[b]->heap_idx = b;
}

static void heap_up(size_t i) {
        while (i > 0) {
                size_t p = (i - 1) / 2;

                if (!heap_less(i, p))
                        break;
                heap_swap(i, p);
                i = p;
        }
}

static void heap_down(size_t i) {
        for (;;) {
                size_t l = 2 * i + 1, r = l + 1, m = i;

                if (l < heap_n && heap_less(l, m))
                        m = l;
                if (r < heap_n && heap_less(r, m))
                        m = r;
                if (m == i)
                        break;
                heap_swap(i, m);
                i = m;
        }
}

/* The heap has room for arg_max_connections entries, one per connection at most. */
static void timer_set(Conn *c, usec_t when) {
        c->deadline = when;
        if (c->heap_idx == HEAP_NONE) {
                c->heap_idx = heap_n;
                heap[heap_n++] = c;
        }
        heap_up(c->heap_idx);
        heap_down(c->heap_idx);
}

static void timer_clear(Conn *c) {
        size_t i = c->heap_idx, last;

        if (i == HEAP_NONE)
                return;
        c->heap_idx = HEAP_NONE;
        last = --heap_n;
        if (i == last)
                return;
        heap[i] = heap[last];
        heap[i]->heap_idx = i;
        heap_up(i);
        heap_down(heap[i]->heap_idx);
}

/* ---- epoll interest ---- */

static void conn_update_events(Conn *c) {
        struct epoll_event ev = { .data.ptr = c };

        switch (c->state) {
        case CONN_READ_HEAD:
        case CONN_READ_BODY:
        case CONN_LINGER:
                ev.events = EPOLLIN | EPOLLRDHUP;
                break;
        default:
                /* Do not read the next request while answering this one, but notice a client that
                 * goes away at once, even while a stream is idle between chunks. */
                if (!c->peer_closed)
                        ev.events |= EPOLLRDHUP;
                break;
        }
        if (buf_pending(&c->out) > 0 && c->state != CONN_LINGER)
                ev.events |= EPOLLOUT;

        if (ev.events == c->events)
                return;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
                c->dead = true;
                return;
        }
        c->events = ev.events;
}

static void listener_set(bool enable) {
        struct epoll_event ev = { .events = enable ? EPOLLIN : 0, .data.ptr = &tag_listen };

        if (enable == listener_enabled)
                return;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, listen_fd, &ev) == 0)
                listener_enabled = enable;
}

/* ---- logging ---- */

static void conn_log_request(Conn *c, const char *outcome) {
        usec_t ms;

        if (!c->request_active)
                return;
        c->request_active = false;
        if (!arg_verbose)
                return;

        ms = (now_usec() - c->started) / USEC_PER_MSEC;
        if (c->streaming)
                fprintf(stderr, "%s: %s \"%s %s\" %d stream chunks=%" PRIu64 "/%" PRIu64 " %s %" PRIu64 "ms\n",
                        arg_name, c->peer, c->method ?: "-", c->target ?: "-", c->status,
                        c->stream.next, c->stream.n_chunks, outcome, ms);
        else
                fprintf(stderr, "%s: %s \"%s %s\" %d %s %" PRIu64 "ms\n",
                        arg_name, c->peer, c->method ?: "-", c->target ?: "-", c->status, outcome, ms);
}

/* ---- lifecycle ---- */

static void stream_end(Conn *c, uint64_t *counter) {
        if (!c->stream_counted)
                return;
        c->stream_counted = false;
        (*counter)++;
        gauge_streams_active--;
}

/* Forget the current request and response; keep in (pipelined bytes) and out. */
static void conn_request_reset(Conn *c) {
        free(c->head);
        c->head = NULL;
        free(c->path);
        c->path = NULL;
        free(c->stream.prefix);
        c->stream = (Stream) {};
        c->method = c->target = NULL;
        c->n_headers = 0;
        c->keep_alive = true;
        c->expect_continue = c->req_chunked = c->is_head = c->is_test = false;
        c->body_left = 0;
        c->chunk_state = CHUNK_SIZE;
        c->chunk_left = 0;
        c->trailer_bytes = 0;
        c->ctl = CONTROLS_UNSET;
        c->status = 0;
        c->framing = FRAMING_LENGTH;
        c->streaming = c->event_pending = c->die_after_send = false;
        c->die_mode = DIE_FIN;
        buf_reset(&c->body, SCRATCH_KEEP);
        buf_reset(&c->resp, SCRATCH_KEEP);
}

static void conn_free(Conn *c) {
        stream_end(c, &stats.streams_cancelled);
        conn_log_request(c, "closed");
        if (c->paused)
                gauge_paused--;
        gauge_unsent_bytes -= c->unsent_accounted;
        timer_clear(c);
        if (c->fd >= 0)
                close(c->fd);       /* also removes it from the epoll set */

        if (c->prev)
                c->prev->next = c->next;
        else
                conns = c->next;
        if (c->next)
                c->next->prev = c->prev;

        conn_request_reset(c);
        buf_done(&c->in);
        buf_done(&c->out);
        buf_done(&c->body);
        buf_done(&c->resp);
        free(c);
        gauge_connections_open--;
}

static void conn_new(int fd, const struct sockaddr *sa, socklen_t salen) {
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP };
        char host[INET6_ADDRSTRLEN] = "?", serv[8] = "?";
        int one = 1;
        Conn *c;

        c = calloc(1, sizeof(Conn));
        if (!c) {
                close(fd);
                return;
        }
        c->fd = fd;
        c->heap_idx = HEAP_NONE;
        c->state = CONN_READ_HEAD;
        conn_request_reset(c);

        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        (void) getnameinfo(sa, salen, host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
        snprintf(c->peer, sizeof(c->peer), "%s:%s", host, serv);

        ev.data.ptr = c;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                close(fd);
                free(c);
                return;
        }
        c->events = ev.events;

        c->next = conns;
        if (conns)
                conns->prev = c;
        conns = c;
        gauge_connections_open++;
        stats.connections_accepted++;
}

/* Hand out what the kernel takes. Marks the connection dead on a hard error (EPIPE, ECONNRESET). */
static void conn_flush(Conn *c) {
        size_t pending;

        while (buf_pending(&c->out) > 0) {
                ssize_t n = send(c->fd, buf_head(&c->out), buf_pending(&c->out), MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                break;
                        c->dead = true;
                        return;
                }
                if (!c->is_test)
                        stats.bytes_written += (uint64_t) n;
                buf_consume(&c->out, (size_t) n);
        }

        pending = buf_pending(&c->out);
        gauge_unsent_bytes = gauge_unsent_bytes - c->unsent_accounted + pending;
        c->unsent_accounted = pending;
        if (!c->is_test && pending > stats.max_unsent_bytes)
                stats.max_unsent_bytes = pending;
        if (pending > 0 && !c->paused) {
                c->paused = true;
                gauge_paused++;
                stats.write_stalls++;
        } else if (pending == 0 && c->paused) {
                c->paused = false;
                gauge_paused--;
        }
        if (pending == 0 && c->event_pending) {
                c->event_pending = false;
                stats.chunks_written++;
        }
        conn_update_events(c);
}

/* Close our side after the last response, but keep reading until the peer's EOF, so that bytes it
 * still sends cannot turn our close() into a RST that destroys the response in flight. */
static void conn_linger(Conn *c) {
        if (c->peer_closed || shutdown(c->fd, SHUT_WR) < 0) {
                c->dead = true;
                return;
        }
        c->state = CONN_LINGER;
        timer_set(c, now_usec() + LINGER_USEC);
        conn_update_events(c);
}

static void conn_request_done(Conn *c) {
        bool keep_alive = c->keep_alive;

        conn_log_request(c, "done");
        conn_request_reset(c);
        buf_reset(&c->out, SCRATCH_KEEP);
        if (!keep_alive) {
                conn_linger(c);
                return;
        }
        c->state = CONN_READ_HEAD;
        conn_update_events(c);
}

/* X-Test-Die-After: end the response abruptly. */
static void conn_die(Conn *c) {
        stream_end(c, &stats.streams_aborted);
        conn_log_request(c, c->die_mode == DIE_RST ? "aborted (rst)" : "aborted (fin)");
        c->keep_alive = false;
        if (c->die_mode == DIE_RST) {
                c->state = CONN_RESET_WAIT;
                c->rst_wait_until = now_usec() + RST_WAIT_MAX_USEC;
                conn_update_events(c);
        } else
                conn_linger(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Responses */

static const char *http_reason(int status) {
        switch (status) {
        case 200: return "OK";
        case 201: return "Created";
        case 202: return "Accepted";
        case 204: return "No Content";
        case 301: return "Moved Permanently";
        case 302: return "Found";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 402: return "Payment Required";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 413: return "Content Too Large";
        case 415: return "Unsupported Media Type";
        case 417: return "Expectation Failed";
        case 422: return "Unprocessable Content";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 502: return "Bad Gateway";
        case 503: return "Service Unavailable";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        }
        if (status < 300)
                return "OK";
        if (status < 400)
                return "Redirection";
        return status < 500 ? "Client Error" : "Server Error";
}

static void resp_put_common_headers(Conn *c, Buf *r) {
        buf_printf(r, "X-Upstream-Name: %s\r\n", arg_name);
        if (!c->keep_alive)
                buf_puts(r, "Connection: close\r\n");
        else if (c->minor == 0)
                buf_puts(r, "Connection: keep-alive\r\n");
}

/* X-Test-Response-Size: grow a JSON object to exactly size bytes with a "club_padding" member. */
static void body_pad(Buf *body, uint64_t size) {
        static const char member[] = ",\"club_padding\":\"";
        size_t len = buf_pending(body), overhead = strlen(member) + 1;

        if (len < 2 || buf_head(body)[len - 1] != '}' || size < (uint64_t) len + overhead)
                return;
        body->len--;    /* drop the closing brace */
        buf_puts(body, member);
        buf_put_repeat(body, 'x', (size_t) (size - len - overhead));
        buf_puts(body, "\"}");
}

/* Prepare a complete non-streamed response in c->resp; it goes out after the first-byte delay. */
static void resp_build(Conn *c, int status, const char *content_type, Buf *body, const char *extra_headers) {
        bool has_body = !(status < 200 || status == 204 || status == 304);
        bool chunked = has_body && c->ctl.chunked == 1 && c->minor >= 1;
        Buf *r = &c->resp;
        size_t head_len, n = buf_pending(body);

        if (has_body && !c->is_test && status < 300 && c->ctl.response_size >= 0) {
                body_pad(body, (uint64_t) c->ctl.response_size);
                n = buf_pending(body);
        }

        buf_clear(r);
        c->status = status;
        c->streaming = false;
        c->framing = chunked ? FRAMING_CHUNKED : FRAMING_LENGTH;
        buf_printf(r, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
        if (has_body)
                buf_printf(r, "Content-Type: %s\r\n", content_type);
        if (chunked)
                buf_puts(r, "Transfer-Encoding: chunked\r\n");
        else if (has_body)
                buf_printf(r, "Content-Length: %zu\r\n", n);
        resp_put_common_headers(c, r);
        if (extra_headers)
                buf_puts(r, extra_headers);
        buf_puts(r, "\r\n");
        head_len = r->len;

        if (has_body && !c->is_head) {
                if (chunked) {
                        for (size_t off = 0; off < n; off += RESPONSE_CHUNK) {
                                size_t k = MIN((size_t) RESPONSE_CHUNK, n - off);
                                buf_printf(r, "%zx\r\n", k);
                                buf_put(r, buf_head(body) + off, k);
                                buf_puts(r, "\r\n");
                        }
                        buf_puts(r, "0\r\n\r\n");
                } else
                        buf_put(r, buf_head(body), n);
        }

        /* X-Test-Die-After on a non-streamed response: that many body bytes, always short of a
         * complete body, then an abrupt close. */
        if (!c->is_test && c->ctl.die_after >= 0 && !r->oom) {
                size_t framed = r->len - head_len, tail = chunked ? 5 : 1;
                size_t cut = framed > tail ? (size_t) MIN((uint64_t) c->ctl.die_after, (uint64_t) (framed - tail)) : 0;

                r->len = head_len + cut;
                c->die_after_send = true;
        }
}

static void resp_json(Conn *c, int status, Buf *body) {
        resp_build(c, status, "application/json", body, NULL);
}

static Buf *scratch(void) {
        buf_reset(&scratch_body, SCRATCH_KEEP);
        return &scratch_body;
}

/* An OpenAI-shaped error: {"error":{"message":…,"type":…,"param":…,"code":…}} */
static void FORMAT_PRINTF(6, 7) resp_error(Conn *c, int status, const char *type, const char *code,
                                           const char *param, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        Buf *b = scratch();

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);

        buf_puts(b, "{\"error\":{\"message\":");
        buf_put_json_cstr(b, msg);
        buf_puts(b, ",\"type\":");
        buf_put_json_cstr(b, type);
        buf_puts(b, ",\"param\":");
        buf_put_json_cstr(b, param);
        buf_puts(b, ",\"code\":");
        buf_put_json_cstr(b, code);
        buf_puts(b, "}}");
        resp_json(c, status, b);
}

static const char *error_type_for_status(int status) {
        switch (status) {
        case 400: return "invalid_request_error";
        case 401: return "authentication_error";
        case 403: return "permission_error";
        case 404: return "not_found_error";
        case 409: return "conflict_error";
        case 422: return "unprocessable_entity_error";
        case 429: return "rate_limit_error";
        }
        return status >= 500 ? "server_error" : "api_error";
}

static void resp_bad_request(Conn *c, const char *message) {
        resp_error(c, 400, "invalid_request_error", NULL, NULL, "%s", message);
}

/* ---------------------------------------------------------------------------------------------- */
/* Streams */

static void put_token(Buf *b, uint64_t i, uint64_t chunk_size) {
        size_t before = b->len;
        size_t n;

        buf_printf(b, "tok%" PRIu64 " ", i);
        n = b->len - before;
        if (chunk_size > n)
                buf_put_repeat(b, 'x', (size_t) (chunk_size - n));
}

static void put_usage(Buf *b, uint64_t prompt_tokens, uint64_t completion_tokens) {
        buf_printf(b, "\"usage\":{\"prompt_tokens\":%" PRIu64 ",\"completion_tokens\":%" PRIu64
                   ",\"total_tokens\":%" PRIu64 "}", prompt_tokens, completion_tokens,
                   prompt_tokens + completion_tokens);
}

/* "chatcmpl-NAME-SEQ" / "cmpl-NAME-SEQ" and the other members every object starts with. */
static void put_object_prefix(Buf *b, bool chat, const char *object, const char *model, uint64_t seq) {
        char id[NAME_MAX_LEN + 64];

        snprintf(id, sizeof(id), "%s-%s-%" PRIu64, chat ? "chatcmpl" : "cmpl", arg_name, seq);
        buf_puts(b, "{\"id\":");
        buf_put_json_cstr(b, id);
        buf_printf(b, ",\"object\":\"%s\",\"created\":%d,\"model\":", object, CREATED_TIMESTAMP);
        buf_put_json_cstr(b, model);
        buf_puts(b, ",\"system_fingerprint\":");
        snprintf(id, sizeof(id), "club-test-upstream/%s", arg_name);
        buf_put_json_cstr(b, id);
}

static int stream_begin(Conn *c, bool chat, const char *model, uint64_t n_chunks, const char *finish_reason,
                        uint64_t prompt_tokens, bool include_usage) {
        bool chunked = c->minor >= 1 && c->ctl.chunked != 0;
        Stream *s = &c->stream;
        Buf prefix = {};
        Buf *r = &c->resp;

        put_object_prefix(&prefix, chat, chat ? "chat.completion.chunk" : "text_completion", model, request_seq);
        buf_putc(&prefix, '\0');
        if (prefix.oom) {
                buf_done(&prefix);
                return -ENOMEM;
        }

        *s = (Stream) {
                .chat = chat,
                .prefix = prefix.data,
                .n_chunks = n_chunks,
                .die_after = c->ctl.die_after >= 0 ? (uint64_t) c->ctl.die_after : DIE_NEVER,
                .chunk_size = c->ctl.chunk_size >= 0 ? (uint64_t) c->ctl.chunk_size : 0,
                .delay = c->ctl.chunk_delay_ms >= 0 ? (usec_t) c->ctl.chunk_delay_ms * USEC_PER_MSEC : 0,
                .prompt_tokens = prompt_tokens,
                .finish_reason = finish_reason,
                .include_usage = include_usage,
        };

        if (!chunked)
                c->keep_alive = false;
        c->framing = chunked ? FRAMING_CHUNKED : FRAMING_CLOSE;
        c->streaming = true;
        c->status = 200;

        buf_clear(r);
        buf_puts(r, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n");
        if (chunked)
                buf_puts(r, "Transfer-Encoding: chunked\r\n");
        resp_put_common_headers(c, r);
        buf_puts(r, "\r\n");

        stats.streams_started++;
        gauge_streams_active++;
        c->stream_counted = true;
        return 0;
}

/* Queue one SSE event ("data: …\n\n") as one chunk; with last, the zero-length chunk joins it. */
static void stream_put_event(Conn *c, const Buf *ev, bool last) {
        size_t n = buf_pending(ev);

        if (c->framing == FRAMING_CHUNKED)
                buf_printf(&c->out, "%zx\r\n", n);
        buf_put(&c->out, buf_head(ev), n);
        if (c->framing == FRAMING_CHUNKED) {
                buf_puts(&c->out, "\r\n");
                if (last)
                        buf_puts(&c->out, "0\r\n\r\n");
        }
}

static void stream_make_chunk(Conn *c, Buf *ev) {
        Stream *s = &c->stream;
        bool last = s->next + 1 == s->n_chunks;

        buf_puts(ev, "data: ");
        buf_puts(ev, s->prefix);
        if (s->chat) {
                buf_puts(ev, ",\"choices\":[{\"index\":0,\"delta\":{");
                if (s->next == 0)
                        buf_puts(ev, "\"role\":\"assistant\",");
                buf_puts(ev, "\"content\":\"");
        } else
                buf_puts(ev, ",\"choices\":[{\"index\":0,\"text\":\"");
        put_token(ev, s->next, s->chunk_size);
        buf_puts(ev, s->chat ? "\"},\"logprobs\":null,\"finish_reason\":" : "\",\"logprobs\":null,\"finish_reason\":");
        if (last)
                buf_printf(ev, "\"%s\"", s->finish_reason);
        else
                buf_puts(ev, "null");
        buf_puts(ev, "}]}\n\n");
}

/* ---------------------------------------------------------------------------------------------- */
/* Request handlers */

static const char *header_get(Conn *c, const char *name) {
        for (size_t i = 0; i < c->n_headers; i++)
                if (strcasecmp(c->headers[i].name, name) == 0)
                        return c->headers[i].value;
        return NULL;
}

static struct json_object *jget(struct json_object *o, const char *key) {
        struct json_object *v = NULL;

        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return v;       /* NULL for JSON null as well */
}

/* The echo of a request: what a proxy sent us. */
static void echo_build(Conn *c, Buf *b) {
        char sha[65];

        sha256_hex(buf_head(&c->body), buf_pending(&c->body), sha);
        buf_puts(b, "{\"upstream\":");
        buf_put_json_cstr(b, arg_name);
        buf_puts(b, ",\"method\":");
        buf_put_json_cstr(b, c->method);
        buf_puts(b, ",\"target\":");
        buf_put_json_cstr(b, c->target);
        buf_puts(b, ",\"path\":");
        buf_put_json_cstr(b, c->path);
        buf_printf(b, ",\"http_version\":\"HTTP/1.%u\",\"headers\":{", c->minor);

        /* lower-cased names; repeated headers joined with ", " */
        for (size_t i = 0, n = 0; i < c->n_headers; i++) {
                Buf v = {};
                bool seen = false;

                for (size_t j = 0; j < i && !seen; j++)
                        seen = strcasecmp(c->headers[j].name, c->headers[i].name) == 0;
                if (seen)
                        continue;
                for (size_t j = i; j < c->n_headers; j++) {
                        if (strcasecmp(c->headers[j].name, c->headers[i].name) != 0)
                                continue;
                        if (v.len > 0)
                                buf_puts(&v, ", ");
                        buf_puts(&v, c->headers[j].value);
                }
                buf_puts(b, n++ > 0 ? ",\"" : "\"");
                for (const char *p = c->headers[i].name; *p; p++)
                        buf_putc(b, (char) tolower((unsigned char) *p));  /* a token: no escaping */
                buf_puts(b, "\":");
                buf_put_json_str(b, buf_head(&v), buf_pending(&v));
                b->oom = b->oom || v.oom;
                buf_done(&v);
        }
        buf_puts(b, "},\"header_list\":[");
        for (size_t i = 0; i < c->n_headers; i++) {
                buf_puts(b, i > 0 ? ",[" : "[");
                buf_put_json_cstr(b, c->headers[i].name);
                buf_putc(b, ',');
                buf_put_json_cstr(b, c->headers[i].value);
                buf_putc(b, ']');
        }
        buf_printf(b, "],\"body_length\":%zu,\"body_chunked\":%s,\"body_sha256\":\"%s\"",
                   buf_pending(&c->body), c->req_chunked ? "true" : "false", sha);
        if (buf_pending(&c->body) <= ECHO_BODY_MAX) {
                buf_puts(b, ",\"body\":");
                buf_put_json_str(b, buf_head(&c->body), buf_pending(&c->body));
        }
        buf_putc(b, '}');
}

static void handle_models(Conn *c) {
        Buf *b = scratch();

        buf_puts(b, "{\"object\":\"list\",\"data\":[");
        for (size_t i = 0; i < arg_n_models; i++) {
                buf_puts(b, i > 0 ? ",{\"id\":" : "{\"id\":");
                buf_put_json_cstr(b, arg_models[i]);
                buf_printf(b, ",\"object\":\"model\",\"created\":%d,\"owned_by\":", CREATED_TIMESTAMP);
                buf_put_json_cstr(b, arg_name);
                buf_putc(b, '}');
        }
        buf_puts(b, "]}");
        resp_json(c, 200, b);
}

static void handle_model(Conn *c, const char *escaped_id) {
        char *id = percent_decode(escaped_id);
        Buf *b;

        if (!id || !model_is_served(id)) {
                resp_error(c, 404, "invalid_request_error", "model_not_found", "model",
                           "The model `%s` does not exist or you do not have access to it.", id ?: escaped_id);
                free(id);
                return;
        }
        b = scratch();
        buf_puts(b, "{\"id\":");
        buf_put_json_cstr(b, id);
        buf_printf(b, ",\"object\":\"model\",\"created\":%d,\"owned_by\":", CREATED_TIMESTAMP);
        buf_put_json_cstr(b, arg_name);
        buf_putc(b, '}');
        free(id);
        resp_json(c, 200, b);
}

static void handle_ollama_tags(Conn *c) {
        Buf *b = scratch();

        buf_puts(b, "{\"models\":[");
        for (size_t i = 0; i < arg_n_models; i++) {
                char sha[65];

                sha256_hex(arg_models[i], strlen(arg_models[i]), sha);
                buf_puts(b, i > 0 ? ",{\"name\":" : "{\"name\":");
                buf_put_json_cstr(b, arg_models[i]);
                buf_puts(b, ",\"model\":");
                buf_put_json_cstr(b, arg_models[i]);
                buf_printf(b, ",\"modified_at\":\"2023-11-14T22:13:20Z\",\"size\":%zu,\"digest\":\"%s\","
                           "\"details\":{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"test\","
                           "\"families\":[\"test\"],\"parameter_size\":\"1M\",\"quantization_level\":\"Q4_0\"}}",
                           (i + 1) * 1000000, sha);
        }
        buf_puts(b, "]}");
        resp_json(c, 200, b);
}

/* Validates "model": 400 when missing, 404 model_not_found when not served. */
static const char *request_model(Conn *c, struct json_object *root) {
        struct json_object *m = jget(root, "model");
        const char *model;

        if (!m || !json_object_is_type(m, json_type_string)) {
                resp_error(c, 400, "invalid_request_error", NULL, "model",
                           "You must provide a model parameter.");
                return NULL;
        }
        model = json_object_get_string(m);
        if (!model_is_served(model)) {
                resp_error(c, 404, "invalid_request_error", "model_not_found", "model",
                           "The model `%s` does not exist or you do not have access to it.", model);
                return NULL;
        }
        return model;
}

/* Words in a "content": a string, or an array of parts with "text". */
static uint64_t content_words(struct json_object *content) {
        uint64_t words = 0;

        if (json_object_is_type(content, json_type_string))
                return count_words(json_object_get_string(content), (size_t) json_object_get_string_len(content));
        if (!json_object_is_type(content, json_type_array))
                return 0;
        for (size_t i = 0; i < json_object_array_length(content); i++) {
                struct json_object *part = json_object_array_get_idx(content, i);
                struct json_object *text = jget(part, "text");

                if (json_object_is_type(part, json_type_string))
                        words += content_words(part);
                else if (text)
                        words += content_words(text);
        }
        return words;
}

/* n = X-Test-Chunks, capped by max_tokens/max_completion_tokens. Returns false if a 400 was queued. */
static bool request_completion_length(Conn *c, struct json_object *root, uint64_t *ret_n, const char **ret_finish) {
        uint64_t n = c->ctl.chunks >= 0 ? (uint64_t) c->ctl.chunks : CHUNKS_DEFAULT;
        const char *finish = "stop";
        static const char *const keys[] = { "max_tokens", "max_completion_tokens" };

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                struct json_object *v = jget(root, keys[i]);
                int64_t m;

                if (!v)
                        continue;
                if (!json_object_is_type(v, json_type_int) || (m = json_object_get_int64(v)) < 1) {
                        resp_error(c, 400, "invalid_request_error", "invalid_value", keys[i],
                                   "'%s' must be an integer >= 1.", keys[i]);
                        return false;
                }
                if ((uint64_t) m < n) {
                        n = (uint64_t) m;
                        finish = "length";
                }
        }
        *ret_n = n;
        *ret_finish = finish;
        return true;
}

static bool request_stream_flags(Conn *c, struct json_object *root, bool *ret_stream, bool *ret_usage) {
        struct json_object *stream = jget(root, "stream"), *opts = jget(root, "stream_options");
        struct json_object *usage = jget(opts, "include_usage");

        if ((stream && !json_object_is_type(stream, json_type_boolean)) ||
            (opts && !json_object_is_type(opts, json_type_object)) ||
            (usage && !json_object_is_type(usage, json_type_boolean))) {
                resp_bad_request(c, "'stream' and 'stream_options.include_usage' must be booleans.");
                return false;
        }
        *ret_stream = stream && json_object_get_boolean(stream);
        *ret_usage = usage && json_object_get_boolean(usage);
        return true;
}

static void handle_completion(Conn *c, struct json_object *root, bool chat) {
        const char *model, *finish;
        uint64_t n, prompt_tokens = 0;
        bool stream, include_usage;
        Buf *b;

        model = request_model(c, root);
        if (!model)
                return;

        if (chat) {
                struct json_object *messages = jget(root, "messages");

                if (!json_object_is_type(messages, json_type_array)) {
                        resp_error(c, 400, "invalid_request_error", NULL, "messages",
                                   "'messages' is a required property and must be an array.");
                        return;
                }
                for (size_t i = 0; i < json_object_array_length(messages); i++)
                        prompt_tokens += content_words(jget(json_object_array_get_idx(messages, i), "content"));
        } else {
                struct json_object *prompt = jget(root, "prompt");

                if (json_object_is_type(prompt, json_type_array))
                        for (size_t i = 0; i < json_object_array_length(prompt); i++) {
                                struct json_object *p = json_object_array_get_idx(prompt, i);
                                prompt_tokens += json_object_is_type(p, json_type_int) ? 1 : content_words(p);
                        }
                else if (prompt)
                        prompt_tokens = content_words(prompt);
        }
        prompt_tokens = MAX(prompt_tokens, (uint64_t) 1);

        if (!request_completion_length(c, root, &n, &finish) ||
            !request_stream_flags(c, root, &stream, &include_usage))
                return;
        if (c->ctl.reject_stream_options == 1 && jget(root, "stream_options")) {
                /* What a server that does not know the option says (vLLM before 0.5, some others). */
                resp_error(c, 400, "invalid_request_error", NULL, "stream_options",
                           "Unrecognized request argument supplied: stream_options");
                return;
        }

        if (stream) {
                if (stream_begin(c, chat, model, n, finish, prompt_tokens, include_usage) < 0)
                        resp_error(c, 500, "server_error", NULL, NULL, "Out of memory.");
                return;
        }

        b = scratch();
        put_object_prefix(b, chat, chat ? "chat.completion" : "text_completion", model, request_seq);
        buf_puts(b, chat ? ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\""
                         : ",\"choices\":[{\"index\":0,\"text\":\"");
        for (uint64_t i = 0; i < n; i++)
                put_token(b, i, c->ctl.chunk_size >= 0 ? (uint64_t) c->ctl.chunk_size : 0);
        buf_printf(b, chat ? "\"},\"logprobs\":null,\"finish_reason\":\"%s\"}]," : "\",\"logprobs\":null,\"finish_reason\":\"%s\"}],",
                   finish);
        put_usage(b, prompt_tokens, n);
        buf_putc(b, '}');
        resp_json(c, 200, b);
}

/* One embedding input: its bytes for the seed, and its token count. */
static bool embedding_input(struct json_object *in, Buf *key, uint64_t *tokens) {
        buf_clear(key);
        if (json_object_is_type(in, json_type_string)) {
                buf_put(key, json_object_get_string(in), (size_t) json_object_get_string_len(in));
                *tokens = MAX(count_words(buf_head(key), buf_pending(key)), (uint64_t) 1);
                return true;
        }
        if (json_object_is_type(in, json_type_array) && json_object_array_length(in) > 0) {
                for (size_t i = 0; i < json_object_array_length(in); i++) {
                        struct json_object *t = json_object_array_get_idx(in, i);
                        if (!json_object_is_type(t, json_type_int))
                                return false;
                        buf_printf(key, "%" PRId64 ",", json_object_get_int64(t));
                }
                *tokens = json_object_array_length(in);
                return true;
        }
        return false;
}

static void handle_embeddings(Conn *c, struct json_object *root) {
        struct json_object *input = jget(root, "input"), *fmt = jget(root, "encoding_format");
        struct json_object *dim = jget(root, "dimensions");
        struct json_object **items = NULL;
        size_t n_items = 0;
        uint64_t tokens = 0;
        int64_t dims = EMBED_DIM_DEFAULT;
        bool base64 = false, tokens_only = true;
        const char *model;
        Buf key = {}, *b;

        model = request_model(c, root);
        if (!model)
                return;

        if (fmt) {
                const char *f = json_object_is_type(fmt, json_type_string) ? json_object_get_string(fmt) : "";
                if (!streq(f, "float") && !streq(f, "base64")) {
                        resp_error(c, 400, "invalid_request_error", "invalid_value", "encoding_format",
                                   "'encoding_format' must be 'float' or 'base64'.");
                        return;
                }
                base64 = streq(f, "base64");
        }
        if (dim && (!json_object_is_type(dim, json_type_int) ||
                    (dims = json_object_get_int64(dim)) < 1 || dims > EMBED_DIM_MAX)) {
                resp_error(c, 400, "invalid_request_error", "invalid_value", "dimensions",
                           "'dimensions' must be an integer between 1 and %d.", EMBED_DIM_MAX);
                return;
        }

        /* a string, an array of tokens, or an array of strings / token arrays */
        if (json_object_is_type(input, json_type_array)) {
                n_items = json_object_array_length(input);
                for (size_t i = 0; i < n_items; i++)
                        tokens_only = tokens_only && json_object_is_type(json_object_array_get_idx(input, i), json_type_int);
        }
        if (!input || (json_object_is_type(input, json_type_array) && (n_items == 0 || n_items > EMBED_INPUTS_MAX))) {
                resp_error(c, 400, "invalid_request_error", NULL, "input",
                           "'input' must be a string or a non-empty array of at most %d inputs.", EMBED_INPUTS_MAX);
                return;
        }
        if (!json_object_is_type(input, json_type_array) || tokens_only) {
                items = &input;
                n_items = 1;
        }

        b = scratch();
        buf_puts(b, "{\"object\":\"list\",\"data\":[");
        for (size_t i = 0; i < n_items; i++) {
                struct json_object *item = items ? items[i] : json_object_array_get_idx(input, i);
                uint64_t t = 0, seed;

                if (!embedding_input(item, &key, &t)) {
                        buf_done(&key);
                        resp_error(c, 400, "invalid_request_error", NULL, "input",
                                   "Invalid 'input[%zu]': expected a string or an array of integers.", i);
                        return;
                }
                tokens += t;
                seed = fnv1a64(buf_head(&key), buf_pending(&key), UINT64_C(0xcbf29ce484222325));

                buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%zu,\"embedding\":", i > 0 ? "," : "", i);
                buf_puts(b, base64 ? "\"" : "[");
                if (base64) {
                        unsigned char raw[EMBED_DIM_MAX * 4];
                        for (int64_t d = 0; d < dims; d++) {
                                float f = (float) (splitmix64(seed + (uint64_t) d) >> 40) / 16777216.0f * 2.0f - 1.0f;
                                uint32_t u;
                                memcpy(&u, &f, sizeof(u));
                                for (int k = 0; k < 4; k++)     /* little endian, as the clients expect */
                                        raw[d * 4 + k] = (unsigned char) (u >> (8 * k));
                        }
                        buf_put_base64(b, raw, (size_t) dims * 4);
                } else
                        for (int64_t d = 0; d < dims; d++) {
                                float f = (float) (splitmix64(seed + (uint64_t) d) >> 40) / 16777216.0f * 2.0f - 1.0f;
                                buf_printf(b, "%s%.9g", d > 0 ? "," : "", (double) f);
                        }
                buf_puts(b, base64 ? "\"}" : "]}");
        }
        buf_done(&key);
        buf_puts(b, "],\"model\":");
        buf_put_json_cstr(b, model);
        buf_printf(b, ",\"usage\":{\"prompt_tokens\":%" PRIu64 ",\"total_tokens\":%" PRIu64 "}}", tokens, tokens);
        resp_json(c, 200, b);
}

static void handle_stats(Conn *c) {
        Buf *b = scratch();

        buf_puts(b, "{\"name\":");
        buf_put_json_cstr(b, arg_name);
        buf_printf(b,
                   ",\"connections_accepted\":%" PRIu64 ",\"connections_open\":%" PRIu64
                   ",\"requests\":%" PRIu64 ",\"bad_requests\":%" PRIu64
                   ",\"streams_started\":%" PRIu64 ",\"streams_active\":%" PRIu64
                   ",\"streams_completed\":%" PRIu64 ",\"streams_cancelled\":%" PRIu64
                   ",\"streams_aborted\":%" PRIu64 ",\"chunks_generated\":%" PRIu64
                   ",\"chunks_written\":%" PRIu64 ",\"bytes_written\":%" PRIu64
                   ",\"write_stalls\":%" PRIu64 ",\"paused_now\":%" PRIu64
                   ",\"unsent_bytes\":%" PRIu64 ",\"max_unsent_bytes\":%" PRIu64 "}",
                   stats.connections_accepted, gauge_connections_open, stats.requests, stats.bad_requests,
                   stats.streams_started, gauge_streams_active, stats.streams_completed,
                   stats.streams_cancelled, stats.streams_aborted, stats.chunks_generated,
                   stats.chunks_written, stats.bytes_written, stats.write_stalls, gauge_paused,
                   gauge_unsent_bytes, stats.max_unsent_bytes);
        resp_json(c, 200, b);
}

static void handle_test_endpoint(Conn *c, const char *route) {
        bool get = streq(c->method, "GET") || c->is_head, post = streq(c->method, "POST");

        if (streq(route, "/_test/stats") && get)
                handle_stats(c);
        else if (streq(route, "/_test/reset") && post) {
                Buf *b = scratch();
                stats = (Stats) {};
                buf_puts(b, "{\"ok\":true}");
                resp_json(c, 200, b);
        } else if (streq(route, "/_test/last-request") && get) {
                if (buf_pending(&last_request) == 0)
                        resp_error(c, 404, "not_found_error", NULL, NULL, "No request yet.");
                else {
                        Buf *b = scratch();
                        buf_put(b, buf_head(&last_request), buf_pending(&last_request));
                        resp_json(c, 200, b);
                }
        } else if (streq(route, "/_test/stats") || streq(route, "/_test/reset") || streq(route, "/_test/last-request"))
                resp_error(c, 405, "invalid_request_error", NULL, NULL, "Method %s not allowed on %s.", c->method, route);
        else
                resp_error(c, 404, "invalid_request_error", "unknown_url", NULL, "Unknown test endpoint %s.", route);
}

/* Returns false and queues an answer if the request lacks the --api-key. */
static bool request_authorized(Conn *c) {
        const char *auth, *token;
        size_t a, b;
        unsigned char diff;

        if (!arg_api_key)
                return true;
        auth = header_get(c, "Authorization");
        token = auth ? startswith_no_case(auth, "Bearer ") : NULL;
        if (!token) {
                resp_error(c, 401, "invalid_request_error", NULL, NULL,
                           "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth.");
                return false;
        }
        while (*token == ' ')
                token++;
        a = strlen(token);
        b = strlen(arg_api_key);
        diff = a != b;
        for (size_t i = 0; i < MIN(a, b); i++)
                diff |= (unsigned char) (token[i] ^ arg_api_key[i]);
        if (diff) {
                resp_error(c, 401, "invalid_request_error", "invalid_api_key", NULL, "Incorrect API key provided.");
                return false;
        }
        return true;
}

static bool request_controls_from_headers(Conn *c) {
        for (size_t i = 0; i < c->n_headers; i++) {
                const ControlDef *d = NULL;
                int64_t *field;

                if (!startswith_no_case(c->headers[i].name, "X-Test-"))
                        continue;
                for (size_t j = 0; j < ELEMENTSOF(control_defs) && !d; j++)
                        if (strcasecmp(control_defs[j].header, c->headers[i].name) == 0)
                                d = &control_defs[j];
                if (!d) {
                        resp_error(c, 400, "invalid_request_error", "unknown_test_control", NULL,
                                   "Unknown test control header %s.", c->headers[i].name);
                        return false;
                }
                field = controls_field(&c->ctl, d);
                if (*field >= 0 || control_parse_string(d, c->headers[i].value, field) < 0) {
                        *field = -1;
                        resp_error(c, 400, "invalid_request_error", "invalid_test_control", NULL,
                                   "Invalid or repeated test control header %s.", d->header);
                        return false;
                }
        }
        return true;
}

/* Merge the body's "club_test" object into c->ctl; header values win. */
static bool request_controls_from_json(Conn *c, struct json_object *root) {
        struct json_object *obj = jget(root, "club_test");

        if (!obj)
                return true;
        if (!json_object_is_type(obj, json_type_object)) {
                resp_bad_request(c, "'club_test' must be an object.");
                return false;
        }
        json_object_object_foreach(obj, key, val) {
                const ControlDef *d = NULL;
                int64_t v;

                for (size_t j = 0; j < ELEMENTSOF(control_defs) && !d; j++)
                        if (streq(control_defs[j].key, key))
                                d = &control_defs[j];
                if (!d || !val || control_parse_json(d, val, &v) < 0) {
                        resp_error(c, 400, "invalid_request_error", "invalid_test_control", "club_test",
                                   "Unknown or invalid test control club_test.%s.", key);
                        return false;
                }
                if (*controls_field(&c->ctl, d) < 0)
                        *controls_field(&c->ctl, d) = v;
        }
        return true;
}

/* X-Test-Status (>= 300) and X-Test-Echo. Returns true if the response is decided. */
static bool request_apply_controls(Conn *c) {
        if (c->ctl.status >= 0 && c->ctl.status < 100) {
                resp_bad_request(c, "X-Test-Status must be between 100 and 599.");
                return true;
        }
        if (c->ctl.status >= 300) {
                int status = (int) c->ctl.status;
                resp_error(c, status, error_type_for_status(status), "club_test_status", NULL,
                           "club-test-upstream %s: forced status %d.", arg_name, status);
                return true;
        }
        if (c->ctl.echo == 1) {
                Buf *b = scratch();
                echo_build(c, b);
                resp_json(c, 200, b);
                return true;
        }
        return false;
}

static struct json_object *body_parse(Conn *c) {
        struct json_tokener *tok;
        struct json_object *root;
        size_t n = buf_pending(&c->body), end;
        const char *p = buf_head(&c->body);

        if (n == 0 || n > INT_MAX)
                return NULL;
        tok = json_tokener_new_ex(JSON_DEPTH_MAX);
        if (!tok)
                return NULL;
        root = json_tokener_parse_ex(tok, p, (int) n);
        if (!root || json_tokener_get_error(tok) != json_tokener_success) {
                json_object_put(root);
                json_tokener_free(tok);
                return NULL;
        }
        end = json_tokener_get_parse_end(tok);
        json_tokener_free(tok);
        for (; end < n; end++)
                if (!isspace((unsigned char) p[end])) {
                        json_object_put(root);
                        return NULL;
                }
        if (!json_object_is_type(root, json_type_object)) {
                json_object_put(root);
                return NULL;
        }
        return root;
}

static void conn_dispatch(Conn *c) {
        const char *route = c->path, *rest;
        bool get = streq(c->method, "GET") || c->is_head, post = streq(c->method, "POST");
        struct json_object *root = NULL;
        bool json_route;

        c->request_active = true;
        c->started = now_usec();

        /* Tolerate callers without the /v1 base path. */
        if ((rest = startswith(route, "/v1")) && (*rest == '/' || *rest == '\0'))
                route = *rest ? rest : "/";

        if (startswith(route, "/_test/")) {
                c->is_test = true;
                handle_test_endpoint(c, route);
                goto respond;
        }

        stats.requests++;
        request_seq++;
        buf_clear(&last_request);
        echo_build(c, &last_request);
        if (last_request.oom)
                buf_reset(&last_request, 0);

        if (!request_controls_from_headers(c) || !request_authorized(c) || request_apply_controls(c))
                goto respond;

        json_route = streq(route, "/chat/completions") || streq(route, "/completions") || streq(route, "/embeddings");
        if (json_route && post) {
                root = body_parse(c);
                if (!root) {
                        resp_bad_request(c, "We could not parse the JSON body of your request. The body must be a JSON object.");
                        goto respond;
                }
                if (!request_controls_from_json(c, root) || request_apply_controls(c))
                        goto respond;
        }

        if (json_route && !post)
                resp_error(c, 405, "invalid_request_error", NULL, NULL, "Method %s not allowed on %s; use POST.",
                           c->method, c->path);
        else if (streq(route, "/chat/completions"))
                handle_completion(c, root, true);
        else if (streq(route, "/completions"))
                handle_completion(c, root, false);
        else if (streq(route, "/embeddings"))
                handle_embeddings(c, root);
        else if (streq(route, "/models") && get)
                handle_models(c);
        else if ((rest = startswith(route, "/models/")) && *rest && get)
                handle_model(c, rest);
        else if (streq(route, "/health") && get) {
                Buf *b = scratch();
                buf_puts(b, "{\"status\":\"ok\"}");
                resp_json(c, 200, b);
        } else if (arg_ollama && streq(c->path, "/api/tags") && get)
                handle_ollama_tags(c);
        else if (arg_ollama && streq(c->path, "/api/version") && get) {
                Buf *b = scratch();
                buf_puts(b, "{\"version\":\"0.0.0-club-test\"}");
                resp_json(c, 200, b);
        } else if (arg_ollama && streq(c->path, "/") && get) {
                Buf *b = scratch();
                buf_puts(b, "Ollama is running");
                resp_build(c, 200, "text/plain; charset=utf-8", b, NULL);
        } else if (streq(route, "/models") || startswith(route, "/models/") || streq(route, "/health"))
                resp_error(c, 405, "invalid_request_error", NULL, NULL, "Method %s not allowed on %s.",
                           c->method, c->path);
        else
                resp_error(c, 404, "invalid_request_error", "unknown_url", NULL, "Invalid URL (%s %s)",
                           c->method, c->path);

respond:
        json_object_put(root);
        if (c->resp.oom) {
                c->resp.oom = false;
                c->keep_alive = false;
                resp_error(c, 500, "server_error", NULL, NULL, "Out of memory.");
        }
        if (c->resp.oom) {
                c->dead = true;
                return;
        }
        if (c->ctl.die_mode == DIE_RST)
                c->die_mode = DIE_RST;
        c->first_byte_at = c->started +
                (!c->is_test && c->ctl.first_byte_delay_ms > 0 ? (usec_t) c->ctl.first_byte_delay_ms * USEC_PER_MSEC : 0);
        c->state = CONN_WAIT_FIRST_BYTE;
}

/* A malformed request: answer and close. */
static void conn_fail(Conn *c, int status, const char *message) {
        stats.bad_requests++;
        c->request_active = true;
        c->started = now_usec();
        c->keep_alive = false;
        c->ctl = CONTROLS_UNSET;
        resp_error(c, status, status == 500 ? "server_error" : "invalid_request_error", NULL, NULL, "%s", message);
        if (c->resp.oom) {
                c->dead = true;
                return;
        }
        c->first_byte_at = c->started;
        c->state = CONN_WAIT_FIRST_BYTE;
}

/* ---------------------------------------------------------------------------------------------- */
/* Request parsing */

static bool connection_has_token(const char *value, const char *token) {
        size_t l = strlen(token);

        for (const char *p = value; *p;) {
                const char *e;

                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                e = p;
                while (*e && *e != ',')
                        e++;
                while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                        e--;
                if ((size_t) (e - p) == l && strncasecmp(p, token, l) == 0)
                        return true;
                p = e;
                while (*p && *p != ',')
                        p++;
        }
        return false;
}

/* Parse the request head (ending in CRLFCRLF). Returns 0 or the HTTP status to fail with. */
static int conn_parse_head(Conn *c, const char *p, size_t n, const char **ret_msg) {
        char *s, *line, *next, *sp, *target_path;
        bool have_length = false, close_token = false, keep_alive_token = false;
        uint64_t length = 0;

        if (memchr(p, '\0', n)) {
                *ret_msg = "NUL byte in request head.";
                return 400;
        }
        c->head = strndup(p, n - 2);    /* keep one CRLF: every line ends in one */
        if (!c->head) {
                *ret_msg = "Out of memory.";
                return 500;
        }

        /* request line */
        s = c->head;
        next = strstr(s, "\r\n");
        *next = '\0';
        next += 2;
        line = s;
        sp = strchr(line, ' ');
        if (!sp || sp == line || sp - line > 32) {
                *ret_msg = "Malformed request line.";
                return 400;
        }
        *sp = '\0';
        c->method = line;
        for (const char *q = c->method; *q; q++)
                if (!is_tchar(*q)) {
                        *ret_msg = "Malformed request method.";
                        return 400;
                }
        c->target = sp + 1;
        sp = strchr(c->target, ' ');
        if (!sp || sp == c->target) {
                *ret_msg = "Malformed request line.";
                return 400;
        }
        *sp = '\0';
        for (const char *q = c->target; *q; q++)
                if (*q <= 0x20 || *q >= 0x7f) {
                        *ret_msg = "Malformed request target.";
                        return 400;
                }
        if (streq(sp + 1, "HTTP/1.1"))
                c->minor = 1;
        else if (streq(sp + 1, "HTTP/1.0"))
                c->minor = 0;
        else if (startswith(sp + 1, "HTTP/")) {
                *ret_msg = "Only HTTP/1.0 and HTTP/1.1 are supported.";
                return 505;
        } else {
                *ret_msg = "Malformed HTTP version.";
                return 400;
        }
        c->keep_alive = c->minor >= 1;
        c->is_head = streq(c->method, "HEAD");

        /* origin-form, or absolute-form as a forward proxy might send */
        target_path = (char *) c->target;
        if (*target_path != '/') {
                const char *scheme = startswith_no_case(target_path, "http://") ?: startswith_no_case(target_path, "https://");
                if (!scheme) {
                        *ret_msg = "Malformed request target.";
                        return 400;
                }
                target_path = strchr(scheme, '/') ?: (char *) "/";
        }
        c->path = strndup(target_path, strcspn(target_path, "?#"));
        if (!c->path) {
                *ret_msg = "Out of memory.";
                return 500;
        }
        if (!*c->path) {
                free(c->path);
                c->path = strdup("/");
                if (!c->path) {
                        *ret_msg = "Out of memory.";
                        return 500;
                }
        }

        /* header fields */
        for (line = next; *line; line = next) {
                char *colon, *value, *end;

                next = strstr(line, "\r\n");
                *next = '\0';
                next += 2;

                if (*line == ' ' || *line == '\t') {
                        *ret_msg = "Obsolete line folding is not allowed.";
                        return 400;
                }
                colon = strchr(line, ':');
                if (!colon || colon == line) {
                        *ret_msg = "Malformed header field.";
                        return 400;
                }
                *colon = '\0';
                for (const char *q = line; *q; q++)
                        if (!is_tchar(*q)) {
                                *ret_msg = "Malformed header field name.";
                                return 400;
                        }
                value = colon + 1;
                while (*value == ' ' || *value == '\t')
                        value++;
                end = value + strlen(value);
                while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
                        end--;
                *end = '\0';
                for (const char *q = value; *q; q++)
                        if ((unsigned char) *q < 0x20 && *q != '\t') {
                                *ret_msg = "Control character in header field value.";
                                return 400;
                        }
                if (c->n_headers >= HEADERS_MAX) {
                        *ret_msg = "Too many header fields.";
                        return 431;
                }
                c->headers[c->n_headers++] = (Header) { .name = line, .value = value };

                if (strcasecmp(line, "Content-Length") == 0) {
                        uint64_t v;

                        if (parse_u64(value, UINT64_MAX / 2, &v) < 0 || (have_length && v != length)) {
                                *ret_msg = "Invalid Content-Length.";
                                return 400;
                        }
                        have_length = true;
                        length = v;
                } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
                        if (c->req_chunked || strcasecmp(value, "chunked") != 0) {
                                *ret_msg = "Only Transfer-Encoding: chunked is supported.";
                                return c->req_chunked ? 400 : 501;
                        }
                        c->req_chunked = true;
                } else if (strcasecmp(line, "Connection") == 0) {
                        close_token = close_token || connection_has_token(value, "close");
                        keep_alive_token = keep_alive_token || connection_has_token(value, "keep-alive");
                } else if (strcasecmp(line, "Expect") == 0) {
                        if (strcasecmp(value, "100-continue") != 0) {
                                *ret_msg = "Unsupported expectation.";
                                return 417;
                        }
                        c->expect_continue = true;
                }
        }

        if (have_length && c->req_chunked) {
                *ret_msg = "Content-Length and Transfer-Encoding together.";
                return 400;
        }
        if (c->req_chunked && c->minor == 0) {
                *ret_msg = "Transfer-Encoding in an HTTP/1.0 request.";
                return 400;
        }
        if (close_token)
                c->keep_alive = false;
        else if (keep_alive_token && c->minor == 0)
                c->keep_alive = true;

        if (length > arg_max_body) {
                *ret_msg = "Request body too large.";
                return 413;
        }
        c->body_left = length;
        if (length > 0 && !buf_reserve(&c->body, (size_t) length)) {
                *ret_msg = "Out of memory.";
                return 500;
        }
        return 0;
}

/* Returns 1 when the body is complete, 0 when more input is needed, or the HTTP status to fail with. */
static int conn_decode_chunked(Conn *c, const char **ret_msg) {
        for (;;) {
                const char *p = buf_head(&c->in), *eol;
                size_t n = buf_pending(&c->in), take;
                uint64_t size = 0;
                const char *q;

                switch (c->chunk_state) {
                case CHUNK_SIZE:
                        eol = n >= 2 ? memmem(p, MIN(n, (size_t) CHUNK_LINE_MAX), "\r\n", 2) : NULL;
                        if (!eol) {
                                *ret_msg = "Malformed chunk size line.";
                                return n >= CHUNK_LINE_MAX ? 400 : 0;
                        }
                        for (q = p; q < eol && hexval(*q) >= 0; q++) {
                                if (size > (UINT64_MAX >> 4)) {
                                        *ret_msg = "Request body too large.";
                                        return 413;
                                }
                                size = size << 4 | (uint64_t) hexval(*q);
                        }
                        if (q == p || (q < eol && *q != ';' && *q != ' ' && *q != '\t')) {
                                *ret_msg = "Malformed chunk size line.";
                                return 400;
                        }
                        if (size > arg_max_body - buf_pending(&c->body)) {
                                *ret_msg = "Request body too large.";
                                return 413;
                        }
                        buf_consume(&c->in, (size_t) (eol - p) + 2);
                        c->chunk_left = size;
                        c->chunk_state = size == 0 ? CHUNK_TRAILER : CHUNK_DATA;
                        break;

                case CHUNK_DATA:
                        take = (size_t) MIN((uint64_t) n, c->chunk_left);
                        if (take == 0)
                                return 0;
                        buf_put(&c->body, p, take);
                        if (c->body.oom) {
                                *ret_msg = "Out of memory.";
                                return 500;
                        }
                        buf_consume(&c->in, take);
                        c->chunk_left -= take;
                        if (c->chunk_left == 0)
                                c->chunk_state = CHUNK_DATA_END;
                        break;

                case CHUNK_DATA_END:
                        if (n < 2)
                                return 0;
                        if (p[0] != '\r' || p[1] != '\n') {
                                *ret_msg = "Chunk data not followed by CRLF.";
                                return 400;
                        }
                        buf_consume(&c->in, 2);
                        c->chunk_state = CHUNK_SIZE;
                        break;

                case CHUNK_TRAILER:
                        eol = n >= 2 ? memmem(p, MIN(n, (size_t) CHUNK_LINE_MAX), "\r\n", 2) : NULL;
                        if (!eol) {
                                *ret_msg = "Malformed trailer.";
                                return n >= CHUNK_LINE_MAX ? 400 : 0;
                        }
                        c->trailer_bytes += (size_t) (eol - p) + 2;
                        buf_consume(&c->in, (size_t) (eol - p) + 2);
                        if (eol == p)
                                return 1;
                        if (c->trailer_bytes > TRAILERS_MAX) {
                                *ret_msg = "Trailers too large.";
                                return 431;
                        }
                        break;
                }
        }
}

/* Returns 1 if a request was dispatched or failed (state changed), 0 if more input is needed. */
static int conn_parse(Conn *c) {
        const char *msg = "Bad request.";
        int r;

        if (c->state == CONN_READ_HEAD) {
                const char *p, *end;
                size_t n;

                /* RFC 9112 2.2: ignore empty lines before a request line */
                while (buf_pending(&c->in) >= 2 && buf_head(&c->in)[0] == '\r' && buf_head(&c->in)[1] == '\n')
                        buf_consume(&c->in, 2);
                p = buf_head(&c->in);
                n = buf_pending(&c->in);
                end = n >= 4 ? memmem(p, MIN(n, (size_t) HEAD_MAX), "\r\n\r\n", 4) : NULL;
                if (!end) {
                        if (n >= HEAD_MAX) {
                                conn_fail(c, 431, "Request head larger than 16 KiB.");
                                return 1;
                        }
                        return 0;
                }
                r = conn_parse_head(c, p, (size_t) (end - p) + 4, &msg);
                buf_consume(&c->in, (size_t) (end - p) + 4);
                if (r != 0) {
                        conn_fail(c, r, msg);
                        return 1;
                }
                c->state = CONN_READ_BODY;
                if (c->expect_continue && (c->req_chunked || c->body_left > 0)) {
                        buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                        conn_flush(c);
                }
        }

        if (c->req_chunked) {
                r = conn_decode_chunked(c, &msg);
                if (r == 0)
                        return 0;
                if (r != 1) {
                        conn_fail(c, r, msg);
                        return 1;
                }
        } else if (c->body_left > 0) {
                size_t take = (size_t) MIN((uint64_t) buf_pending(&c->in), c->body_left);

                buf_put(&c->body, buf_head(&c->in), take);
                buf_consume(&c->in, take);
                c->body_left -= take;
                if (c->body.oom) {
                        conn_fail(c, 500, "Out of memory.");
                        return 1;
                }
                if (c->body_left > 0)
                        return 0;
        }

        conn_dispatch(c);
        return 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* The state machine */

static void conn_read(Conn *c) {
        for (unsigned i = 0; i < READS_PER_WAKEUP && !c->peer_closed; i++) {
                ssize_t n = recv(c->fd, read_buf, sizeof(read_buf), 0);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                                c->dead = true;
                        return;
                }
                if (n == 0) {
                        c->peer_closed = true;
                        return;
                }
                buf_put(&c->in, read_buf, (size_t) n);
                if (c->in.oom) {
                        c->dead = true;
                        return;
                }
                if ((size_t) n < sizeof(read_buf))
                        return;
        }
}

static void conn_discard_input(Conn *c) {
        for (unsigned i = 0; i < READS_PER_WAKEUP; i++) {
                ssize_t n = recv(c->fd, read_buf, sizeof(read_buf), 0);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                if (n <= 0) {
                        c->dead = true;
                        return;
                }
        }
}

/* Advance as far as possible without waiting; frees c when it is done. */
static void conn_run(Conn *c) {
        for (;;) {
                usec_t now;

                if (c->dead) {
                        conn_free(c);
                        return;
                }

                switch (c->state) {
                case CONN_READ_HEAD:
                case CONN_READ_BODY:
                        if (conn_parse(c) > 0)
                                continue;
                        if (c->peer_closed) {
                                c->dead = true;
                                continue;
                        }
                        conn_update_events(c);
                        if (c->dead)
                                continue;
                        return;

                case CONN_WAIT_FIRST_BYTE:
                        now = now_usec();
                        if (now < c->first_byte_at) {
                                timer_set(c, c->first_byte_at);
                                conn_update_events(c);
                                if (c->dead)
                                        continue;
                                return;
                        }
                        buf_put(&c->out, buf_head(&c->resp), buf_pending(&c->resp));
                        buf_reset(&c->resp, SCRATCH_KEEP);
                        if (c->out.oom) {
                                c->dead = true;
                                continue;
                        }
                        c->state = c->streaming ? CONN_STREAM : CONN_SEND;
                        conn_flush(c);
                        continue;

                case CONN_SEND:
                        if (buf_pending(&c->out) > 0)
                                return;
                        if (c->die_after_send)
                                conn_die(c);
                        else
                                conn_request_done(c);
                        continue;

                case CONN_STREAM: {
                        Stream *s = &c->stream;
                        Buf *ev = &scratch_event;

                        if (buf_pending(&c->out) > 0)
                                return;         /* paused until the socket is writable */

                        if (s->die_after != DIE_NEVER && s->next >= MIN(s->die_after, s->n_chunks)) {
                                conn_die(c);
                                continue;
                        }

                        now = now_usec();
                        buf_reset(ev, SCRATCH_KEEP);
                        if (s->next < s->n_chunks) {
                                if (s->next > 0 && now < s->due) {
                                        timer_set(c, s->due);
                                        return;
                                }
                                stream_make_chunk(c, ev);
                                s->next++;
                                s->due = now + s->delay;
                                stats.chunks_generated++;
                                c->event_pending = true;
                                stream_put_event(c, ev, false);
                        } else if (s->include_usage && !s->usage_sent) {
                                buf_puts(ev, "data: ");
                                buf_puts(ev, s->prefix);
                                buf_puts(ev, ",\"choices\":[],");
                                put_usage(ev, s->prompt_tokens, s->n_chunks);
                                buf_puts(ev, "}\n\n");
                                s->usage_sent = true;
                                stream_put_event(c, ev, false);
                        } else if (!s->done_sent) {
                                buf_puts(ev, "data: [DONE]\n\n");
                                s->done_sent = true;
                                stream_put_event(c, ev, true);
                        } else {
                                stream_end(c, &stats.streams_completed);
                                conn_request_done(c);
                                continue;
                        }
                        if (ev->oom || c->out.oom) {
                                c->dead = true;
                                continue;
                        }
                        conn_flush(c);
                        continue;
                }

                case CONN_LINGER:
                        return;

                case CONN_RESET_WAIT: {
                        int queued = 0;

                        now = now_usec();
                        if (ioctl(c->fd, SIOCOUTQ, &queued) == 0 && queued > 0 && now < c->rst_wait_until) {
                                timer_set(c, now + RST_WAIT_STEP_USEC);
                                return;
                        }
                        (void) setsockopt(c->fd, SOL_SOCKET, SO_LINGER,
                                          &(struct linger) { .l_onoff = 1, .l_linger = 0 }, sizeof(struct linger));
                        c->dead = true;
                        continue;
                }
                }
        }
}

static void conn_on_event(Conn *c, uint32_t events) {
        if (events & (EPOLLERR | EPOLLHUP)) {
                c->dead = true;
                conn_run(c);
                return;
        }

        switch (c->state) {
        case CONN_READ_HEAD:
        case CONN_READ_BODY:
                if (events & (EPOLLIN | EPOLLRDHUP))
                        conn_read(c);
                if ((events & EPOLLOUT) && !c->dead)
                        conn_flush(c);
                break;

        case CONN_LINGER:
                conn_discard_input(c);
                break;

        default:
                if ((events & EPOLLRDHUP) && !c->peer_closed) {
                        /* The client went away (or half-closed) while we answer. A stream is
                         * cancelled; a plain response is still sent, as to `nc -N`. */
                        if (c->streaming || c->state == CONN_RESET_WAIT)
                                c->dead = true;
                        else {
                                c->peer_closed = true;
                                conn_update_events(c);
                        }
                }
                if ((events & EPOLLOUT) && !c->dead)
                        conn_flush(c);
                break;
        }
        conn_run(c);
}

static void conn_on_timer(Conn *c) {
        if (c->state == CONN_LINGER)
                c->dead = true;
        conn_run(c);
}

static void on_listen(void) {
        while (gauge_connections_open < arg_max_connections) {
                struct sockaddr_storage sa;
                socklen_t salen = sizeof(sa);
                int fd;

                fd = accept4(listen_fd, (struct sockaddr *) &sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EINTR || errno == ECONNABORTED)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return;
                        /* EMFILE, ENFILE, ENOBUFS, ENOMEM: back off for a moment */
                        if (arg_verbose)
                                fprintf(stderr, "%s: accept() failed: %s; pausing\n", arg_name, strerror(errno));
                        listener_set(false);
                        accept_retry_at = now_usec() + ACCEPT_RETRY_USEC;
                        return;
                }
                conn_new(fd, (struct sockaddr *) &sa, salen);
        }
        listener_set(false);    /* at --max-connections: the kernel backlog holds the rest */
}

/* ---------------------------------------------------------------------------------------------- */
/* Setup */

static void usage(void) {
        printf("Usage: club-test-upstream [OPTIONS]\n"
               "\n"
               "A deterministic OpenAI-compatible HTTP/1.1 server for tests and benchmarks.\n"
               "\n"
               "  --listen ADDR:PORT      listen there ([v6]:port for IPv6); prints PORT=N on stdout\n"
               "  --port N                listen on 127.0.0.1:N (0: an ephemeral port; the default)\n"
               "  --models a,b,c          model ids served (default: test-model)\n"
               "  --name NAME             upstream name used in responses (default: test-upstream)\n"
               "  --api-key KEY           require \"Authorization: Bearer KEY\"\n"
               "  --ollama                also serve Ollama's GET /api/tags, /api/version and /\n"
               "  --max-connections N     concurrent connections (default %u)\n"
               "  --max-body-size BYTES   request body limit (default %llu)\n"
               "  --verbose               one line per request on stderr\n"
               "  --help\n"
               "\n"
               "Endpoints (also without the /v1 prefix): GET /v1/models, GET /v1/models/ID,\n"
               "POST /v1/chat/completions, /v1/completions, /v1/embeddings, GET /health,\n"
               "GET /_test/stats, POST /_test/reset, GET /_test/last-request.\n"
               "\n"
               "Test controls (headers; or the body's \"club_test\" object, keys in brackets):\n"
               "  X-Test-Chunks [chunks]                       content chunks (default 5)\n"
               "  X-Test-Chunk-Delay-Ms [chunk_delay_ms]       gap between chunks\n"
               "  X-Test-First-Byte-Delay-Ms [first_byte_delay_ms]  before the response head\n"
               "  X-Test-Die-After [die_after]                 stream: close after N chunks;\n"
               "                                               plain: close after N body bytes\n"
               "  X-Test-Die-Mode [die_mode]                   fin (default) or rst\n"
               "  X-Test-Chunk-Size [chunk_size]               pad each chunk's content to N bytes\n"
               "  X-Test-Response-Size [response_size]         pad a plain JSON body to N bytes\n"
               "  X-Test-Status [status]                       answer with this status (>= 300)\n"
               "  X-Test-Echo [echo]                           1: answer with what was received\n"
               "  X-Test-Chunked [chunked]                     1: chunked plain response;\n"
               "                                               0: EOF-delimited stream\n"
               "  X-Test-Reject-Stream-Options [reject_stream_options]\n"
               "                                               1: a completion with stream_options gets 400\n",
               MAX_CONNECTIONS_DEFAULT, (unsigned long long) BODY_MAX_DEFAULT);
}

static int parse_models(const char *s) {
        char *copy = strdup(s), *save = NULL;
        size_t n = 0;

        if (!copy)
                return -ENOMEM;
        for (const char *p = s; *p; p++)
                n += *p == ',';
        arg_models = calloc(n + 2, sizeof(char *));
        if (!arg_models) {
                free(copy);
                return -ENOMEM;
        }
        for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                while (*tok == ' ')
                        tok++;
                for (char *e = tok + strlen(tok); e > tok && e[-1] == ' '; )
                        *--e = '\0';
                if (!*tok)
                        continue;
                if (!name_is_valid(tok)) {
                        free(copy);
                        return -EINVAL;
                }
                arg_models[arg_n_models] = strdup(tok);
                if (!arg_models[arg_n_models]) {
                        free(copy);
                        return -ENOMEM;
                }
                arg_n_models++;
        }
        free(copy);
        return arg_n_models > 0 ? 0 : -EINVAL;
}

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_LISTEN = 0x100,
                ARG_PORT,
                ARG_MODELS,
                ARG_NAME,
                ARG_API_KEY,
                ARG_OLLAMA,
                ARG_MAX_CONNECTIONS,
                ARG_MAX_BODY_SIZE,
                ARG_VERBOSE,
        };
        static const struct option options[] = {
                { "listen",          required_argument, NULL, ARG_LISTEN },
                { "port",            required_argument, NULL, ARG_PORT },
                { "models",          required_argument, NULL, ARG_MODELS },
                { "name",            required_argument, NULL, ARG_NAME },
                { "api-key",         required_argument, NULL, ARG_API_KEY },
                { "ollama",          no_argument,       NULL, ARG_OLLAMA },
                { "max-connections", required_argument, NULL, ARG_MAX_CONNECTIONS },
                { "max-body-size",   required_argument, NULL, ARG_MAX_BODY_SIZE },
                { "verbose",         no_argument,       NULL, ARG_VERBOSE },
                { "help",            no_argument,       NULL, 'h' },
                {}
        };
        static char port_listen[32];
        uint64_t v;
        int opt;

        while ((opt = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (opt) {
                case ARG_LISTEN:
                        arg_listen = optarg;
                        break;
                case ARG_PORT:
                        if (parse_u64(optarg, 65535, &v) < 0) {
                                fprintf(stderr, "Invalid --port: %s\n", optarg);
                                return -EINVAL;
                        }
                        snprintf(port_listen, sizeof(port_listen), "127.0.0.1:%" PRIu64, v);
                        arg_listen = port_listen;
                        break;
                case ARG_MODELS:
                        if (arg_models) {
                                fprintf(stderr, "--models given twice\n");
                                return -EINVAL;
                        }
                        if (parse_models(optarg) < 0) {
                                fprintf(stderr, "Invalid --models: %s\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_NAME:
                        if (!name_is_valid(optarg)) {
                                fprintf(stderr, "Invalid --name: %s\n", optarg);
                                return -EINVAL;
                        }
                        arg_name = optarg;
                        break;
                case ARG_API_KEY:
                        free(arg_api_key);
                        arg_api_key = strdup(optarg);
                        if (!arg_api_key || !*arg_api_key || !name_is_valid(arg_api_key)) {
                                fprintf(stderr, "Invalid --api-key\n");
                                return -EINVAL;
                        }
                        break;
                case ARG_OLLAMA:
                        arg_ollama = true;
                        break;
                case ARG_MAX_CONNECTIONS:
                        if (parse_u64(optarg, 1000000, &v) < 0 || v == 0) {
                                fprintf(stderr, "Invalid --max-connections: %s\n", optarg);
                                return -EINVAL;
                        }
                        arg_max_connections = (size_t) v;
                        break;
                case ARG_MAX_BODY_SIZE:
                        if (parse_u64(optarg, BODY_MAX_LIMIT, &v) < 0) {
                                fprintf(stderr, "Invalid --max-body-size: %s\n", optarg);
                                return -EINVAL;
                        }
                        arg_max_body = v;
                        break;
                case ARG_VERBOSE:
                        arg_verbose = true;
                        break;
                case 'h':
                        usage();
                        return 0;
                default:
                        return -EINVAL;
                }

        if (optind < argc) {
                fprintf(stderr, "Unexpected argument: %s\n", argv[optind]);
                return -EINVAL;
        }
        if (!arg_listen)
                arg_listen = "127.0.0.1:0";
        if (!arg_models && parse_models("test-model") < 0)
                return -ENOMEM;
        return 1;
}

static int listen_open(const char *spec) {
        struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
        struct addrinfo *ai = NULL;
        char host[256], *port;
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        unsigned short bound;
        int fd, r, one = 1;

        if (strlen(spec) >= sizeof(host))
                return -EINVAL;
        strcpy(host, spec);
        if (host[0] == '[') {
                char *close_bracket = strchr(host, ']');
                if (!close_bracket || close_bracket[1] != ':')
                        return -EINVAL;
                *close_bracket = '\0';
                port = close_bracket + 2;
                memmove(host, host + 1, strlen(host));
        } else {
                port = strrchr(host, ':');
                if (!port)
                        return -EINVAL;
                *port++ = '\0';
        }
        r = getaddrinfo(*host ? host : NULL, port, &hints, &ai);
        if (r != 0) {
                fprintf(stderr, "Cannot resolve %s: %s\n", spec, gai_strerror(r));
                return -EINVAL;
        }

        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(ai);
                return r;
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0 ||
            getsockname(fd, (struct sockaddr *) &sa, &salen) < 0) {
                r = -errno;
                freeaddrinfo(ai);
                close(fd);
                return r;
        }
        freeaddrinfo(ai);

        bound = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &sa)->sin6_port
                                                : ((struct sockaddr_in *) &sa)->sin_port);
        printf("PORT=%u\n", bound);
        fflush(stdout);
        if (arg_verbose)
                fprintf(stderr, "%s: listening on %s (port %u)\n", arg_name, spec, bound);
        return fd;
}

static void raise_fd_limit(void) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
}

int main(int argc, char *argv[]) {
        struct epoll_event ev, events[256];
        sigset_t mask;
        bool quit = false;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        raise_fd_limit();
        signal(SIGPIPE, SIG_IGN);
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        heap = calloc(arg_max_connections, sizeof(Conn *));
        if (!heap) {
                fprintf(stderr, "Out of memory\n");
                return 1;
        }

        epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (epoll_fd < 0 || signal_fd < 0) {
                perror("epoll/signalfd");
                return 1;
        }
        listen_fd = listen_open(arg_listen);
        if (listen_fd < 0) {
                fprintf(stderr, "Cannot listen on %s: %s\n", arg_listen, strerror(-listen_fd));
                return 1;
        }

        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &tag_listen };
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) < 0) {
                perror("epoll_ctl");
                return 1;
        }
        listener_enabled = true;
        ev = (struct epoll_event) { .events = EPOLLIN, .data.ptr = &tag_signal };
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, signal_fd, &ev) < 0) {
                perror("epoll_ctl");
                return 1;
        }

        while (!quit) {
                usec_t now = now_usec(), next = UINT64_MAX;
                int timeout = -1, n;

                if (heap_n > 0)
                        next = heap[0]->deadline;
                if (!listener_enabled && accept_retry_at > 0)
                        next = MIN(next, accept_retry_at);
                if (next != UINT64_MAX)
                        timeout = next <= now ? 0 : (int) MIN((next - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC, (usec_t) INT_MAX);

                n = epoll_wait(epoll_fd, events, (int) ELEMENTSOF(events), timeout);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        perror("epoll_wait");
                        return 1;
                }

                for (int i = 0; i < n; i++) {
                        if (events[i].data.ptr == &tag_signal) {
                                struct signalfd_siginfo si;
                                if (read(signal_fd, &si, sizeof(si)) == (ssize_t) sizeof(si))
                                        quit = true;
                        } else if (events[i].data.ptr == &tag_listen)
                                on_listen();
                        else
                                conn_on_event(events[i].data.ptr, events[i].events);
                }

                now = now_usec();
                while (heap_n > 0 && heap[0]->deadline <= now) {
                        Conn *c = heap[0];

                        timer_clear(c);
                        conn_on_timer(c);
                }

                if (!listener_enabled && gauge_connections_open < arg_max_connections &&
                    (accept_retry_at == 0 || now >= accept_retry_at)) {
                        accept_retry_at = 0;
                        listener_set(true);
                }
        }

        if (arg_verbose)
                fprintf(stderr, "%s: terminating\n", arg_name);
        while (conns)
                conn_free(conns);
        close(listen_fd);
        close(signal_fd);
        close(epoll_fd);
        free(heap);
        buf_done(&scratch_body);
        buf_done(&scratch_event);
        buf_done(&last_request);
        for (size_t i = 0; i < arg_n_models; i++)
                free(arg_models[i]);
        free(arg_models);
        free(arg_api_key);
        return 0;
}
