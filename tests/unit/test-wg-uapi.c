/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The UAPI codec: set requests formatted exactly, get replies (as wireguard-go
 * writes them) parsed, errno= lines, malformed replies refused; and the socket
 * transport against a fake server on a unix socket in a temporary directory.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "macro.h"
#include "wg-uapi.h"

#define PRIV_HEX "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
#define PUB1_HEX "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33"
#define PSK_HEX  "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52"
#define PUB2_HEX "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376"

/* A reply in wireguard-go's format (device/uapi.go), as the recipe captured it. */
static const char reply_full[] =
        "private_key=" PRIV_HEX "\n"
        "listen_port=51820\n"
        "fwmark=4660\n"
        "public_key=" PUB1_HEX "\n"
        "preshared_key=" PSK_HEX "\n"
        "protocol_version=1\n"
        "endpoint=[abcd:23::33%2]:51820\n"
        "last_handshake_time_sec=1700000000\n"
        "last_handshake_time_nsec=123\n"
        "tx_bytes=38333\n"
        "rx_bytes=2224\n"
        "persistent_keepalive_interval=25\n"
        "allowed_ip=192.168.4.4/32\n"
        "allowed_ip=fd00::/64\n"
        "public_key=" PUB2_HEX "\n"
        "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
        "protocol_version=1\n"
        "endpoint=182.122.22.19:3233\n"
        "last_handshake_time_sec=0\n"
        "last_handshake_time_nsec=0\n"
        "tx_bytes=0\n"
        "rx_bytes=0\n"
        "persistent_keepalive_interval=0\n"
        "allowed_ip=10.0.0.0/8\n"
        "errno=0\n"
        "\n";

static WgKey hex_key(const char *h) {
        WgKey k;

        ck_assert_int_eq(wg_key_from_hex(h, strlen(h), &k), 0);
        return k;
}

START_TEST(test_parse_get_full)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        char buf[WG_ENDPOINT_STRLEN], hex[WG_KEY_HEX_SIZE];
        WgPeer *p;

        ck_assert_int_eq(wg_uapi_parse_get(reply_full, strlen(reply_full), "wgtest0", &d), 0);
        ck_assert_str_eq(d->ifname, "wgtest0");
        ck_assert(FLAGS_SET(d->flags, WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK));
        ck_assert_str_eq(wg_key_to_hex(&d->private_key, hex), PRIV_HEX);
        ck_assert_uint_eq(d->listen_port, 51820);
        ck_assert_uint_eq(d->fwmark, 4660);
        ck_assert_uint_eq(d->n_peers, 2);

        p = d->peers[0];
        ck_assert_str_eq(wg_key_to_hex(&p->public_key, hex), PUB1_HEX);
        ck_assert_str_eq(wg_key_to_hex(&p->preshared_key, hex), PSK_HEX);
        ck_assert(FLAGS_SET(p->flags, WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE));
        ck_assert_str_eq(wg_endpoint_to_string(&p->endpoint, buf), "[abcd:23::33%2]:51820");
        ck_assert_int_eq(p->last_handshake.tv_sec, 1700000000);
        ck_assert_int_eq(p->last_handshake.tv_nsec, 123);
        ck_assert_uint_eq(p->tx_bytes, 38333);
        ck_assert_uint_eq(p->rx_bytes, 2224);
        ck_assert_uint_eq(p->persistent_keepalive, 25);
        ck_assert_uint_eq(p->protocol_version, 1);
        ck_assert_uint_eq(p->n_allowed_ips, 2);

        p = d->peers[1];
        ck_assert(!FLAGS_SET(p->flags, WG_PEER_HAS_PRESHARED_KEY));     /* all-zero = none */
        ck_assert_str_eq(wg_endpoint_to_string(&p->endpoint, buf), "182.122.22.19:3233");
        ck_assert_uint_eq(p->n_allowed_ips, 1);
}
END_TEST

START_TEST(test_parse_get_empty_device)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        static const char r[] = "listen_port=0\nerrno=0\n\n";

        ck_assert_int_eq(wg_uapi_parse_get(r, strlen(r), "wg0", &d), 0);
        ck_assert(!FLAGS_SET(d->flags, WG_DEVICE_HAS_PRIVATE_KEY));
        ck_assert_uint_eq(d->n_peers, 0);
}
END_TEST

START_TEST(test_parse_errno)
{
        static const struct { const char *in; int r; } t[] = {
                { "errno=0\n\n", 0 },
                { "errno=22\n\n", -EINVAL },
                { "errno=-22\n\n", -EINVAL },           /* wireguard-go's sign */
                { "errno=-95\n\n", -EOPNOTSUPP },
                { "errno=0\n", -EBADMSG },              /* no blank line */
                { "errno=0\n\nx", -EBADMSG },           /* trailing data */
                { "errno=0", -EBADMSG },
                { "errno=\n\n", -EBADMSG },
                { "errno=-0\n\n", -EBADMSG },
                { "errno=abc\n\n", -EBADMSG },
                { "errno=99999\n\n", -EBADMSG },
                { "errno=0\nerrno=0\n\n", -EBADMSG },
                { "listen_port=1\nerrno=0\n\n", -EBADMSG },   /* a set reply has nothing else */
                { "\n", -EBADMSG },
                { "", -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++)
                ck_assert_msg(wg_uapi_parse_errno(t[i].in, strlen(t[i].in)) == t[i].r, "reply '%s'", t[i].in);
        ck_assert_int_eq(wg_uapi_parse_errno("errno=0\n\0\n", 10), -EBADMSG);
}
END_TEST

START_TEST(test_parse_get_malformed)
{
        static const struct { const char *in; int r; } t[] = {
                { "errno=-2\n\n", -ENOENT },
                { "listen_port=51820\nerrno=5\n\n", -EIO },
                { "listen_port=51820\n\n", -EBADMSG },                          /* no errno */
                { "listen_port=51820\nerrno=0\n", -EBADMSG },                   /* no blank line */
                { "listen_port=51820\n\nerrno=0\n\n", -EBADMSG },
                { "listen_port\nerrno=0\n\n", -EBADMSG },                       /* no '=' */
                { "=5\nerrno=0\n\n", -EBADMSG },
                { "listen_port=65536\nerrno=0\n\n", -EBADMSG },
                { "listen_port=-1\nerrno=0\n\n", -EBADMSG },
                { "listen_port=0x10\nerrno=0\n\n", -EBADMSG },
                { "fwmark=4294967296\nerrno=0\n\n", -EBADMSG },
                { "private_key=" PRIV_HEX "0\nerrno=0\n\n", -EBADMSG },       /* 65 digits */
                { "private_key=" PUB1_HEX "\nlisten_port=1\npublic_key=zz\nerrno=0\n\n", -EBADMSG },
                { "allowed_ip=10.0.0.0/8\nerrno=0\n\n", -EBADMSG },            /* before any peer */
                { "public_key=" PUB1_HEX "\nallowed_ip=10.0.0.0\nerrno=0\n\n", -EBADMSG },
                { "public_key=" PUB1_HEX "\nallowed_ip=10.0.0.0/33\nerrno=0\n\n", -EBADMSG },
                { "public_key=" PUB1_HEX "\nendpoint=host:1\nerrno=0\n\n", -EBADMSG },
                { "public_key=" PUB1_HEX "\nlast_handshake_time_nsec=1000000000\nerrno=0\n\n", -EBADMSG },
                { "public_key=" PUB1_HEX "\nlisten_port=1\nerrno=0\n\n", -EBADMSG },   /* device key after a peer */
                { "public_key=" PUB1_HEX "\nrx_bytes=18446744073709551616\nerrno=0\n\n", -EBADMSG },
                { "errno=0\nlisten_port=1\n\n", -EBADMSG },
        };

        for (size_t i = 0; i < ELEMENTSOF(t); i++) {
                WgDevice *d = NULL;

                ck_assert_msg(wg_uapi_parse_get(t[i].in, strlen(t[i].in), "wg0", &d) == t[i].r, "reply '%s'", t[i].in);
                ck_assert_ptr_null(d);
        }
}
END_TEST

START_TEST(test_parse_get_unknown_keys_and_long_lines)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        char big[2048];
        static const char r[] = "listen_port=7\nsome_future_key=1\npublic_key=" PUB1_HEX "\nfuture_peer_key=x\nerrno=0\n\n";

        ck_assert_int_eq(wg_uapi_parse_get(r, strlen(r), "wg0", &d), 0);
        ck_assert_uint_eq(d->listen_port, 7);
        ck_assert_uint_eq(d->n_peers, 1);

        snprintf(big, sizeof big, "x=%01500d\nerrno=0\n\n", 0);
        d = wg_device_free(d);
        ck_assert_int_eq(wg_uapi_parse_get(big, strlen(big), "wg0", &d), -EBADMSG);
}
END_TEST

START_TEST(test_parse_get_peer_limit)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        size_t cap = (size_t) (WG_ALLOWED_IPS_MAX + 2) * 32 + 256, len = 0;
        _cleanup_(freep) char *r = malloc(cap);

        ck_assert_ptr_nonnull(r);
        len += (size_t) sprintf(r + len, "public_key=%s\n", PUB1_HEX);
        for (unsigned i = 0; i <= WG_ALLOWED_IPS_MAX; i++)
                len += (size_t) sprintf(r + len, "allowed_ip=fd00::%x/128\n", i);
        len += (size_t) sprintf(r + len, "errno=0\n\n");
        ck_assert_int_eq(wg_uapi_parse_get(r, len, "wg0", &d), -E2BIG);
}
END_TEST

START_TEST(test_format_set)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL;
        _cleanup_(erase_and_freep) char *s = NULL;
        WgPeer *p;
        WgAllowedIP ip;
        size_t len;
        WgKey k;

        ck_assert_int_eq(wg_device_new("wg0", &d), 0);
        d->private_key = hex_key(PRIV_HEX);
        d->listen_port = 51820;
        d->fwmark = 0;
        d->flags = WG_DEVICE_HAS_PRIVATE_KEY | WG_DEVICE_HAS_LISTEN_PORT | WG_DEVICE_HAS_FWMARK | WG_DEVICE_REPLACE_PEERS;

        k = hex_key(PUB1_HEX);
        ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
        p->preshared_key = hex_key(PSK_HEX);
        p->persistent_keepalive = 25;
        ck_assert_int_eq(wg_endpoint_from_string("[fd00::1]:51821", &p->endpoint), 0);
        p->flags = WG_PEER_UPDATE_ONLY | WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE |
                   WG_PEER_REPLACE_ALLOWED_IPS;
        ck_assert_int_eq(wg_ip_prefix_from_string("10.99.0.2/32", &ip), 0);
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);
        ck_assert_int_eq(wg_ip_prefix_from_string("fd99::/64", &ip), 0);
        ck_assert_int_eq(wg_peer_add_allowed_ip(p, &ip), 0);

        k = hex_key(PUB2_HEX);
        ck_assert_int_eq(wg_device_add_peer(d, &k, &p), 0);
        p->flags = WG_PEER_REMOVE | WG_PEER_HAS_KEEPALIVE;      /* a removal says nothing else */

        ck_assert_int_eq(wg_uapi_format_set(d, &s, &len), 0);
        ck_assert_uint_eq(len, strlen(s));
        ck_assert_str_eq(s,
                "set=1\n"
                "private_key=" PRIV_HEX "\n"
                "listen_port=51820\n"
                "fwmark=0\n"
                "replace_peers=true\n"
                "public_key=" PUB1_HEX "\n"
                "update_only=true\n"
                "preshared_key=" PSK_HEX "\n"
                "endpoint=[fd00::1]:51821\n"
                "persistent_keepalive_interval=25\n"
                "replace_allowed_ips=true\n"
                "allowed_ip=10.99.0.2/32\n"
                "allowed_ip=fd99::/64\n"
                "public_key=" PUB2_HEX "\n"
                "remove=true\n"
                "\n");
}
END_TEST

/* What we format as a set, written back as a get reply, parses to the same device. */
START_TEST(test_roundtrip)
{
        _cleanup_(wg_device_freep) WgDevice *d = NULL, *back = NULL;
        _cleanup_(erase_and_freep) char *s = NULL;
        _cleanup_(freep) char *reply = NULL;
        size_t len;

        ck_assert_int_eq(wg_uapi_parse_get(reply_full, strlen(reply_full), "wg0", &d), 0);
        /* A device as read has stats and HAS_* flags; make it a change. */
        for (size_t i = 0; i < d->n_peers; i++)
                d->peers[i]->flags &= WG_PEER_HAS_PRESHARED_KEY | WG_PEER_HAS_ENDPOINT | WG_PEER_HAS_KEEPALIVE;
        ck_assert_int_eq(wg_uapi_format_set(d, &s, &len), 0);
        ck_assert_ptr_nonnull(startswith(s, "set=1\n"));
        reply = malloc(len + 16);
        ck_assert_ptr_nonnull(reply);
        strcpy(reply, s + strlen("set=1\n"));
        strcpy(reply + strlen(reply) - 1, "errno=0\n\n");       /* replace the final blank line */
        ck_assert_int_eq(wg_uapi_parse_get(reply, strlen(reply), "wg0", &back), 0);

        ck_assert_mem_eq(back->private_key.data, d->private_key.data, WG_KEY_LEN);
        ck_assert_uint_eq(back->listen_port, d->listen_port);
        ck_assert_uint_eq(back->fwmark, d->fwmark);
        ck_assert_uint_eq(back->n_peers, d->n_peers);
        for (size_t i = 0; i < d->n_peers; i++) {
                ck_assert_mem_eq(back->peers[i]->public_key.data, d->peers[i]->public_key.data, WG_KEY_LEN);
                ck_assert_mem_eq(back->peers[i]->preshared_key.data, d->peers[i]->preshared_key.data, WG_KEY_LEN);
                ck_assert(wg_endpoint_equal(&back->peers[i]->endpoint, &d->peers[i]->endpoint));
                ck_assert_uint_eq(back->peers[i]->persistent_keepalive, d->peers[i]->persistent_keepalive);
                ck_assert_uint_eq(back->peers[i]->n_allowed_ips, d->peers[i]->n_allowed_ips);
                ck_assert_mem_eq(back->peers[i]->allowed_ips, d->peers[i]->allowed_ips,
                                 d->peers[i]->n_allowed_ips * sizeof(WgAllowedIP));
        }
}
END_TEST

/* ---- the socket, against a fake server ---- */

typedef enum FakeMode {
        FAKE_GET_FULL,          /* answer any request with reply_full, keep the connection open */
        FAKE_SET_RECORD,        /* write the request to a file, answer errno=0 */
        FAKE_CLOSE,             /* close without answering */
        FAKE_ERRNO,             /* answer errno=-22 */
} FakeMode;

static pid_t fake_server(const char *path, FakeMode mode, const char *record) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;
        pid_t pid;

        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *) &sa, sizeof sa), 0);
        ck_assert_int_eq(listen(fd, 4), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                for (;;) {
                        char buf[65536];
                        size_t n = 0;
                        int c = accept(fd, NULL, NULL);

                        if (c < 0)
                                _exit(1);
                        while (n < sizeof buf) {
                                ssize_t k = read(c, buf + n, sizeof buf - n);

                                if (k <= 0)
                                        break;
                                n += (size_t) k;
                                if (n >= 2 && buf[n - 1] == '\n' && buf[n - 2] == '\n')
                                        break;
                        }
                        if (mode == FAKE_SET_RECORD) {
                                FILE *f = fopen(record, "we");

                                if (f) {
                                        fwrite(buf, 1, n, f);
                                        fclose(f);
                                }
                                (void) !write(c, "errno=0\n\n", 9);
                        } else if (mode == FAKE_GET_FULL)
                                (void) !write(c, reply_full, strlen(reply_full));
                        else if (mode == FAKE_ERRNO)
                                (void) !write(c, "errno=-22\n\n", 11);
                        if (mode != FAKE_GET_FULL)
                                close(c);
                        /* FAKE_GET_FULL leaves c open, as wireguard-go does. */
                }
        }
        close(fd);
        return pid;
}

static void stop(pid_t pid) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

START_TEST(test_socket)
{
        char dir[] = "/tmp/test-wg-uapi.XXXXXX", path[108], record[128];
        _cleanup_(wg_device_freep) WgDevice *d = NULL, *change = NULL;
        _cleanup_(freep) char *got = NULL;
        WgPeer *p;
        WgKey k;
        FILE *f;
        pid_t pid;
        size_t n;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        ck_assert_int_eq(wg_uapi_socket_path(dir, "wgfake0", path), 0);
        snprintf(record, sizeof record, "%s/request", dir);

        /* get: the reply is complete at the blank line even though the server keeps the connection. */
        pid = fake_server(path, FAKE_GET_FULL, NULL);
        ck_assert_int_eq(wg_uapi_get_device(dir, "wgfake0", &d), 0);
        ck_assert_uint_eq(d->n_peers, 2);
        /* The device's public key is derived, since the protocol does not send it. */
        ck_assert(FLAGS_SET(d->flags, WG_DEVICE_HAS_PUBLIC_KEY));
        stop(pid);
        unlink(path);

        /* set: exactly the formatted request reaches the server. */
        pid = fake_server(path, FAKE_SET_RECORD, record);
        ck_assert_int_eq(wg_device_new("wgfake0", &change), 0);
        k = hex_key(PUB1_HEX);
        ck_assert_int_eq(wg_device_add_peer(change, &k, &p), 0);
        p->flags = WG_PEER_REMOVE;
        ck_assert_int_eq(wg_uapi_set_device(dir, change), 0);
        f = fopen(record, "re");
        ck_assert_ptr_nonnull(f);
        got = calloc(1, 4096);
        n = fread(got, 1, 4095, f);
        fclose(f);
        ck_assert_uint_gt(n, 0);
        ck_assert_str_eq(got, "set=1\npublic_key=" PUB1_HEX "\nremove=true\n\n");
        stop(pid);
        unlink(path);

        /* A server that refuses: the errno comes back. */
        pid = fake_server(path, FAKE_ERRNO, NULL);
        ck_assert_int_eq(wg_uapi_set_device(dir, change), -EINVAL);
        stop(pid);
        unlink(path);

        /* A server that hangs up without an answer. */
        pid = fake_server(path, FAKE_CLOSE, NULL);
        ck_assert_int_eq(wg_uapi_set_device(dir, change), -EBADMSG);
        d = wg_device_free(d);
        ck_assert_int_eq(wg_uapi_get_device(dir, "wgfake0", &d), -EBADMSG);
        stop(pid);
        unlink(path);

        /* No server: a stale socket file, and no file at all. */
        ck_assert_int_eq(wg_uapi_get_device(dir, "wgfake0", &d), -ENOENT);
        unlink(record);
        ck_assert_int_eq(rmdir(dir), 0);

        {
                char longdir[120];

                memset(longdir, 'x', sizeof longdir - 1);
                longdir[0] = '/';
                longdir[sizeof longdir - 1] = 0;
                ck_assert_int_eq(wg_uapi_socket_path(longdir, "wgfake0", path), -ENAMETOOLONG);
        }
}
END_TEST

int main(void) {
        Suite *s = suite_create("wg-uapi");
        TCase *tc = tcase_create("codec");
        TCase *ts = tcase_create("socket");
        SRunner *sr;
        int failed;

        tcase_add_test(tc, test_parse_get_full);
        tcase_add_test(tc, test_parse_get_empty_device);
        tcase_add_test(tc, test_parse_errno);
        tcase_add_test(tc, test_parse_get_malformed);
        tcase_add_test(tc, test_parse_get_unknown_keys_and_long_lines);
        tcase_add_test(tc, test_parse_get_peer_limit);
        tcase_add_test(tc, test_format_set);
        tcase_add_test(tc, test_roundtrip);
        suite_add_tcase(s, tc);
        tcase_add_test(ts, test_socket);
        suite_add_tcase(s, ts);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
