/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The schema migrations, numbered from 1 without gaps: migrations/NNN-name.sql, embedded at
 * build time by embed-migrations.py into store-migrations.c. A migration is never edited
 * once released; a change to the schema is a new file. docs/store.md has the policy.
 */

#include <stddef.h>

typedef struct StoreMigration {
        unsigned version;               /* NNN */
        const char *name;               /* "initial" */
        const char *sql;                /* the file's text */
} StoreMigration;

extern const StoreMigration store_migrations[];
extern const size_t store_migrations_count;
