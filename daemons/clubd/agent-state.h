/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The agent's saved registration: <state directory>/state.json, mode 0600, written
 * atomically (a temporary file in the same directory, fsync, rename, fsync of the
 * directory), so that a crash leaves either the old or the new state, never a mix.
 *
 *   {"version":1,"provider_id":7,"name":"gpu-box-1","gateway_url":"https://gw.example.org",
 *    "mesh_address":"100.96.0.8","gateway_public_key":"<base64>",
 *    "gateway_endpoint":"gw.example.org:51820","gateway_mesh_address":"100.96.0.1",
 *    "heartbeat_interval_sec":30,"agent_port":8090,"private_key":"<base64>",
 *    "request_secret":"<base64>","insecure":false,"ca_file":null}
 *
 * The API or enrollment key used to register is never part of it. The private key and
 * the request secret are: they are wiped from every buffer here before it is freed.
 * docs/clubd.md describes the file for the person who runs clubd.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "macro.h"
#include "request-sign.h"
#include "wg-key.h"

#define AGENT_STATE_FILE "state.json"
#define AGENT_STATE_VERSION 1
#define AGENT_STATE_SIZE_MAX (64U * 1024U)
#define AGENT_HEARTBEAT_INTERVAL_SEC_MAX 3600U
#define AGENT_ENDPOINT_MAX 262U                /* 253 for a DNS name, brackets, ":65535" */
#define AGENT_URL_MAX 2048U

typedef struct AgentSavedState {
        int64_t provider_id;                    /* > 0 */
        char *name;
        char *gateway_url;
        struct in_addr mesh_address;
        WgKey gateway_public_key;
        char *gateway_endpoint;                 /* HOST:PORT as the gateway sent it */
        struct in_addr gateway_mesh_address;
        uint64_t heartbeat_interval_sec;        /* 1 … AGENT_HEARTBEAT_INTERVAL_SEC_MAX */
        uint16_t agent_port;
        WgKey private_key;                      /* secret */
        uint8_t request_secret[REQUEST_SIGN_SECRET_LEN];  /* secret */
        bool insecure;                          /* http:// to a non-loopback gateway was allowed */
        char *ca_file;                          /* the CAFile= used to register; NULL: system store */
} AgentSavedState;

/**
 * agent_saved_state_done() - free what a saved state holds and wipe its secrets
 * @s: the state, may be NULL
 */
void agent_saved_state_done(AgentSavedState *s);

/**
 * agent_saved_state_free() - agent_saved_state_done() and free the struct
 * @s: the state, may be NULL
 *
 * Return: NULL.
 */
AgentSavedState *agent_saved_state_free(AgentSavedState *s);
CLUB_DEFINE_CLEANUP(AgentSavedState *, agent_saved_state_free);

/**
 * agent_state_load() - read <dir>/state.json
 * @dir:        the state directory
 * @ret:        the state
 * @ret_reason: on failure other than -ENOENT and -ENOMEM, a static sentence saying what is wrong
 *
 * Return: 0; -ENOENT when there is no state (not registered); -EBADMSG when the file is
 * not a valid state (not JSON, a field missing or breaking its rule); -EPROTONOSUPPORT
 * when it was written by a newer clubd (a version above AGENT_STATE_VERSION); -EFBIG when
 * it is larger than AGENT_STATE_SIZE_MAX; -ENOMEM; another errno from open()/read().
 */
int agent_state_load(const char *dir, AgentSavedState **ret, const char **ret_reason);

/**
 * agent_state_save() - write <dir>/state.json atomically, mode 0600
 * @dir: the state directory (made, mode 0700, if it does not exist)
 * @s:   the state; every field valid
 *
 * Return: 0, -EINVAL for a state that would not load again, or the errno of the failed
 * step (the old file is then untouched and the temporary one removed).
 */
int agent_state_save(const char *dir, const AgentSavedState *s);

/**
 * agent_state_remove() - delete <dir>/state.json and make the removal durable
 * @dir: the state directory
 *
 * Return: 0 (also when there was none) or a negative errno.
 */
int agent_state_remove(const char *dir);

/**
 * agent_endpoint_valid() - whether @s is a WireGuard endpoint as the gateway sends it
 * @s: "HOST:PORT" with HOST a DNS name or an IPv4 address, or "[IPv6]:PORT"
 *
 * Return: true or false.
 */
bool agent_endpoint_valid(const char *s);

/**
 * agent_endpoint_split() - split a valid endpoint into host and port
 * @s:        the endpoint
 * @ret_host: the host, without brackets, malloc'd
 * @ret_port: the port
 *
 * Return: 0, -EINVAL if @s is not valid, -ENOMEM.
 */
int agent_endpoint_split(const char *s, char **ret_host, uint16_t *ret_port);
