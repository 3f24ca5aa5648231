/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * A parser for systemd-style INI files with "*.conf.d/" drop-ins.
 *
 *     # comment            ; comment
 *     [Section]
 *     Key = Value          whitespace around key and value is dropped
 *     Key = a very \
 *           long value     backslash at the end of a line continues it ("a very long value")
 *
 * Quotes are not special: a value is the raw text after '='. A key that appears more than
 * once is parsed each time, so for most parsers the last one wins. Sections may repeat
 * (several [Upstream]); the ConfigSectionStart callback sees each one. For such a section, let
 * the callback append a new object to userdata, and give the section's items a small parser
 * that calls a built-in one with a pointer into the newest object (tests/unit/test-conf-parser.c
 * does this for [Upstream]).
 *
 * Diagnostics are written through log.h for the person editing the file, each naming
 * FILE:LINE. This is the one place in lib/ that logs above debug.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "macro.h"
#include "parse-util.h"

/* Limits: a logical line (continuations included), a file, and the files in a drop-in directory. */
#define CONFIG_LINE_MAX (64U * 1024U)
#define CONFIG_FILE_SIZE_MAX (4U * 1024U * 1024U)
#define CONFIG_DROPINS_MAX 128U

typedef struct ConfigContext {
        const char *file;          /* the file being parsed */
        unsigned line;             /* line of the key (or of the section header for section callbacks) */
        const char *section;       /* current section name, without brackets */
        unsigned section_line;     /* line of the current section header */
        /* Where config_set_reason() stores its text; NULL outside config_parse(). Do not use directly. */
        const char **reason;
} ConfigContext;

/* Parse one value. Return 0 on success, -EINVAL (or another -errno) when the value is invalid;
 * the parser then reports "FILE:LINE: Invalid value for [Section] Key=VALUE: <reason>" itself.
 * -ENOMEM aborts parsing. */
typedef int (*ConfigParser)(const ConfigContext *ctx, const char *key, const char *value,
                            int ltype, void *data, void *userdata);

typedef enum ConfigItemFlags {
        CONFIG_ITEM_SECRET = 1 << 0,  /* never quote the value in messages (API keys, tokens) */
} ConfigItemFlags;

typedef struct ConfigItem {
        const char *section;
        const char *key;
        ConfigParser parse;        /* NULL: the key is accepted and ignored (an obsolete setting) */
        int ltype;
        void *data;
        unsigned flags;            /* CONFIG_ITEM_* (may be left out of initializers) */
} ConfigItem;          /* tables end with { NULL } */

/* Called each time the header of a section that the table knows is seen (sections may repeat,
 * e.g. several [Upstream]). Return <0 to fail: the parser reports
 * "FILE:LINE: Invalid section [Section]: <reason>", ignores the keys of that section and
 * goes on; -ENOMEM aborts parsing. */
typedef int (*ConfigSectionStart)(const ConfigContext *ctx, void *userdata);

typedef enum ConfigFlags {
        CONFIG_MISSING_OK = 1 << 0,   /* a missing main file is not an error (drop-ins are still read) */
        CONFIG_NO_DROPINS = 1 << 1,   /* read the main file only */
} ConfigFlags;

/**
 * config_parse() - parse a configuration file and its drop-ins
 * @path:          the main file, e.g. /etc/club/clubd.conf
 * @dropin_dir:    directory of drop-ins; NULL means "<path>.d"
 * @table:         the known keys, ending with { NULL }
 * @section_start: called for each header of a known section, or NULL
 * @flags:         CONFIG_* flags
 * @userdata:      passed to the parsers and to @section_start
 *
 * Parses @path, then every "*.conf" in the drop-in directory (hidden files excepted) in lexical
 * order of file name; a missing drop-in directory is fine. A missing main file is OK only with
 * CONFIG_MISSING_OK. Unknown sections and keys: a warning naming FILE:LINE, then ignored.
 * Syntax errors, invalid values, and files that cannot be read (not a regular file, unreadable,
 * larger than CONFIG_FILE_SIZE_MAX, more than CONFIG_DROPINS_MAX drop-ins): an error; parsing
 * continues so that all errors are reported.
 *
 * Return: 0 on success; on failure the error of the first problem: -EINVAL for a syntax error,
 * an invalid value or a refused section; for a file or directory that cannot be read -ENOENT,
 * -EACCES, -EISDIR, -EBADFD (not a regular file), -EFBIG (too large), -ENOTDIR, -E2BIG (too
 * many drop-ins), …; -ENOMEM, returned at once, when out of memory.
 */
int config_parse(const char *path, const char *dropin_dir, const ConfigItem *table,
                 ConfigSectionStart section_start, unsigned flags, void *userdata);

/**
 * config_parse_buffer() - parse one configuration file held in memory
 * @name:  the name used in messages
 * @buf:   the contents, @len bytes, not necessarily NUL-terminated
 *
 * The same as config_parse() for a single file without drop-ins.
 */
int config_parse_buffer(const char *name, const char *buf, size_t len, const ConfigItem *table,
                        ConfigSectionStart section_start, void *userdata);

/**
 * config_set_reason() - say why a value or section is invalid
 * @ctx:    the context passed to the parser or section callback
 * @reason: a static string written for the person editing the file, e.g. "expected a boolean"
 *
 * Call before returning an error from a ConfigParser or ConfigSectionStart; without it the
 * message ends with the text of the error number.
 */
void config_set_reason(const ConfigContext *ctx, const char *reason);

/* Declares or defines a ConfigParser named name. */
#define CONFIG_PARSER_PROTOTYPE(name)                                                   \
        int name(const ConfigContext *ctx, const char *key, const char *value,          \
                 int ltype, void *data, void *userdata)

/* Built-in parsers, each storing into data: */
CONFIG_PARSER_PROTOTYPE(config_parse_string);     /* char **: replaced; an empty value resets to NULL */
CONFIG_PARSER_PROTOTYPE(config_parse_bool);       /* bool * */
CONFIG_PARSER_PROTOTYPE(config_parse_uint);       /* unsigned * */
CONFIG_PARSER_PROTOTYPE(config_parse_uint64);     /* uint64_t * */
CONFIG_PARSER_PROTOTYPE(config_parse_size);       /* uint64_t *, bytes: 512, 64K, 1M, 2G */
CONFIG_PARSER_PROTOTYPE(config_parse_sec);        /* uint64_t *, µs: 30s, 500ms, 1h 30min, infinity */
CONFIG_PARSER_PROTOTYPE(config_parse_sockaddr);   /* SockAddr *: 1.2.3.4:80, [::1]:80 */
CONFIG_PARSER_PROTOTYPE(config_parse_log_level);  /* int *: LOG_ERR, …, from "err", "debug", "3" */
CONFIG_PARSER_PROTOTYPE(config_parse_strv);       /* char ***: words appended; an empty value resets */

/* Free a NULL-terminated list of strings as built by config_parse_strv(). Returns NULL. */
char **config_strv_free(char **l);
CLUB_DEFINE_CLEANUP(char **, config_strv_free);
