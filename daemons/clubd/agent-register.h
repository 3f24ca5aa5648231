/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The registration client: POST /api/v1/agents/register to the gateway's public listener
 * (docs/protocol.md), over lib/http-client on the daemon's loop, and the strict parsers of
 * the gateway's answers. The API or enrollment key goes into one Authorization header and
 * nowhere else; it is not kept.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-state.h"
#include "http-client.h"
#include "macro.h"

#define AGENT_REGISTER_RESPONSE_MAX (64U * 1024U)
#define AGENT_REGISTER_CONNECT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define AGENT_REGISTER_RESPONSE_TIMEOUT_USEC (60 * USEC_PER_SEC)
#define AGENT_KEY_MAX 512U

/**
 * agent_key_valid() - whether @key looks like an API ("ic-…") or enrollment ("ie-…") key
 * @key: the key, may be NULL
 *
 * Only the shape is checked (prefix, at most AGENT_KEY_MAX visible ASCII characters); the
 * gateway decides whether it is any good.
 *
 * Return: true or false.
 */
bool agent_key_valid(const char *key);

/**
 * agent_register_url() - the registration URL for a gateway base URL, checking the scheme
 * @gateway_url: "https://gw.example.org" (a path prefix is kept: "https://h/club")
 * @insecure:    whether plain http:// to a host other than loopback is allowed
 * @ret:         "<gateway_url>/api/v1/agents/register", malloc'd
 *
 * Return: 0; -EINVAL for a malformed URL (not http(s)://HOST…, a query, a fragment,
 * whitespace, userinfo); -EPROTONOSUPPORT for http:// to a non-loopback host without
 * @insecure; -ENOMEM.
 */
int agent_register_url(const char *gateway_url, bool insecure, char **ret);

/**
 * agent_registration_parse() - parse a 200/201 registration answer
 * @body:       the body, @len bytes
 * @len:        its length
 * @ret:        filled in: provider_id, name, mesh_address, gateway_public_key,
 *              gateway_endpoint, gateway_mesh_address, request_secret,
 *              heartbeat_interval_sec (the rest is left alone)
 * @ret_reason: on -EBADMSG, a static sentence naming the field at fault
 *
 * Every field is required and checked: provider_id a positive integer, name 1–64 of
 * A-Z a-z 0-9 . _ -, the addresses dotted IPv4 and not equal, the public key a
 * WireGuard key, the endpoint HOST:PORT, the secret base64 of 32 bytes,
 * heartbeat_interval_sec 1–3600. Unknown fields are ignored.
 *
 * Return: 0, -EBADMSG, -ENOMEM.
 */
int agent_registration_parse(const char *body, size_t len, AgentSavedState *ret, const char **ret_reason);

/**
 * agent_gateway_error_parse() - the code and message of an OpenAI-shaped error body
 * @body:        the body, @len bytes
 * @len:         its length
 * @ret_code:    the error's "code", or NULL if it has none (malloc'd)
 * @ret_message: the error's "message", or NULL (malloc'd); control characters replaced
 *
 * Return: 0 if the body is such an error (both may still be NULL), -EBADMSG if not, -ENOMEM.
 */
int agent_gateway_error_parse(const char *body, size_t len, char **ret_code, char **ret_message);

/**
 * agent_register_classify() - the agent's error for a gateway's answer that is not 2xx
 * @status: the HTTP status
 * @code:   the gateway's error code, or NULL
 *
 * Return: -EKEYREJECTED (401, 403: the key), -EDQUOT (429), -EHOSTUNREACH (5xx),
 * -EREMOTEIO (any other refusal). See agent.h for what each means to a person.
 */
int agent_register_classify(unsigned status, const char *code);

typedef struct AgentRegisterRequest AgentRegisterRequest;

/*
 * The outcome: @error 0 and @reg the parsed answer (borrowed, during the call only); or a
 * negative errno with @code and @message as agent.h's AgentRegisterDoneFn describes them.
 */
typedef void (*AgentRegisterRequestDone)(AgentRegisterRequest *req, int error, const char *code,
                                         const char *message, const AgentSavedState *reg, void *userdata);

/**
 * agent_register_request_start() - send a registration
 * @client:     the HTTP client (TLS trust as configured on it)
 * @url:        from agent_register_url()
 * @key:        the API or enrollment key; used for this request only
 * @name:       the provider name
 * @public_key: the new WireGuard public key
 * @port:       the agent port on the mesh address
 * @done:       called exactly once from the loop, unless the request is freed first
 * @userdata:   for @done
 * @ret:        the running request; free it after @done (or to cancel)
 *
 * Return: 0 or a negative errno (nothing started, @done not called).
 */
int agent_register_request_start(HttpClient *client, const char *url, const char *key, const char *name,
                                 const WgKey *public_key, uint16_t port, AgentRegisterRequestDone done,
                                 void *userdata, AgentRegisterRequest **ret);

AgentRegisterRequest *agent_register_request_free(AgentRegisterRequest *req);
CLUB_DEFINE_CLEANUP(AgentRegisterRequest *, agent_register_request_free);
