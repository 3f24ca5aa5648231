/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The gateway's store: users, their API keys, enrollment keys, providers (with their mesh
 * addresses, signing secrets, sharing policy, tags, and the models and capabilities they
 * report). docs/store.md describes the schema, the migrations and the durability promise.
 *
 * One small interface, interchangeable backends (STYLE.md §1): the functions below check
 * their arguments, make and hash secrets, and then call the backend chosen in store_open()
 * through a table of operations (store-backend.h). SQLite is the backend today; a
 * PostgreSQL backend is a second table of the same operations.
 *
 * Conventions:
 *  - Functions return 0 (or a documented positive value) on success and a negative errno
 *    on failure:  -EINVAL bad argument,  -ENOENT no such object,  -EEXIST conflict (name
 *    or public key taken),  -EKEYREJECTED unknown or malformed key,  -EKEYREVOKED revoked
 *    key,  -EKEYEXPIRED expired or used-up key,  -EACCES key lacks the scope,  -EBUSY the
 *    database is locked by another process for longer than the busy timeout,  -ENOSPC the
 *    mesh prefix has no address left,  -EIO and friends for I/O failures,  -ENOMEM.
 *  - Output parameters are written only on success.
 *  - Times are CLOCK_REALTIME microseconds. An optional time of 0 means "never" (not
 *    revoked, never used, no heartbeat yet); an expiry of USEC_INFINITY means "does not
 *    expire".
 *  - IDs are positive and never reused, not even after deletion.
 *  - Nothing here logs secrets; the store logs at debug level only.
 *  - A Store is one database connection: not thread-safe. Several Stores (threads,
 *    processes) may use the same database; writes are serialised by the database.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "macro.h"
#include "wg-key.h"

typedef struct Store Store;

/* ---- limits (enforced on every input) --------------------------------------------------- */

#define STORE_NAME_MAX 64U              /* provider names, key names; user names: 128 */
#define STORE_USER_NAME_MAX 128U
#define STORE_TAG_MAX 64U               /* characters per tag or capability name */
#define STORE_TAGS_MAX 32U              /* tags per user, key or provider; shared tags */
#define STORE_SHARE_USERS_MAX 256U      /* users named in a provider's sharing policy */
#define STORE_MODEL_NAME_MAX 256U
#define STORE_MODELS_MAX 1024U          /* models per provider */
#define STORE_CAPABILITIES_MAX 256U     /* capabilities per provider */
#define STORE_VERSION_MAX 64U
#define STORE_HEALTH_JSON_MAX (64U * 1024U)
#define STORE_SECRET_LEN 32U            /* the per-provider signing secret, bytes */

#define STORE_MESH_PREFIX_DEFAULT "100.96.0.0/16"
#define STORE_BUSY_TIMEOUT_USEC_DEFAULT (500 * USEC_PER_MSEC)
#define STORE_BUSY_TIMEOUT_USEC_MAX (60 * USEC_PER_SEC)
#define STORE_ONLINE_WINDOW_USEC_DEFAULT (120 * USEC_PER_SEC)
#define STORE_ONLINE_WINDOW_USEC_MAX (7 * 24 * 3600 * USEC_PER_SEC)
/* API keys record their last use at this granularity, so that checking a key on every
 * request does not write to the database on every request. */
#define STORE_LAST_USED_GRANULARITY_USEC (60 * USEC_PER_SEC)

/* ---- opening ---------------------------------------------------------------------------- */

typedef struct StoreOptions {
        const char *mesh_prefix;        /* IPv4 "a.b.c.d/len", len 8–30; NULL: the default */
        uint64_t busy_timeout_usec;     /* 0: the default; at most STORE_BUSY_TIMEOUT_USEC_MAX */
        uint64_t online_window_usec;    /* 0: the default; at most a week; see StoreProvider.online */
        /* CLOCK_REALTIME in µs; NULL: the real clock. For tests. */
        uint64_t (*clock)(void *userdata);
        void *clock_userdata;
} StoreOptions;

/**
 * store_open() - open (and create, and migrate) a store
 * @location: a file name for SQLite (created 0600; an existing file loses any group and
 *            other permission bits); "sqlite:PATH" is the same. "postgresql://…" is
 *            reserved for the PostgreSQL backend (-EPROTONOSUPPORT today).
 * @opts:     options, or NULL for the defaults
 * @ret:      the store
 *
 * Applies every pending migration, each in its own transaction.
 *
 * Return: 0, -EINVAL (bad options), -EPROTONOSUPPORT (unknown backend), -EPROTO (the
 * database's schema is newer than this program), -EBUSY, -EACCES, -EIO, -ENOMEM.
 */
int store_open(const char *location, const StoreOptions *opts, Store **ret);

/**
 * store_close() - close a store
 * @s: the store, may be NULL
 *
 * Return: NULL.
 */
Store *store_close(Store *s);
CLUB_DEFINE_CLEANUP(Store *, store_close);

/**
 * store_read_begin() - let the reads that follow share one snapshot
 * @s: the store
 *
 * Until store_read_end(), the store's reads run in one read transaction instead of one
 * each: they see the store as it was at the first of them, and pay for the locking once.
 * Meant for the reads of one event-loop callback (an API request's key, limits, providers
 * and secret), never across a wait: the snapshot is only as old as the callback. A write
 * in between ends the snapshot first, so writes are never held back and reads after a
 * write see it. Calls nest. Best effort: on failure the reads simply run one by one.
 *
 * Return: @s, for store_read_endp().
 */
Store *store_read_begin(Store *s);
/* End what store_read_begin() began; NULL is ignored. Return: NULL. */
Store *store_read_end(Store *s);
CLUB_DEFINE_CLEANUP(Store *, store_read_end);

/** store_backend_name() - "sqlite", … */
const char *store_backend_name(const Store *s);

/**
 * store_schema_version() - the schema version of the open database
 * @s:   the store
 * @ret: the number of the last migration applied
 *
 * Return: 0 or a negative errno.
 */
int store_schema_version(Store *s, unsigned *ret);

/** store_schema_version_latest() - the number of the newest migration this program knows */
unsigned store_schema_version_latest(void);

/**
 * store_check_integrity() - run the backend's own consistency check
 * @s: the store
 *
 * For SQLite, PRAGMA integrity_check and PRAGMA foreign_key_check.
 *
 * Return: 0 if the database is sound, -EUCLEAN if not, or another negative errno.
 */
int store_check_integrity(Store *s);

/**
 * store_gateway_address() - the gateway's own mesh address: the first host of the prefix
 * @s:   the store
 * @ret: e.g. 100.96.0.1 for 100.96.0.0/16
 */
void store_gateway_address(const Store *s, struct in_addr *ret);

/** store_mesh_prefix() - the mesh prefix: its network address and length */
void store_mesh_prefix(const Store *s, struct in_addr *ret_network, unsigned *ret_prefixlen);

/* ---- lists of strings ------------------------------------------------------------------- */

/* NULL-terminated arrays of strings, as used for tags, models and capabilities. */
char **store_strv_free(char **l);
CLUB_DEFINE_CLEANUP(char **, store_strv_free);
size_t store_strv_length(char *const *l);

/* ---- users ------------------------------------------------------------------------------ */

typedef struct StoreUser {
        int64_t id;
        char *name;             /* unique; 1–128 of [A-Za-z0-9._@+-], starting alphanumeric */
        bool admin;
        char **tags;            /* sorted; groups a provider can be shared with */
        uint64_t created_usec;
} StoreUser;

void store_user_deinit(StoreUser *u);
void store_users_free(StoreUser *l, size_t n);

/**
 * store_user_create() - add a user
 * @s:      the store
 * @name:   the name
 * @admin:  whether the user administers the gateway
 * @tags:   its tags (1–64 of [A-Za-z0-9._:-], starting alphanumeric; at most 32), or NULL
 * @ret_id: optional: the new user's id
 *
 * Return: 0, -EINVAL, -EEXIST if the name is taken.
 */
int store_user_create(Store *s, const char *name, bool admin, char *const *tags, int64_t *ret_id);
/* Get one user (free with store_user_deinit()): 0 or -ENOENT. */
int store_user_get(Store *s, int64_t id, StoreUser *ret);
int store_user_get_by_name(Store *s, const char *name, StoreUser *ret);
/* All users, by id; free with store_users_free(). */
int store_user_list(Store *s, StoreUser **ret, size_t *ret_n);
/* Replace the user's tags: 0, -EINVAL, -ENOENT. */
int store_user_set_tags(Store *s, int64_t id, char *const *tags);

/**
 * store_user_delete() - delete a user with all it owns
 * @s:  the store
 * @id: the user
 *
 * Its API keys, enrollment keys and providers go with it (the providers' mesh addresses
 * stay allocated forever), and so do the mentions of it in sharing policies. The caller
 * removes the providers' peers from the hub (store_provider_peers() no longer lists them).
 *
 * Return: 0 or -ENOENT.
 */
int store_user_delete(Store *s, int64_t id);

/* ---- API keys --------------------------------------------------------------------------- */

typedef enum StoreScope {
        STORE_SCOPE_INFERENCE = 1 << 0,   /* the OpenAI API and capabilities */
        STORE_SCOPE_AGENT = 1 << 1,       /* register providers */
        _STORE_SCOPES_ALL = STORE_SCOPE_INFERENCE | STORE_SCOPE_AGENT,
} StoreScope;

/* "inference,agent" ⇄ bit mask. Parsing refuses unknown, repeated and empty scopes. */
int store_scopes_from_string(const char *s, unsigned *ret);
int store_scopes_to_string(unsigned scopes, char **ret);

typedef struct StoreApiKey {
        int64_t id;
        int64_t user_id;
        char *name;                     /* a label, NULL if none */
        char prefix[KEY_PREFIX_SIZE];   /* shown as "ic-<prefix>…" */
        unsigned scopes;                /* StoreScope bits, at least one */
        uint64_t created_usec;
        uint64_t expires_usec;          /* USEC_INFINITY: never */
        uint64_t revoked_usec;          /* 0: not revoked */
        uint64_t last_used_usec;        /* 0: never; STORE_LAST_USED_GRANULARITY_USEC */
} StoreApiKey;

void store_api_key_deinit(StoreApiKey *k);
void store_api_keys_free(StoreApiKey *l, size_t n);

/**
 * store_api_key_create() - make a new API key for a user
 * @s:            the store
 * @user_id:      its owner
 * @name:         a label (1–64 printable characters), or NULL
 * @scopes:       StoreScope bits, at least one
 * @expires_usec: when it expires, in the future; USEC_INFINITY for never
 * @ret_key:      optional: the key's record
 * @ret_secret:   the key itself ("ic-…"), malloc'd. It exists only here: only its hash is
 *                stored. Hand it to the person once, then erase_and_free() it.
 *
 * Return: 0, -EINVAL, -ENOENT (no such user).
 */
int store_api_key_create(Store *s, int64_t user_id, const char *name, unsigned scopes,
                         uint64_t expires_usec, StoreApiKey *ret_key, char **ret_secret);

/**
 * store_api_key_verify() - authenticate a presented API key
 * @s:        the store
 * @secret:   the key as presented (after "Bearer ")
 * @scope:    the StoreScope the request needs, or 0 for none
 * @ret_key:  optional: the key's record
 *
 * The key is found by its prefix and its SHA-256 compared in constant time. On success
 * its last use is recorded (at most once per STORE_LAST_USED_GRANULARITY_USEC; a failure
 * to record it does not fail the check).
 *
 * Return: 0; -EKEYREJECTED (malformed or unknown key), -EKEYREVOKED, -EKEYEXPIRED,
 * -EACCES (valid key without @scope), or a database error.
 */
int store_api_key_verify(Store *s, const char *secret, unsigned scope, StoreApiKey *ret_key);

/* One key's record, never its secret: 0 or -ENOENT. */
int store_api_key_get(Store *s, int64_t id, StoreApiKey *ret);
/* A user's keys (user_id > 0) or everybody's (user_id == 0), by id; never any secret. */
int store_api_key_list(Store *s, int64_t user_id, StoreApiKey **ret, size_t *ret_n);
/* Revoke: the key stays listed, and is refused from now on. -ENOENT; 0 if already revoked. */
int store_api_key_revoke(Store *s, int64_t id);

/* A key's own limits of the OpenAI API (docs/club-gatewayd.md, "Usage and limits"). */
#define STORE_LIMIT_DEFAULT (-2)        /* the gateway's [Limits] default */
#define STORE_LIMIT_UNLIMITED (-1)
#define STORE_LIMIT_MAX ((int64_t) 1000000000000) /* 10^12 */

typedef struct StoreKeyLimits {
        int64_t requests_per_minute;    /* STORE_LIMIT_DEFAULT, _UNLIMITED, or 0…STORE_LIMIT_MAX */
        int64_t tokens_per_minute;
        int64_t concurrent_streams;
} StoreKeyLimits;

/* A key's limits: 0 or -ENOENT. */
int store_api_key_get_limits(Store *s, int64_t id, StoreKeyLimits *ret);
/* Set all three: 0, -EINVAL (a value out of range), -ENOENT. */
int store_api_key_set_limits(Store *s, int64_t id, const StoreKeyLimits *limits);

/* ---- enrollment keys -------------------------------------------------------------------- */

typedef enum StoreEnrollmentFlags {
        STORE_ENROLLMENT_REUSABLE = 1 << 0,     /* otherwise one-time */
        STORE_ENROLLMENT_EPHEMERAL = 1 << 1,    /* its providers are reaped when offline */
        _STORE_ENROLLMENT_FLAGS_ALL = STORE_ENROLLMENT_REUSABLE | STORE_ENROLLMENT_EPHEMERAL,
} StoreEnrollmentFlags;

typedef struct StoreEnrollmentKey {
        int64_t id;
        int64_t user_id;                /* who owns the providers enrolled with it */
        char *name;                     /* a label, NULL if none */
        char prefix[KEY_PREFIX_SIZE];   /* shown as "ie-<prefix>…" */
        bool reusable;
        bool ephemeral;
        char **tags;                    /* given to the providers it enrolls */
        uint64_t uses;
        uint64_t created_usec;
        uint64_t expires_usec;          /* USEC_INFINITY: never */
        uint64_t revoked_usec;          /* 0: not revoked */
        uint64_t last_used_usec;        /* 0: never */
} StoreEnrollmentKey;

void store_enrollment_key_deinit(StoreEnrollmentKey *k);
void store_enrollment_keys_free(StoreEnrollmentKey *l, size_t n);

/**
 * store_enrollment_key_create() - make a new enrollment key
 * @s:            the store
 * @user_id:      who will own the providers it enrolls
 * @name:         a label, or NULL
 * @flags:        StoreEnrollmentFlags
 * @tags:         tags for the providers it enrolls, or NULL
 * @expires_usec: in the future, or USEC_INFINITY
 * @ret_key:      optional: the record
 * @ret_secret:   the key ("ie-…"), malloc'd; only its hash is stored
 *
 * Return: 0, -EINVAL, -ENOENT (no such user).
 */
int store_enrollment_key_create(Store *s, int64_t user_id, const char *name, unsigned flags,
                                char *const *tags, uint64_t expires_usec,
                                StoreEnrollmentKey *ret_key, char **ret_secret);

/**
 * store_enrollment_key_consume() - use an enrollment key once
 * @s:       the store
 * @secret:  the key as presented
 * @ret_key: optional: its record, with the use counted
 *
 * Atomic: the check and the increment are one conditional UPDATE, so a one-time key is
 * consumed exactly once however many connections race for it. store_provider_register()
 * does the same inside its own transaction; call this only to consume a key without
 * registering a provider.
 *
 * Return: 0; -EKEYREJECTED (malformed or unknown), -EKEYREVOKED, -EKEYEXPIRED (expired,
 * or a one-time key already used), or a database error.
 */
int store_enrollment_key_consume(Store *s, const char *secret, StoreEnrollmentKey *ret_key);

/* One key's record: 0 or -ENOENT. */
int store_enrollment_key_get(Store *s, int64_t id, StoreEnrollmentKey *ret);
/* A user's keys (user_id > 0) or all (0), by id. */
int store_enrollment_key_list(Store *s, int64_t user_id, StoreEnrollmentKey **ret, size_t *ret_n);
/* -ENOENT; 0 if already revoked. Providers it enrolled stay. */
int store_enrollment_key_revoke(Store *s, int64_t id);

/* ---- providers -------------------------------------------------------------------------- */

typedef enum StoreProviderState {
        STORE_PROVIDER_REGISTERED,      /* (re-)registered, no heartbeat since */
        STORE_PROVIDER_ACTIVE,          /* heartbeating; the first heartbeat moves it here */
        STORE_PROVIDER_UNREACHABLE,     /* the gateway's probe through the tunnel failed */
        STORE_PROVIDER_DISABLED,        /* by an administrator; kept until they change it */
        _STORE_PROVIDER_STATE_MAX,
        _STORE_PROVIDER_STATE_INVALID = -EINVAL,
} StoreProviderState;

const char *store_provider_state_to_string(StoreProviderState st);
StoreProviderState store_provider_state_from_string(const char *s);

typedef enum StoreShareMode {
        STORE_SHARE_PRIVATE,            /* the owner only */
        STORE_SHARE_EVERYONE,           /* every user */
        STORE_SHARE_RESTRICTED,         /* the owner, the named users, and users with a named tag */
        _STORE_SHARE_MODE_MAX,
        _STORE_SHARE_MODE_INVALID = -EINVAL,
} StoreShareMode;

const char *store_share_mode_to_string(StoreShareMode m);
StoreShareMode store_share_mode_from_string(const char *s);

typedef struct StoreSharing {
        StoreShareMode mode;
        int64_t *user_ids;              /* RESTRICTED: sorted; others: none */
        size_t n_user_ids;
        char **tags;                    /* RESTRICTED: user tags, sorted; others: NULL */
} StoreSharing;

typedef struct StoreProvider {
        int64_t id;
        int64_t owner_id;
        char *name;                     /* unique per owner; 1–64 of [A-Za-z0-9._-] */
        char public_key[WG_KEY_B64_SIZE];       /* base64; unique among providers */
        struct in_addr mesh_address;    /* its /32; unique, and never given to another */
        uint16_t agent_port;
        StoreProviderState state;
        bool agent_draining;            /* reported in its heartbeats */
        bool admin_draining;            /* set with store_provider_set_draining() */
        bool ephemeral;
        int64_t enrollment_key_id;      /* 0: registered with an API key, or the key is gone */
        StoreSharing sharing;
        char **tags;                    /* sorted */
        char **models;                  /* sorted; from the last heartbeat */
        char **capabilities;            /* sorted; from the last heartbeat */
        uint32_t in_flight;             /* from the last heartbeat */
        uint32_t capacity;              /* concurrent requests it accepts; 0: unknown */
        char *upstream_health;          /* JSON from the last heartbeat, NULL if none */
        char *version;                  /* agent version, NULL if unknown */
        uint64_t created_usec;
        uint64_t registered_usec;       /* the last (re-)registration */
        uint64_t last_heartbeat_usec;   /* 0: none since creation */
        /* Computed on read: ACTIVE, draining neither way, and a heartbeat within the
         * store's online window. */
        bool online;
} StoreProvider;

void store_provider_deinit(StoreProvider *p);
void store_providers_free(StoreProvider *l, size_t n);

typedef struct StoreRegistration {
        /* Who registers: exactly one of the two. */
        int64_t owner_id;               /* a user authenticated by an API key with the agent scope */
        const char *enrollment_key;     /* or an enrollment key ("ie-…"), consumed here */

        const char *name;
        const char *public_key;         /* WireGuard public key, base64 */
        uint16_t agent_port;            /* 1–65535 */
        const char *version;            /* optional */
} StoreRegistration;

/**
 * store_provider_register() - create or update a provider, in one transaction
 * @s:          the store
 * @reg:        what registers
 * @ret:        optional: the provider's record
 * @ret_secret: its new signing secret, STORE_SECRET_LEN random bytes; explicit_bzero() it
 *              once handed to the agent
 *
 * The provider is identified by (owner, name); with an enrollment key the owner is the
 * key's user, the key is consumed, and its tags and ephemeral flag go to a new provider.
 * A new provider gets the next mesh address that was never handed out; an existing one
 * keeps its address, gets the new public key, port and version, a fresh secret (the old
 * one stops working), and state REGISTERED unless it is DISABLED.
 *
 * A provider created with an API key can be re-registered by its owner's API keys only,
 * and one created with an enrollment key by that enrollment key or its owner's API keys,
 * so that a fleet's shared key cannot take over another machine's name.
 *
 * Return: 1 if created, 0 if updated; -EINVAL; -ENOENT (no such owner); -EEXIST (the
 * public key belongs to another provider, or the name to a provider this enrollment key
 * may not replace); -ENOSPC (no mesh address left); enrollment key errors as for
 * store_enrollment_key_consume(); database errors. On failure nothing changed, and an
 * enrollment key was not consumed.
 */
int store_provider_register(Store *s, const StoreRegistration *reg, StoreProvider *ret,
                            uint8_t ret_secret[static STORE_SECRET_LEN]);

/*
 * Get one provider, with its tags, models, capabilities and sharing policy (free with
 * store_provider_deinit()): by id; by mesh address (how a heartbeat is attributed); by
 * public key; by owner and name. Return: 0, -ENOENT (-EINVAL for a malformed public key).
 */
int store_provider_get(Store *s, int64_t id, StoreProvider *ret);
int store_provider_get_by_address(Store *s, struct in_addr address, StoreProvider *ret);
int store_provider_get_by_public_key(Store *s, const char *public_key, StoreProvider *ret);
int store_provider_get_by_name(Store *s, int64_t owner_id, const char *name, StoreProvider *ret);

/**
 * store_provider_get_secret() - the provider's signing secret, to sign and verify requests
 * @s:   the store
 * @id:  the provider
 * @ret: STORE_SECRET_LEN bytes; explicit_bzero() them after use
 *
 * Return: 0 or -ENOENT.
 */
int store_provider_get_secret(Store *s, int64_t id, uint8_t ret[static STORE_SECRET_LEN]);

typedef struct StoreProviderFilter {
        int64_t owner_id;               /* > 0: owned by this user */
        int64_t usable_by;              /* > 0: this user may use it (own, or shared with them) */
        const char *model;              /* serves this model */
        const char *capability;         /* offers this capability */
        bool online_only;               /* StoreProvider.online */
} StoreProviderFilter;

/* Whether @name is a valid capability name (1–64 of [A-Za-z0-9._:-], starting alphanumeric),
 * as heartbeats and StoreProviderFilter.capability take it. */
bool store_capability_name_is_valid(const char *name);

/* Providers matching every condition set in @filter (NULL: all), by id; free with
 * store_providers_free(). usable_by + model + online_only is the routing question. */
int store_provider_list(Store *s, const StoreProviderFilter *filter, StoreProvider **ret, size_t *ret_n);

/**
 * store_provider_delete() - delete a provider
 *
 * Its mesh address stays allocated: it is never handed out again.
 *
 * Return: 0 or -ENOENT.
 */
int store_provider_delete(Store *s, int64_t id);

/* The administrator's drain flag (the agent's own comes with heartbeats): 0 or -ENOENT. */
int store_provider_set_draining(Store *s, int64_t id, bool draining);
/* Set the state: ACTIVE/UNREACHABLE after the daemon's probe, DISABLED by an administrator.
 * 0, -EINVAL, -ENOENT. */
int store_provider_set_state(Store *s, int64_t id, StoreProviderState state);
/* Replace the provider's tags: 0, -EINVAL, -ENOENT. */
int store_provider_set_tags(Store *s, int64_t id, char *const *tags);

/**
 * store_provider_set_sharing() - who besides the owner may use the provider
 * @s:       the store
 * @id:      the provider
 * @sharing: PRIVATE and EVERYONE take no users and no tags; RESTRICTED takes users (who
 *           must exist) and user tags, any number including none
 *
 * Return: 0, -EINVAL, -ENOENT (no such provider or user).
 */
int store_provider_set_sharing(Store *s, int64_t id, const StoreSharing *sharing);

typedef struct StoreHeartbeat {
        char *const *models;            /* NULL or NULL-terminated; duplicates are merged */
        char *const *capabilities;
        uint32_t in_flight;
        uint32_t capacity;
        const char *upstream_health;    /* JSON text, ≤ 64 KiB, or NULL */
        const char *version;            /* or NULL to keep the known one */
        bool draining;
} StoreHeartbeat;

/**
 * store_provider_heartbeat() - record a heartbeat
 * @s:  the store
 * @id: the provider (found by the caller from the mesh source address)
 * @hb: what it reported
 *
 * Replaces models, capabilities, load, health and the agent's draining flag, sets the
 * last heartbeat to now, and moves a REGISTERED provider to ACTIVE.
 *
 * Return: 0, -EINVAL, -ENOENT.
 */
int store_provider_heartbeat(Store *s, int64_t id, const StoreHeartbeat *hb);

typedef struct StorePeer {
        int64_t provider_id;
        char public_key[WG_KEY_B64_SIZE];
        struct in_addr address;         /* allowed IPs: address/32 */
} StorePeer;

/* Every provider's WireGuard peer, for converging the hub; by provider id; free(). Disabled
 * and draining providers are included: their tunnels stay up for heartbeats. */
int store_provider_peers(Store *s, StorePeer **ret, size_t *ret_n);

/**
 * store_provider_list_stale_ephemeral() - ephemeral providers offline for too long
 * @s:     the store
 * @grace: how long without a heartbeat (or, without any, since registration)
 * @ret, @ret_n: the providers
 */
int store_provider_list_stale_ephemeral(Store *s, uint64_t grace_usec, StoreProvider **ret, size_t *ret_n);

/**
 * store_provider_reap_ephemeral() - delete ephemeral providers offline for too long
 *
 * The selection and the deletion are one transaction: a provider that heartbeats in
 * between is not deleted. @ret receives the deleted providers (for removing their peers).
 */
int store_provider_reap_ephemeral(Store *s, uint64_t grace_usec, StoreProvider **ret, size_t *ret_n);

/* ---- usage ------------------------------------------------------------------------------- */

/* Rows one store_usage_insert() takes; groups store_usage_totals() returns at most. */
#define STORE_USAGE_BATCH_MAX 1024U
#define STORE_USAGE_GROUPS_MAX 10000U
#define STORE_USAGE_REQUEST_ID_MAX 64U

/* One forwarded request, as recorded (docs/store.md, table usage). */
typedef struct StoreUsageRecord {
        char request_id[STORE_USAGE_REQUEST_ID_MAX + 1];
        uint64_t started_usec;          /* CLOCK_REALTIME */
        int64_t key_id;
        int64_t user_id;
        int64_t provider_id;            /* 0: none was tried */
        char *model;                    /* or the capability's name */
        bool capability;
        bool stream;
        const char *outcome;            /* api_outcome_to_string(): "ok", "failed", … (static) */
        unsigned status;
        unsigned attempts;
        uint64_t prompt_tokens;
        uint64_t completion_tokens;
        bool usage_reported;
        uint64_t time_to_first_token_usec; /* 0: no byte of an answer */
        uint64_t duration_usec;
} StoreUsageRecord;

/**
 * store_usage_insert() - record requests
 * @s: the store
 * @l: the records (1 to STORE_USAGE_BATCH_MAX)
 * @n: their number
 *
 * One transaction for all of them.
 *
 * Return: 0, -EINVAL (a bad record), or a database error (nothing was written).
 */
int store_usage_insert(Store *s, const StoreUsageRecord *l, size_t n);

/**
 * store_usage_prune() - delete old usage
 * @s:      the store
 * @before: rows of requests started before this (CLOCK_REALTIME µs) go
 * @max:    at most this many rows in one call (the caller repeats while it gets @max)
 *
 * Return: the number of rows deleted, or a negative errno.
 */
int store_usage_prune(Store *s, uint64_t before, unsigned max);

typedef enum StoreUsageGroup {
        STORE_USAGE_BY_KEY,
        STORE_USAGE_BY_PROVIDER,
        STORE_USAGE_BY_MODEL,
        STORE_USAGE_BY_USER,
        _STORE_USAGE_GROUP_MAX,
        _STORE_USAGE_GROUP_INVALID = -EINVAL,
} StoreUsageGroup;

const char *store_usage_group_to_string(StoreUsageGroup g);
StoreUsageGroup store_usage_group_from_string(const char *s);

typedef struct StoreUsageFilter {
        int64_t user_id;                /* 0: everybody's */
        const char *key_prefix;         /* the 8 characters after "ic-"; NULL: every key */
        int64_t provider_id;            /* 0: every provider */
        const char *model;              /* NULL: every model */
        uint64_t since_usec;            /* started at or after; 0: from the start */
        uint64_t until_usec;            /* started before; 0: until now */
        StoreUsageGroup group;
} StoreUsageFilter;

typedef struct StoreUsageTotal {
        int64_t id;                     /* the key's, provider's or user's id; 0 by model (or no provider) */
        char *name;                     /* key prefix, provider name, model, user name; NULL if deleted */
        uint64_t requests;
        uint64_t ok, failed, truncated, cancelled;
        uint64_t other;                 /* refused, unavailable, model_not_found, provider_error */
        uint64_t prompt_tokens;
        uint64_t completion_tokens;
        uint64_t duration_usec;         /* summed */
        uint64_t time_to_first_token_usec; /* summed over the requests that got a first byte */
        uint64_t first_token_requests;  /* …their number */
        uint64_t first_usec, last_usec; /* the first and last request's start */
} StoreUsageTotal;

void store_usage_totals_free(StoreUsageTotal *l, size_t n);

/**
 * store_usage_totals() - usage summed per key, provider, model or user
 * @s:      the store
 * @filter: which requests, and how to group them
 * @ret, @ret_n: the groups, ordered by id (by name for models), at most STORE_USAGE_GROUPS_MAX
 *
 * Return: 0, -EINVAL, or a database error.
 */
int store_usage_totals(Store *s, const StoreUsageFilter *filter, StoreUsageTotal **ret, size_t *ret_n);
