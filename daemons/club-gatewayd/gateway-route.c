/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <limits.h>
#include <sys/random.h>
#include <time.h>

#include "gateway-route.h"

typedef struct RouterEntry {
        int64_t id;
        unsigned in_flight;
        unsigned failures;              /* in a row */
        uint64_t skip_until;            /* CLOCK_MONOTONIC µs; 0: not skipped */
        uint64_t last_failure;          /* CLOCK_MONOTONIC µs */
} RouterEntry;

struct Router {
        uint64_t backoff_min;
        uint64_t backoff_max;
        uint64_t rng;                   /* xorshift64 state, for ties only */
        RouterEntry *entries;
        size_t n_entries;
        size_t n_allocated;
};

int router_new(uint64_t backoff_min_usec, uint64_t backoff_max_usec, Router **ret) {
        Router *r;

        assert(ret);
        r = new0(Router, 1);
        if (!r)
                return -ENOMEM;
        r->backoff_min = backoff_min_usec ?: ROUTER_BACKOFF_MIN_USEC_DEFAULT;
        r->backoff_max = MAX(backoff_max_usec ?: ROUTER_BACKOFF_MAX_USEC_DEFAULT, r->backoff_min);
        if (getrandom(&r->rng, sizeof r->rng, GRND_NONBLOCK) != sizeof r->rng)
                r->rng = now_usec(CLOCK_MONOTONIC) ^ now_usec(CLOCK_REALTIME);
        r->rng |= 1;
        *ret = r;
        return 0;
}

Router *router_free(Router *r) {
        if (!r)
                return NULL;
        free(r->entries);
        return mfree(r);
}

static uint64_t router_random(Router *r) {
        r->rng ^= r->rng << 13;
        r->rng ^= r->rng >> 7;
        r->rng ^= r->rng << 17;
        return r->rng;
}

static RouterEntry *entry_find(Router *r, int64_t id) {
        for (size_t i = 0; i < r->n_entries; i++)
                if (r->entries[i].id == id)
                        return &r->entries[i];
        return NULL;
}

static RouterEntry *entry_get(Router *r, int64_t id) {
        RouterEntry *e = entry_find(r, id);

        if (e)
                return e;
        if (r->n_entries >= ROUTER_ENTRIES_MAX)
                return NULL;
        if (r->n_entries == r->n_allocated) {
                size_t a = MAX(r->n_allocated * 2, (size_t) 16);
                RouterEntry *l = reallocarray(r->entries, a, sizeof *l);

                if (!l)
                        return NULL;
                r->entries = l;
                r->n_allocated = a;
        }
        e = &r->entries[r->n_entries++];
        *e = (RouterEntry) { .id = id };
        return e;
}

/* An entry with nothing in flight whose failures no longer matter goes. */
static void entry_maybe_drop(Router *r, RouterEntry *e, uint64_t now) {
        if (e->in_flight > 0)
                return;
        if (e->failures > 0 && now < e->last_failure + 2 * r->backoff_max)
                return;
        *e = r->entries[--r->n_entries];
}

static bool entry_skipped(const RouterEntry *e, uint64_t now) {
        return e && e->skip_until > now;
}

static bool excluded(int64_t id, const int64_t *exclude, size_t n_exclude) {
        for (size_t i = 0; i < n_exclude; i++)
                if (exclude[i] == id)
                        return true;
        return false;
}

int router_pick(Router *r, const StoreProvider *candidates, size_t n, const int64_t *exclude, size_t n_exclude,
                uint64_t now, size_t *ret_index, uint64_t *ret_wait) {
        size_t best = SIZE_MAX, ties = 0;
        unsigned best_load = 0;
        uint64_t wait = UINT64_MAX;

        assert(r && (candidates || n == 0) && ret_index && ret_wait);

        for (size_t i = 0; i < n; i++) {
                const RouterEntry *e;
                unsigned load;

                if (excluded(candidates[i].id, exclude, n_exclude))
                        continue;
                e = entry_find(r, candidates[i].id);
                if (entry_skipped(e, now)) {
                        wait = MIN(wait, e->skip_until - now);
                        continue;
                }
                load = e ? e->in_flight : 0;
                if (best == SIZE_MAX || load < best_load) {
                        best = i;
                        best_load = load;
                        ties = 1;
                } else if (load == best_load && router_random(r) % ++ties == 0)
                        best = i; /* each of the k tied ones stays chosen with probability 1/k */
        }
        if (best != SIZE_MAX) {
                *ret_index = best;
                return 0;
        }
        if (wait != UINT64_MAX) {
                *ret_wait = wait;
                return -EAGAIN;
        }
        return -ENOENT;
}

int router_begin(Router *r, int64_t id) {
        RouterEntry *e = entry_get(r, id);

        if (!e)
                return -ENOBUFS;
        e->in_flight++;
        return 0;
}

void router_end(Router *r, int64_t id, RouterResult result, uint64_t now) {
        RouterEntry *e = entry_find(r, id);
        uint64_t backoff;

        if (!e)
                return;
        if (e->in_flight > 0)
                e->in_flight--;
        switch (result) {
        case ROUTER_SUCCESS:
                e->failures = 0;
                e->skip_until = 0;
                break;
        case ROUTER_FAILURE:
                backoff = r->backoff_min;
                for (unsigned i = 0; i < e->failures && backoff < r->backoff_max; i++)
                        backoff *= 2;
                backoff = MIN(backoff, r->backoff_max);
                if (e->failures < UINT_MAX)
                        e->failures++;
                e->last_failure = now;
                e->skip_until = MAX(e->skip_until, now + backoff);
                break;
        default:
                break;
        }
        entry_maybe_drop(r, e, now);
}

unsigned router_in_flight(Router *r, int64_t id) {
        const RouterEntry *e = entry_find(r, id);

        return e ? e->in_flight : 0;
}

bool router_is_backing_off(Router *r, int64_t id, uint64_t now) {
        return entry_skipped(entry_find(r, id), now);
}
