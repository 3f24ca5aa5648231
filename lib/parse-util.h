/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Strict parsers for numbers, booleans, sizes, durations and addresses. */

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Decimal only, no sign, no trailing garbage, no overflow. */
int parse_uint(const char *s, unsigned *ret);
int parse_uint64(const char *s, uint64_t *ret);
/* "yes/no/true/false/on/off/1/0". Returns 0/1 or -EINVAL. */
int parse_boolean(const char *s);
/* "512", "64K", "1M", "2G" (binary multiples). */
int parse_size(const char *s, uint64_t *ret);
/* "30", "30s", "500ms", "2min", "1h", "1h 30min" → microseconds. A bare number is seconds. */
int parse_sec(const char *s, uint64_t *ret);
/* A socket address together with its length, as parsed from "1.2.3.4:80" or "[::1]:80". */
typedef struct SockAddr {
        struct sockaddr_storage ss;
        socklen_t len;
} SockAddr;

/* "1.2.3.4:80", "[::1]:80", "localhost:80" is refused (no DNS). Port 1–65535. */
int parse_sockaddr(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len);
/* A TCP/UDP port 1–65535. */
int parse_port(const char *s, uint16_t *ret);
/* Whether a socket address is loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
bool sockaddr_is_loopback(const struct sockaddr *sa);
/* Format a socket address as "1.2.3.4:80" / "[::1]:80". buf must be ≥ 64 bytes. */
const char *format_sockaddr(const struct sockaddr *sa, char *buf, size_t len);
