/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Heartbeats to the gateway's mesh listener (docs/protocol.md): POST
 * http://<gateway mesh address>:8443/api/v1/agents/heartbeat, signed with the provider's
 * request secret (lib/request-sign), every heartbeat_interval_sec with ±10 % jitter. A
 * failed one is retried after 1 s, 2 s, 4 s … capped at the interval. One heartbeat at a
 * time; nothing here blocks the loop.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "agent.h"
#include "http-client.h"
#include "request-sign.h"

#define AGENT_HEARTBEAT_PORT 8443U
#define AGENT_HEARTBEAT_PATH "/api/v1/agents/heartbeat"
#define AGENT_HEARTBEAT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define AGENT_HEARTBEAT_ANSWER_MAX (16U * 1024U)
#define AGENT_HEARTBEAT_MODELS_MAX 1024U
#define AGENT_HEARTBEAT_CAPABILITIES_MAX 256U
#define AGENT_HEARTBEAT_UPSTREAMS_MAX 64U

/* What a heartbeat says; everything borrowed. */
typedef struct AgentHeartbeatInfo {
        char **models;                  /* NULL-terminated, may be NULL */
        char **capabilities;            /* NULL-terminated, may be NULL */
        unsigned in_flight;
        unsigned capacity;
        const AgentUpstream *upstreams;
        size_t n_upstreams;
        bool draining;
} AgentHeartbeatInfo;

/**
 * agent_heartbeat_body() - the JSON body of a heartbeat
 * @info:    what to say
 * @ret:     the body, malloc'd
 * @ret_len: its length
 *
 * The protocol's limits are applied: at most 1024 models (each 1–256 bytes, no spaces or
 * control characters; others are left out), 256 capabilities, 64 upstreams (name and URL
 * cut to their limits).
 *
 * Return: 0 or -ENOMEM.
 */
int agent_heartbeat_body(const AgentHeartbeatInfo *info, char **ret, size_t *ret_len);

typedef enum AgentHeartbeatOutcome {
        AGENT_HEARTBEAT_ONLINE,         /* 200, online true */
        AGENT_HEARTBEAT_NOT_ONLINE,     /* 200, online false (draining, disabled, probe failed) */
        AGENT_HEARTBEAT_FAILED,         /* no answer, 5xx, or another error: retried with backoff */
        AGENT_HEARTBEAT_FORGOTTEN,      /* 404 unknown_provider or 401 invalid_signature: register again */
        _AGENT_HEARTBEAT_OUTCOME_MAX,
        _AGENT_HEARTBEAT_OUTCOME_INVALID = -EINVAL,
} AgentHeartbeatOutcome;

/**
 * agent_heartbeat_classify() - what a heartbeat's answer means
 * @status:       the HTTP status, 0 if there was none
 * @body:         the body, @len bytes (may be NULL)
 * @len:          its length
 * @ret_interval: on AGENT_HEARTBEAT_ONLINE/NOT_ONLINE, the interval the gateway asks for
 *                (unchanged if it sent none valid)
 * @ret_detail:   a static or @body-derived sentence for logs and StateReason (malloc'd, may be NULL)
 *
 * Return: the outcome.
 */
AgentHeartbeatOutcome agent_heartbeat_classify(unsigned status, const char *body, size_t len,
                                               uint64_t *ret_interval, char **ret_detail);

/**
 * agent_heartbeat_jitter() - a heartbeat interval with ±10 % jitter
 * @usec:   the interval
 * @random: a random number
 *
 * Return: a value in [@usec - @usec/10, @usec - @usec/10 + @usec/5], picked by @random.
 */
uint64_t agent_heartbeat_jitter(uint64_t usec, uint64_t random);

/**
 * agent_heartbeat_backoff() - the wait before retrying a failed heartbeat
 * @prev:     the previous wait, 0 after a success
 * @interval: the heartbeat interval, the cap
 *
 * Return: 1 s after a success, then twice the previous wait, at most @interval.
 */
uint64_t agent_heartbeat_backoff(uint64_t prev, uint64_t interval);

typedef struct AgentHeartbeat AgentHeartbeat;

/* Fill @ret with the current state for the next heartbeat. */
typedef void (*AgentHeartbeatFillFn)(AgentHeartbeatInfo *ret, void *userdata);
/* A heartbeat ended. @detail: why it failed or what the gateway said; may be NULL. */
typedef void (*AgentHeartbeatResultFn)(AgentHeartbeat *h, AgentHeartbeatOutcome outcome, const char *detail,
                                       void *userdata);

/**
 * agent_heartbeat_new() - start heartbeating (the first one goes out at once)
 * @event:        the loop
 * @client:       the HTTP client for the mesh (borrowed; outlives @ret)
 * @gateway:      the gateway's mesh address
 * @secret:       the request secret (copied; wiped when freed)
 * @interval_sec: the registration's heartbeat_interval_sec
 * @fill:         fills in each heartbeat's body
 * @result:       called after each heartbeat
 * @userdata:     for both
 * @ret:          the heartbeat object
 *
 * Return: 0 or a negative errno.
 */
int agent_heartbeat_new(sd_event *event, HttpClient *client, const struct in_addr *gateway, const uint8_t *secret,
                        uint64_t interval_sec, AgentHeartbeatFillFn fill, AgentHeartbeatResultFn result,
                        void *userdata, AgentHeartbeat **ret);
AgentHeartbeat *agent_heartbeat_free(AgentHeartbeat *h);
CLUB_DEFINE_CLEANUP(AgentHeartbeat *, agent_heartbeat_free);

/* Send the next heartbeat soon (within a second), e.g. after draining changed. */
void agent_heartbeat_kick(AgentHeartbeat *h);
