/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What a store backend implements. Only store.c and the backends include this.
 *
 * store.c has already checked every argument against the limits in store.h, sorted and
 * de-duplicated every list (tags, models, capabilities, users), made the secrets and
 * their hashes, and read the clock; a backend only stores and finds. Every operation
 * that writes more than one row is one transaction. Backends return the errors listed in
 * store.h, write outputs only on success, and never see a key in clear text.
 */

#include "store.h"

typedef struct StoreBackend StoreBackend;

struct Store {
        const StoreBackend *backend;
        void *data;                     /* the backend's */

        uint32_t mesh_network;          /* host byte order */
        unsigned mesh_prefixlen;
        uint32_t mesh_gateway;          /* network + 1 */
        uint32_t mesh_first;            /* the range providers are given addresses from */
        uint32_t mesh_last;             /* (the broadcast address is left out) */

        unsigned read_depth;            /* store_read_begin() calls not yet ended */

        uint64_t busy_timeout_usec;
        uint64_t online_window_usec;
        uint64_t (*clock)(void *userdata);
        void *clock_userdata;
};

/* Which provider: exactly one of id, address, public_key, or owner_id with name. */
typedef struct StoreProviderSelector {
        int64_t id;
        const struct in_addr *address;
        const char *public_key;
        int64_t owner_id;
        const char *name;
} StoreProviderSelector;

struct StoreBackend {
        const char *name;

        /* Connect, configure, migrate; set s->data. close() accepts a half-opened store. */
        int (*open)(Store *s, const char *location);
        void (*close)(Store *s);
        int (*schema_version)(Store *s, unsigned *ret);
        int (*check_integrity)(Store *s);
        /* Optional: one read snapshot for the reads until read_end() (store_read_begin()).
         * Nested calls are counted by store.c; a backend sees only the outermost pair. */
        int (*read_begin)(Store *s);
        void (*read_end)(Store *s);

        int (*user_create)(Store *s, const char *name, bool admin, char *const *tags, uint64_t now,
                           int64_t *ret_id);
        /* By id, or by name if name is non-NULL. */
        int (*user_get)(Store *s, int64_t id, const char *name, StoreUser *ret);
        int (*user_list)(Store *s, StoreUser **ret, size_t *ret_n);
        int (*user_set_tags)(Store *s, int64_t id, char *const *tags);
        int (*user_delete)(Store *s, int64_t id);

        /* key->id is ignored. */
        int (*api_key_insert)(Store *s, const StoreApiKey *key, const uint8_t *hash, int64_t *ret_id);
        /* The key with this prefix whose hash equals @hash (key_hash_equal()); -EKEYREJECTED. */
        int (*api_key_lookup)(Store *s, const char *prefix, const uint8_t *hash, StoreApiKey *ret);
        /* Set the last use to @now unless it is newer than @now - @granularity. 1 if written. */
        int (*api_key_touch)(Store *s, int64_t id, uint64_t now, uint64_t granularity);
        int (*api_key_get)(Store *s, int64_t id, StoreApiKey *ret);
        int (*api_key_list)(Store *s, int64_t user_id, StoreApiKey **ret, size_t *ret_n);
        int (*api_key_revoke)(Store *s, int64_t id, uint64_t now);
        int (*api_key_get_limits)(Store *s, int64_t id, StoreKeyLimits *ret);
        int (*api_key_set_limits)(Store *s, int64_t id, const StoreKeyLimits *limits);

        int (*enrollment_key_insert)(Store *s, const StoreEnrollmentKey *key, const uint8_t *hash,
                                     int64_t *ret_id);
        int (*enrollment_key_consume)(Store *s, const char *prefix, const uint8_t *hash, uint64_t now,
                                      StoreEnrollmentKey *ret);
        int (*enrollment_key_get)(Store *s, int64_t id, StoreEnrollmentKey *ret);
        int (*enrollment_key_list)(Store *s, int64_t user_id, StoreEnrollmentKey **ret, size_t *ret_n);
        int (*enrollment_key_revoke)(Store *s, int64_t id, uint64_t now);

        /* reg->enrollment_key is replaced by @ek_prefix/@ek_hash (NULL for an API key). Allocates
         * from s->mesh_first … s->mesh_last. 1 if created, 0 if updated. */
        int (*provider_register)(Store *s, const StoreRegistration *reg, const char *ek_prefix,
                                 const uint8_t *ek_hash, const uint8_t *secret, uint64_t now,
                                 int64_t *ret_id);
        int (*provider_get)(Store *s, const StoreProviderSelector *sel, StoreProvider *ret);
        int (*provider_get_secret)(Store *s, int64_t id, uint8_t *ret);
        /* @online_since: providers with a heartbeat at or after it count as online. */
        int (*provider_list)(Store *s, const StoreProviderFilter *filter, uint64_t online_since,
                             StoreProvider **ret, size_t *ret_n);
        int (*provider_delete)(Store *s, int64_t id);
        int (*provider_set_draining)(Store *s, int64_t id, bool draining);
        int (*provider_set_state)(Store *s, int64_t id, StoreProviderState state);
        int (*provider_set_tags)(Store *s, int64_t id, char *const *tags);
        int (*provider_set_sharing)(Store *s, int64_t id, const StoreSharing *sharing);
        int (*provider_heartbeat)(Store *s, int64_t id, const StoreHeartbeat *hb, uint64_t now);
        int (*provider_peers)(Store *s, StorePeer **ret, size_t *ret_n);
        /* Ephemeral providers whose last heartbeat and registration are both before @cutoff;
         * deleted in the same transaction if @reap. */
        int (*provider_stale_ephemeral)(Store *s, uint64_t cutoff, bool reap, StoreProvider **ret,
                                        size_t *ret_n);

        /* Usage: all rows in one transaction; prune deletes at most @max rows. */
        int (*usage_insert)(Store *s, const StoreUsageRecord *l, size_t n);
        int (*usage_prune)(Store *s, uint64_t before, unsigned max);
        int (*usage_totals)(Store *s, const StoreUsageFilter *f, uint64_t until, StoreUsageTotal **ret,
                            size_t *ret_n);
};

extern const StoreBackend store_backend_sqlite;

/* Move a struct out of a variable with a cleanup attribute, leaving it zeroed. */
#define TAKE_STRUCT(s)                                  \
        ({                                              \
                __typeof__(s) _s_ = (s);                \
                (s) = (__typeof__(s)) {};               \
                _s_;                                    \
        })

/* Helpers for backends (store.c). */

/* Grow *p (an array of @size-byte elements, *allocated of them) to hold at least @need. */
int store_array_grow(void **p, size_t *allocated, size_t need, size_t size);
/* Append a copy of @s. */
int store_strv_append(char ***l, size_t *n, const char *s);
