/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include "log.h"
#include "macro.h"
#include "parse-util.h"
#include "wg-uapi.h"

static bool str_in_list(const char *s, const char *const *list) {
        for (; *list; list++)
                if (streq(s, *list))
                        return true;
        return false;
}
#define STR_IN_SET(s, ...) str_in_list((s), (const char *const[]) { __VA_ARGS__, NULL })

/*
 * A growable buffer for text that may hold keys: growing copies into a new
 * allocation and wipes the old one, so no stale copy is left on the heap.
 */
typedef struct SecretBuffer {
        char *data;
        size_t len;
        size_t allocated;
} SecretBuffer;

static void secret_buffer_done(SecretBuffer *b) {
        if (b->data) {
                explicit_bzero(b->data, b->allocated);
                free(b->data);
        }
        *b = (SecretBuffer) {};
}

static int secret_buffer_reserve(SecretBuffer *b, size_t add) {
        size_t need, na;
        char *n;

        if (add > SIZE_MAX - b->len - 1)
                return -ENOMEM;
        need = b->len + add + 1;
        if (need <= b->allocated)
                return 0;
        na = MAX(need, MAX(b->allocated * 2, (size_t) 4096));
        n = malloc(na);
        if (!n)
                return -ENOMEM;
        if (b->data) {
                memcpy(n, b->data, b->len);
                explicit_bzero(b->data, b->allocated);
                free(b->data);
        }
        n[b->len] = 0;
        b->data = n;
        b->allocated = na;
        return 0;
}

static int secret_buffer_append(SecretBuffer *b, const char *s) {
        size_t l = strlen(s);
        int r;

        r = secret_buffer_reserve(b, l);
        if (r < 0)
                return r;
        memcpy(b->data + b->len, s, l + 1);
        b->len += l;
        return 0;
}

static int secret_buffer_printf(SecretBuffer *b, const char *fmt, ...) _printf_(2, 3);
static int secret_buffer_printf(SecretBuffer *b, const char *fmt, ...) {
        char line[256];   /* every line we format is short: a key, a number or an address */
        va_list ap;
        int n, r;

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof line) {
                explicit_bzero(line, sizeof line);
                return -EINVAL;
        }
        r = secret_buffer_append(b, line);
        explicit_bzero(line, sizeof line);
        return r;
}

/* ---- formatting a set request --------------------------------------------------- */

int wg_uapi_format_set(const WgDevice *change, char **ret, size_t *ret_len) {
        SecretBuffer b = {};
        char hex[WG_KEY_HEX_SIZE];
        int r;

        assert(change && ret && ret_len);

#define APPENDF(...) do { r = secret_buffer_printf(&b, __VA_ARGS__); if (r < 0) goto fail; } while (0)

        APPENDF("set=1\n");
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_PRIVATE_KEY))
                APPENDF("private_key=%s\n", wg_key_to_hex(&change->private_key, hex));
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_LISTEN_PORT))
                APPENDF("listen_port=%u\n", change->listen_port);
        if (FLAGS_SET(change->flags, WG_DEVICE_HAS_FWMARK))
                APPENDF("fwmark=%" PRIu32 "\n", change->fwmark);
        if (FLAGS_SET(change->flags, WG_DEVICE_REPLACE_PEERS))
                APPENDF("replace_peers=true\n");

        for (size_t i = 0; i < change->n_peers; i++) {
                const WgPeer *p = change->peers[i];

                APPENDF("public_key=%s\n", wg_key_to_hex(&p->public_key, hex));
                if (FLAGS_SET(p->flags, WG_PEER_REMOVE)) {
                        APPENDF("remove=true\n");
                        continue;
                }
                /* wireguard-go creates the peer on the public_key line; update_only must come
                 * next to undo that for a peer that did not exist. */
                if (FLAGS_SET(p->flags, WG_PEER_UPDATE_ONLY))
                        APPENDF("update_only=true\n");
                if (FLAGS_SET(p->flags, WG_PEER_HAS_PRESHARED_KEY))
                        APPENDF("preshared_key=%s\n", wg_key_to_hex(&p->preshared_key, hex));
                if (FLAGS_SET(p->flags, WG_PEER_HAS_ENDPOINT)) {
                        char e[WG_ENDPOINT_STRLEN];

                        APPENDF("endpoint=%s\n", wg_endpoint_to_string(&p->endpoint, e));
                }
                if (FLAGS_SET(p->flags, WG_PEER_HAS_KEEPALIVE))
                        APPENDF("persistent_keepalive_interval=%u\n", p->persistent_keepalive);
                if (FLAGS_SET(p->flags, WG_PEER_REPLACE_ALLOWED_IPS))
                        APPENDF("replace_allowed_ips=true\n");
                for (size_t j = 0; j < p->n_allowed_ips; j++) {
                        char a[WG_IP_PREFIX_STRLEN];

                        APPENDF("allowed_ip=%s\n", wg_ip_prefix_to_string(&p->allowed_ips[j], a));
                }
        }
        APPENDF("\n");
#undef APPENDF

        explicit_bzero(hex, sizeof hex);
        *ret_len = b.len;
        *ret = b.data;          /* ownership moves; the caller wipes it */
        return 0;

fail:
        explicit_bzero(hex, sizeof hex);
        secret_buffer_done(&b);
        return r;
}

/* ---- parsing replies -------------------------------------------------------------- */

static int parse_errno_value(const char *v, int *ret) {
        uint64_t u;
        bool neg = false;

        if (*v == '-') {
                neg = true;
                v++;
        }
        if (parse_uint64(v, &u) < 0 || u > 4095 || (neg && u == 0))
                return -EBADMSG;
        *ret = (int) u;      /* wireguard-go says errno=-22, the protocol text errno=22: both mean EINVAL */
        return 0;
}

static int parse_u16(const char *v, uint16_t *ret) {
        uint64_t u;

        if (parse_uint64(v, &u) < 0 || u > UINT16_MAX)
                return -EBADMSG;
        *ret = (uint16_t) u;
        return 0;
}

static int parse_u32(const char *v, uint32_t *ret) {
        uint64_t u;

        if (parse_uint64(v, &u) < 0 || u > UINT32_MAX)
                return -EBADMSG;
        *ret = (uint32_t) u;
        return 0;
}

static int parse_bad(const char *what, const char *key) {
        return log_debug_errno(-EBADMSG, "Malformed UAPI reply: %s (key \"%s\").", what, key);
}

/* Handle one "key=value" line of a get reply. */
static int parse_get_line(WgDevice *d, WgPeer **peer, const char *key, char *value) {
        WgPeer *p = *peer;
        int r;

        if (streq(key, "public_key")) {
                WgKey k;

                if (wg_key_from_hex(value, strlen(value), &k) < 0)
                        return parse_bad("bad public key", key);
                r = wg_device_add_peer(d, &k, peer);
                return r == -ENOMEM || r == -E2BIG ? r : r < 0 ? -EBADMSG : 0;
        }

        if (!p) {
                /* Device keys. */
                if (streq(key, "private_key")) {
                        if (wg_key_from_hex(value, strlen(value), &d->private_key) < 0)
                                return parse_bad("bad private key", key);
                        if (!wg_key_is_zero(&d->private_key))
                                d->flags |= WG_DEVICE_HAS_PRIVATE_KEY;
                } else if (streq(key, "listen_port")) {
                        if (parse_u16(value, &d->listen_port) < 0)
                                return parse_bad("bad number", key);
                        d->flags |= WG_DEVICE_HAS_LISTEN_PORT;
                } else if (streq(key, "fwmark")) {
                        if (parse_u32(value, &d->fwmark) < 0)
                                return parse_bad("bad number", key);
                        d->flags |= WG_DEVICE_HAS_FWMARK;
                } else if (STR_IN_SET(key, "preshared_key", "endpoint", "allowed_ip", "persistent_keepalive_interval",
                                      "last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes",
                                      "protocol_version"))
                        return parse_bad("peer key before any public_key", key);
                else
                        log_debug("Ignoring unknown UAPI device key \"%s\".", key);
                return 0;
        }

        if (streq(key, "preshared_key")) {
                if (wg_key_from_hex(value, strlen(value), &p->preshared_key) < 0)
                        return parse_bad("bad preshared key", key);
                if (wg_key_is_zero(&p->preshared_key))
                        p->flags &= ~WG_PEER_HAS_PRESHARED_KEY;
                else
                        p->flags |= WG_PEER_HAS_PRESHARED_KEY;
        } else if (streq(key, "endpoint")) {
                WgEndpoint e;

                if (wg_endpoint_from_string(value, &e) < 0)
                        return parse_bad("bad endpoint", key);
                p->endpoint = e;
                p->flags |= WG_PEER_HAS_ENDPOINT;
        } else if (streq(key, "allowed_ip")) {
                WgAllowedIP ip;

                if (wg_ip_prefix_from_string(value, &ip) < 0 || !strchr(value, '/'))
                        return parse_bad("bad allowed IP", key);
                r = wg_peer_add_allowed_ip(p, &ip);
                if (r < 0)
                        return r == -EINVAL ? -EBADMSG : r;
        } else if (streq(key, "persistent_keepalive_interval")) {
                if (parse_u16(value, &p->persistent_keepalive) < 0)
                        return parse_bad("bad number", key);
                p->flags |= WG_PEER_HAS_KEEPALIVE;
        } else if (streq(key, "last_handshake_time_sec")) {
                uint64_t u;

                if (parse_uint64(value, &u) < 0 || u > INT64_MAX)
                        return parse_bad("bad number", key);
                p->last_handshake.tv_sec = (time_t) u;
        } else if (streq(key, "last_handshake_time_nsec")) {
                uint64_t u;

                if (parse_uint64(value, &u) < 0 || u >= 1000000000ULL)
                        return parse_bad("bad number", key);
                p->last_handshake.tv_nsec = (long) u;
        } else if (streq(key, "rx_bytes")) {
                if (parse_uint64(value, &p->rx_bytes) < 0)
                        return parse_bad("bad number", key);
        } else if (streq(key, "tx_bytes")) {
                if (parse_uint64(value, &p->tx_bytes) < 0)
                        return parse_bad("bad number", key);
        } else if (streq(key, "protocol_version")) {
                if (parse_u32(value, &p->protocol_version) < 0)
                        return parse_bad("bad number", key);
        } else if (STR_IN_SET(key, "private_key", "listen_port", "fwmark"))
                return parse_bad("device key after a peer", key);
        else
                log_debug("Ignoring unknown UAPI peer key \"%s\".", key);
        return 0;
}

/*
 * Walk the lines of a reply. Each line is "key=value\n"; the reply ends with
 * "errno=N\n" and an empty line, and nothing may follow. Calls handle() for every
 * other line (if handle is NULL, any other line is an error). Returns 0 with
 * *ret_errno set, or -EBADMSG.
 */
static int walk_reply(const char *text, size_t len, WgDevice *d,
                      int (*handle)(WgDevice *d, WgPeer **peer, const char *key, char *value),
                      int *ret_errno) {
        char line[512];
        WgPeer *peer = NULL;
        size_t pos = 0;
        bool have_errno = false;
        int err = 0, r = 0;

        if (!text || memchr(text, 0, len))
                return -EBADMSG;

        while (pos < len) {
                const char *nl = memchr(text + pos, '\n', len - pos);
                size_t l;
                char *eq;

                if (!nl) {
                        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: unterminated line.");
                        goto done;
                }
                l = (size_t) (nl - (text + pos));
                if (l == 0) {
                        /* The blank line: must follow errno= and end the reply. */
                        if (!have_errno || pos + 1 != len) {
                                r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: unexpected blank line.");
                                goto done;
                        }
                        *ret_errno = err;
                        r = 0;
                        goto done;
                }
                if (have_errno) {
                        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: data after errno=.");
                        goto done;
                }
                if (l >= sizeof line) {
                        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: line too long.");
                        goto done;
                }
                memcpy(line, text + pos, l);
                line[l] = 0;
                pos += l + 1;

                eq = strchr(line, '=');
                if (!eq || eq == line) {
                        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: line without key=value.");
                        goto done;
                }
                *eq = 0;
                if (streq(line, "errno")) {
                        if (parse_errno_value(eq + 1, &err) < 0) {
                                r = parse_bad("bad errno", "errno");
                                goto done;
                        }
                        have_errno = true;
                        continue;
                }
                if (!handle) {
                        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: unexpected key \"%s\".", line);
                        goto done;
                }
                r = handle(d, &peer, line, eq + 1);
                if (r < 0)
                        goto done;
        }
        r = log_debug_errno(-EBADMSG, "Malformed UAPI reply: %s.", have_errno ? "no final blank line" : "no errno=");
done:
        explicit_bzero(line, sizeof line);
        return r;
}

int wg_uapi_parse_get(const char *text, size_t len, const char *ifname, WgDevice **ret) {
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        int r, err = 0;

        assert(ifname && ret);
        r = wg_device_new(ifname, &d);
        if (r < 0)
                return r;
        r = walk_reply(text, len, d, parse_get_line, &err);
        if (r < 0)
                return r;
        if (err != 0)
                return -err;
        *ret = TAKE_PTR(d);
        return 0;
}

int wg_uapi_parse_errno(const char *text, size_t len) {
        int r, err = 0;

        r = walk_reply(text, len, NULL, NULL, &err);
        if (r < 0)
                return r;
        return -err;
}

/* ---- the socket --------------------------------------------------------------------- */

int wg_uapi_socket_path(const char *dir, const char *ifname, char ret[static sizeof(((struct sockaddr_un *) 0)->sun_path)]) {
        size_t size = sizeof(((struct sockaddr_un *) 0)->sun_path);
        int n;

        assert(dir && ifname);
        n = snprintf(ret, size, "%s/%s.sock", dir, ifname);
        if (n < 0 || (size_t) n >= size)
                return -ENAMETOOLONG;
        return 0;
}

int wg_uapi_transact(const char *path, const char *request, size_t len, char **ret, size_t *ret_len) {
        _cleanup_(closep) int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = {
                .tv_sec = (time_t) (WG_UAPI_TIMEOUT_USEC / USEC_PER_SEC),
                .tv_usec = (suseconds_t) (WG_UAPI_TIMEOUT_USEC % USEC_PER_SEC),
        };
        SecretBuffer b = {};
        size_t off = 0;
        int r;

        assert(path && request && ret && ret_len);
        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *) &sa, sizeof sa) < 0)
                return log_debug_errno(-errno, "Failed to connect to %s: %m", path);

        while (off < len) {
                ssize_t n = send(fd, request + off, len - off, MSG_NOSIGNAL);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_debug_errno(errno == EAGAIN ? -ETIMEDOUT : -errno, "Failed to write to %s: %m", path);
                }
                off += (size_t) n;
        }

        /* The server keeps the connection open for further requests: the reply is
         * complete at the blank line (a reply has no other), or at EOF. */
        for (;;) {
                ssize_t n;

                r = secret_buffer_reserve(&b, 16384);
                if (r < 0)
                        goto fail;
                n = recv(fd, b.data + b.len, b.allocated - b.len - 1, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = log_debug_errno(errno == EAGAIN ? -ETIMEDOUT : -errno, "Failed to read from %s: %m", path);
                        goto fail;
                }
                if (n == 0)
                        break;
                b.len += (size_t) n;
                b.data[b.len] = 0;
                if ((b.len >= 2 && b.data[b.len - 1] == '\n' && b.data[b.len - 2] == '\n') ||
                    (b.len == 1 && b.data[0] == '\n'))
                        break;
                if (b.len > WG_UAPI_REPLY_MAX) {
                        r = log_debug_errno(-EBADMSG, "Reply from %s is larger than %u bytes.", path, WG_UAPI_REPLY_MAX);
                        goto fail;
                }
        }
        if (!b.data) {
                r = secret_buffer_reserve(&b, 0);
                if (r < 0)
                        goto fail;
        }
        *ret = b.data;
        *ret_len = b.len;
        return 0;

fail:
        secret_buffer_done(&b);
        return r;
}

int wg_uapi_get_device(const char *dir, const char *ifname, WgDevice **ret) {
        _cleanup_(erase_and_freep) char *reply = NULL;
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        static const char request[] = "get=1\n\n";
        size_t len;
        int r;

        assert(dir && ifname && ret);
        r = wg_uapi_socket_path(dir, ifname, path);
        if (r < 0)
                return r;
        r = wg_uapi_transact(path, request, strlen(request), &reply, &len);
        if (r < 0)
                return r;
        r = wg_uapi_parse_get(reply, len, ifname, &d);
        explicit_bzero(reply, len);     /* by length: a broken reply may hold a NUL */
        if (r < 0)
                return log_debug_errno(r, "UAPI get on %s failed: %m", path);
        /* The protocol does not return the device's public key: derive it. */
        if (FLAGS_SET(d->flags, WG_DEVICE_HAS_PRIVATE_KEY)) {
                r = wg_key_public_from_private(&d->private_key, &d->public_key);
                if (r < 0)
                        return r;
                d->flags |= WG_DEVICE_HAS_PUBLIC_KEY;
        }
        *ret = TAKE_PTR(d);
        return 0;
}

int wg_uapi_set_device(const char *dir, const WgDevice *change) {
        _cleanup_(erase_and_freep) char *request = NULL, *reply = NULL;
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        size_t len, rlen;
        int r;

        assert(dir && change);
        r = wg_uapi_socket_path(dir, change->ifname, path);
        if (r < 0)
                return r;
        r = wg_uapi_format_set(change, &request, &len);
        if (r < 0)
                return r;
        r = wg_uapi_transact(path, request, len, &reply, &rlen);
        if (r < 0)
                return r;
        r = wg_uapi_parse_errno(reply, rlen);
        if (r < 0)
                return log_debug_errno(r, "UAPI set on %s failed: %m", path);
        return 0;
}
