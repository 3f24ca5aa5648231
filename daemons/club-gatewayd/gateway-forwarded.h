/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Who the client is behind a TLS-terminating proxy ([Public] TrustedProxies=).
 *
 * When the connection comes from a trusted proxy, the client is the right-most address
 * in X-Forwarded-For that is not itself trusted: the list is walked from the right (the
 * hop nearest to us), skipping trusted proxies; a client can prepend whatever it likes,
 * but never past the first proxy we trust, which appends (or sets) what it saw. A peer
 * that is not trusted is the client, whatever headers it sends.
 *
 * An entry is an IPv4 address, an IPv6 address, or either with a port as some proxies
 * write it ("192.0.2.1:4711", "[2001:db8::1]:4711", "[2001:db8::1]"); the port is ignored.
 * Spaces and tabs around entries are ignored; several X-Forwarded-For headers count as
 * one list, in order (RFC 9110, 5.3). Anything else ("unknown", RFC 7239's "_hidden",
 * zone ids, empty entries between commas, names) is malformed, and so is a list that
 * names more trusted hops than FORWARDED_HOPS_MAX or a header longer than
 * FORWARDED_HEADER_MAX: the walk stops and the caller falls back to the peer. Only the
 * entries the walk reaches are looked at, so garbage a client put left of the real
 * address does not matter.
 *
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, of a dual-stack listener or in a header)
 * count as IPv4, in the list of trusted proxies too.
 */

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "http-server.h"
#include "wg.h"

/* TrustedProxies= entries. */
#define FORWARDED_PROXIES_MAX 256U
/* Bytes of one X-Forwarded-For header, and X-Forwarded-For headers in one request. */
#define FORWARDED_HEADER_MAX 4096U
#define FORWARDED_HEADERS_MAX 8U
/* Entries the walk looks at: trusted hops in a row, plus the client's. */
#define FORWARDED_HOPS_MAX 32U
/* An address as the logs print it, with the NUL. */
#define FORWARDED_ADDRESS_STRLEN INET6_ADDRSTRLEN

/* The trusted proxies: addresses and networks (WgIPPrefix, host bits clear). */
typedef struct TrustedProxies {
        WgIPPrefix *prefixes;
        size_t n;
} TrustedProxies;

void trusted_proxies_done(TrustedProxies *t);

/**
 * trusted_proxies_add() - add one address or network
 * @t:    the list
 * @word: "127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "::ffff:10.0.0.0/104"
 *
 * Return: 0 (also when it is in the list already), -EINVAL for anything else than an
 * address or ADDRESS/LENGTH, -EADDRNOTAVAIL when the address has bits set past LENGTH
 * (a typo more often than not), -E2BIG past FORWARDED_PROXIES_MAX, -ENOMEM.
 */
int trusted_proxies_add(TrustedProxies *t, const char *word);

/* A copy of @src into @dst (replaced). Return: 0 or -ENOMEM (@dst unchanged). */
int trusted_proxies_copy(TrustedProxies *dst, const TrustedProxies *src);

/* Whether @sa (AF_INET or AF_INET6; IPv4-mapped counts as IPv4) is a trusted proxy. */
bool trusted_proxies_contain(const TrustedProxies *t, const struct sockaddr *sa);

/**
 * forwarded_client() - the client's address from the peer and its X-Forwarded-For
 * @t:        the trusted proxies
 * @peer:     the connection's peer (NULL: unknown, never trusted)
 * @values:   the X-Forwarded-For header values in the order they came, @n_values of them
 * @ret:      the client: family and address, port 0 (the peer's address when it is the client)
 *
 * If every entry the walk reaches is trusted, the left-most entry is the client.
 *
 * Return: 1 when the client came from X-Forwarded-For; 0 when it is the peer (the peer is
 * not trusted, or sent no X-Forwarded-For, or only empty ones); -EBADMSG for a malformed
 * entry, -E2BIG for too long a header or too many hops or headers, -EAFNOSUPPORT for a
 * peer that is not IP. On failure @ret is left alone: the caller uses the peer.
 */
int forwarded_client(const TrustedProxies *t, const struct sockaddr *peer, const char *const *values, size_t n_values,
                     struct sockaddr_storage *ret);

/**
 * forwarded_resolve() - decide who an exchange's client is
 * @t: the trusted proxies
 * @x: a request on the public listener
 *
 * Runs forwarded_client() on the exchange's peer and X-Forwarded-For headers and records
 * the result with http_exchange_set_client(), so that everything after it asks
 * http_exchange_client(). A malformed header is logged once at debug; the peer is then
 * the client.
 */
void forwarded_resolve(const TrustedProxies *t, HttpExchange *x);

/* The address of @sa without a port ("192.0.2.1", "2001:db8::1"; "?" for other families). */
const char *forwarded_address_to_string(const struct sockaddr *sa, char buf[static FORWARDED_ADDRESS_STRLEN]);
