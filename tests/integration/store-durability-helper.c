/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The gateway store under kill -9 (driven by test-store-durability.sh).
 *
 *   store-durability-helper init DB
 *   store-durability-helper register DB RUN
 *           Registers providers "rRUN-N" for N = 0, 1, … until killed. After each
 *           registration has returned (that is, committed) it writes one line to stdout:
 *               reg ID NAME ADDRESS PUBLIC-KEY
 *           and after every fifth one it deletes the one before, writing "deleting ID" before
 *           and "del ID" after the deletion. A "reg" or "del" line is an acknowledgement:
 *           that write must survive anything. A provider with only "deleting" may be
 *           there or not (the kill came between the commit and the acknowledgement).
 *   store-durability-helper check DB ACKS
 *   store-durability-helper check-live DB ACKS
 *           Reads the acknowledgements first, then the database, and checks that every
 *           acknowledged registration is there unless its deletion was acknowledged too (or
 *           begun: "deleting"),
 *           with the same name, address and key; that no address was ever acknowledged
 *           for two providers; that live providers' addresses are unique; and that the
 *           database passes PRAGMA integrity_check and foreign_key_check. A last line
 *           without its newline was cut off by the kill and is no acknowledgement.
 *           check-live runs while "register" is still writing: the last two acknowledged
 *           registrations may then have been deleted after the acknowledgements were read
 *           (each deletion takes the one before the newest), so they may be missing.
 *
 * Exit status 0 on success, 1 on a failed check, 2 on a usage or setup error.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "store.h"
#include "wg-key.h"

#define USER "durability"
#define ACKS_MAX 1000000

static int open_store(const char *db, Store **ret) {
        /* Generous: the checker reads while a registering process writes. A /8, so that
         * the writer never runs out of addresses, however fast the disk. */
        StoreOptions o = { .busy_timeout_usec = 10 * USEC_PER_SEC, .mesh_prefix = "10.0.0.0/8" };
        int r = store_open(db, &o, ret);

        if (r < 0)
                fprintf(stderr, "Cannot open %s: %s\n", db, strerror(-r));
        return r;
}

static int verb_init(const char *db) {
        Store *s = NULL;
        int r;

        if (open_store(db, &s) < 0)
                return 2;
        r = store_user_create(s, USER, false, NULL, NULL);
        store_close(s);
        if (r < 0 && r != -EEXIST) {
                fprintf(stderr, "Cannot create the user: %s\n", strerror(-r));
                return 2;
        }
        return 0;
}

/* write(2) the whole line, no stdio buffer in between. */
static int ack(const char *line) {
        size_t n = strlen(line);

        while (n > 0) {
                ssize_t k = write(STDOUT_FILENO, line, n);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                line += k;
                n -= (size_t) k;
        }
        return 0;
}

static int verb_register(const char *db, const char *run_s) {
        Store *s = NULL;
        StoreUser u = {};
        int64_t previous = 0;
        unsigned run;
        int r;

        run = (unsigned) strtoul(run_s, NULL, 10);
        if (open_store(db, &s) < 0)
                return 2;
        r = store_user_get_by_name(s, USER, &u);
        if (r < 0) {
                fprintf(stderr, "No user: %s\n", strerror(-r));
                return 2;
        }

        for (uint32_t i = 0;; i++) {
                char name[32], key[WG_KEY_B64_SIZE], line[256], a[INET_ADDRSTRLEN];
                uint8_t secret[STORE_SECRET_LEN];
                StoreProvider p = {};
                WgKey k = { .data = { 2 } };

                memcpy(k.data + 1, &run, sizeof run);
                memcpy(k.data + 5, &i, sizeof i);
                wg_key_to_base64(&k, key);
                snprintf(name, sizeof name, "r%u-%" PRIu32, run, i);

                r = store_provider_register(s, &(StoreRegistration) {
                        .owner_id = u.id,
                        .name = name,
                        .public_key = key,
                        .agent_port = 8080,
                }, &p, secret);
                if (r == -EBUSY)
                        continue;               /* the checker held the lock: not acknowledged */
                if (r < 0) {
                        fprintf(stderr, "Registration of %s failed: %s\n", name, strerror(-r));
                        return 1;
                }
                snprintf(line, sizeof line, "reg %" PRIi64 " %s %s %s\n", p.id, p.name,
                         inet_ntop(AF_INET, &p.mesh_address, a, sizeof a), p.public_key);
                if (ack(line) < 0)
                        return 2;

                if (i % 5 == 4 && previous > 0) {
                        snprintf(line, sizeof line, "deleting %" PRIi64 "\n", previous);
                        if (ack(line) < 0)
                                return 2;
                        r = store_provider_delete(s, previous);
                        if (r < 0 && r != -EBUSY) {
                                fprintf(stderr, "Deletion failed: %s\n", strerror(-r));
                                return 1;
                        }
                        if (r >= 0) {
                                snprintf(line, sizeof line, "del %" PRIi64 "\n", previous);
                                if (ack(line) < 0)
                                        return 2;
                        }
                }
                previous = p.id;
                store_provider_deinit(&p);
        }
}

typedef struct Ack {
        int64_t id;
        char name[32];
        char address[INET_ADDRSTRLEN];
        char key[WG_KEY_B64_SIZE];
        bool deleting;          /* the deletion was begun: either state is fine */
        bool deleted;           /* the deletion was acknowledged */
} Ack;

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int verb_check(const char *db, const char *acks_path, bool live) {
        Ack *acks = NULL;
        size_t n_acks = 0, n_live = 0, n_deleted = 0, n_cut = 0;
        StoreProvider *l = NULL;
        size_t n = 0;
        Store *s = NULL;
        char line[512];
        const char **addrs;
        FILE *f;
        int r, failed = 0;

        /* Acknowledgements first: everything in them was committed before the database is read. */
        f = fopen(acks_path, "re");
        if (!f) {
                fprintf(stderr, "Cannot open %s: %m\n", acks_path);
                return 2;
        }
        acks = calloc(ACKS_MAX, sizeof *acks);
        if (!acks)
                return 2;
        while (fgets(line, sizeof line, f)) {
                Ack a = {};
                int64_t id;

                if (!strchr(line, '\n')) {
                        n_cut++;                /* cut off by the kill: not acknowledged */
                        continue;
                }
                if (sscanf(line, "reg %" SCNi64 " %31s %15s %44s", &a.id, a.name, a.address, a.key) == 4) {
                        if (n_acks >= ACKS_MAX)
                                return 2;
                        acks[n_acks++] = a;
                } else if (sscanf(line, "deleting %" SCNi64, &id) == 1) {
                        for (size_t i = 0; i < n_acks; i++)
                                if (acks[i].id == id)
                                        acks[i].deleting = true;
                } else if (sscanf(line, "del %" SCNi64, &id) == 1) {
                        for (size_t i = 0; i < n_acks; i++)
                                if (acks[i].id == id)
                                        acks[i].deleted = true;
                } else {
                        fprintf(stderr, "Bad acknowledgement: %s", line);
                        failed = 1;
                }
        }
        fclose(f);

        if (open_store(db, &s) < 0)
                return 2;

        r = store_check_integrity(s);
        if (r < 0) {
                fprintf(stderr, "FAIL: integrity check: %s\n", strerror(-r));
                failed = 1;
        }

        for (size_t i = 0; i < n_acks; i++) {
                StoreProvider p = {};
                char a[INET_ADDRSTRLEN];

                r = store_provider_get(s, acks[i].id, &p);
                if (acks[i].deleted) {
                        n_deleted++;
                        if (r != -ENOENT) {
                                fprintf(stderr, "FAIL: provider %" PRIi64 " was deleted, but is there (%d)\n",
                                        acks[i].id, r);
                                failed = 1;
                        }
                        store_provider_deinit(&p);
                        continue;
                }
                n_live++;
                if (r == -ENOENT && acks[i].deleting)
                        continue;               /* deleted, killed before "del" */
                if (r == -ENOENT && live && i + 2 >= n_acks)
                        continue;               /* deleted after we read the acknowledgements */
                if (r < 0) {
                        fprintf(stderr, "FAIL: acknowledged provider %" PRIi64 " (%s) is missing: %s\n",
                                acks[i].id, acks[i].name, strerror(-r));
                        failed = 1;
                        continue;
                }
                inet_ntop(AF_INET, &p.mesh_address, a, sizeof a);
                if (!streq(p.name, acks[i].name) || !streq(a, acks[i].address) || !streq(p.public_key, acks[i].key)) {
                        fprintf(stderr, "FAIL: provider %" PRIi64 " differs: %s %s %s\n", acks[i].id, p.name, a,
                                p.public_key);
                        failed = 1;
                }
                store_provider_deinit(&p);
        }

        /* No address acknowledged twice, deleted providers included: none was reused. */
        addrs = calloc(n_acks + 1, sizeof *addrs);
        if (!addrs)
                return 2;
        for (size_t i = 0; i < n_acks; i++)
                addrs[i] = acks[i].address;
        qsort(addrs, n_acks, sizeof *addrs, cmp_str);
        for (size_t i = 1; i < n_acks; i++)
                if (streq(addrs[i], addrs[i - 1])) {
                        fprintf(stderr, "FAIL: address %s was handed out twice\n", addrs[i]);
                        failed = 1;
                }
        free(addrs);

        /* Live providers: unique addresses (the database's own view, acknowledged or not). */
        r = store_provider_list(s, NULL, &l, &n);
        if (r < 0) {
                fprintf(stderr, "FAIL: listing providers: %s\n", strerror(-r));
                failed = 1;
        } else {
                uint32_t *v = calloc(n + 1, sizeof *v);

                for (size_t i = 0; i < n; i++)
                        v[i] = ntohl(l[i].mesh_address.s_addr);
                /* Allocation is monotonic, so by id the addresses rise strictly: unique. */
                for (size_t i = 1; i < n; i++)
                        if (v[i] <= v[i - 1]) {
                                fprintf(stderr, "FAIL: addresses out of order at provider %" PRIi64 "\n", l[i].id);
                                failed = 1;
                        }
                free(v);
        }

        printf("%s: %zu acknowledged registrations (%zu live, %zu deleted), %zu in the database, "
               "%zu cut-off lines\n", failed ? "FAIL" : "ok", n_acks, n_live, n_deleted, n, n_cut);
        store_providers_free(l, n);
        store_close(s);
        free(acks);
        return failed;
}

int main(int argc, char *argv[]) {
        log_parse_environment();
        if (argc == 3 && streq(argv[1], "init"))
                return verb_init(argv[2]);
        if (argc == 4 && streq(argv[1], "register"))
                return verb_register(argv[2], argv[3]);
        if (argc == 4 && streq(argv[1], "check"))
                return verb_check(argv[2], argv[3], false);
        if (argc == 4 && streq(argv[1], "check-live"))
                return verb_check(argv[2], argv[3], true);
        fprintf(stderr, "Usage: %s init DB | register DB RUN | check|check-live DB ACKS\n", argv[0]);
        return 2;
}
