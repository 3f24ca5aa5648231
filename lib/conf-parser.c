/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "conf-parser.h"
#include "log.h"
#include "macro.h"

CLUB_DEFINE_CLEANUP_VOID(DIR *, closedir, closedirp);

/* Text from the file is quoted in messages with control characters escaped and cut to this size. */
#define QUOTE_MAX 80
#define QUOTE_BUF (QUOTE_MAX + 16)

typedef struct ConfigParse {
        const ConfigItem *table;
        ConfigSectionStart section_start;
        void *userdata;
        char *line;             /* the logical line being assembled, CONFIG_LINE_MAX + 1 bytes */
        int error;              /* the first error, or 0 */

        /* Per file: */
        const char *file;
        char *section;          /* the current section, NULL before the first header */
        unsigned section_line;
        bool section_known;     /* the table has keys for it */
        bool section_skip;      /* its header was invalid or refused: ignore its keys quietly */
} ConfigParse;

static void config_parse_done(ConfigParse *p) {
        /* Configuration may hold secrets (CONFIG_ITEM_SECRET): leave no copies behind. */
        if (p->line)
                explicit_bzero(p->line, CONFIG_LINE_MAX + 1);
        free(p->line);
        free(p->section);
}

static void config_fail(ConfigParse *p, int r) {
        assert(r < 0);
        if (p->error == 0)
                p->error = r;
}

static bool is_ws(char c) {
        return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static char *strip(char *s) {
        char *e;

        while (is_ws(*s))
                s++;
        e = s + strlen(s);
        while (e > s && is_ws(e[-1]))
                e--;
        *e = 0;
        return s;
}

/* Quote s for a message: control characters as \xNN, long text cut with "…" on a character boundary. */
static const char *quote(const char *s, char buf[static QUOTE_BUF]) {
        size_t n = 0;

        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                /* Cut before a character's first byte, so that UTF-8 stays whole (but
                 * never after more than three continuation bytes: the text may not be UTF-8). */
                if (n + 4 > QUOTE_MAX && ((c & 0xC0) != 0x80 || n >= QUOTE_MAX + 3)) {
                        memcpy(buf + n, "…", sizeof "…");
                        return buf;
                }
                if (c < 0x20 || c == 0x7f)
                        n += (size_t) snprintf(buf + n, QUOTE_BUF - n, "\\x%02x", c);
                else
                        buf[n++] = (char) c;
        }
        buf[n] = 0;
        return buf;
}

void config_set_reason(const ConfigContext *ctx, const char *reason) {
        assert(ctx);
        if (ctx->reason)
                *ctx->reason = reason;
}

static bool table_has_section(const ConfigItem *table, const char *section) {
        for (const ConfigItem *i = table; i->section; i++)
                if (streq(i->section, section))
                        return true;
        return false;
}

static const ConfigItem *table_find(const ConfigItem *table, const char *section, const char *key) {
        for (const ConfigItem *i = table; i->section; i++)
                if (streq(i->section, section) && i->key && streq(i->key, key))
                        return i;
        return NULL;
}

static bool section_name_is_valid(const char *s) {
        if (isempty(s))
                return false;
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;

                if (c <= ' ' || c == 0x7f || c == '[' || c == ']')
                        return false;
        }
        return true;
}

static int enter_section(ConfigParse *p, unsigned line, const char *name) {
        char q[QUOTE_BUF];
        int r;

        r = free_and_strdup(&p->section, name);
        if (r < 0)
                return r;
        p->section_line = line;
        p->section_skip = false;
        p->section_known = table_has_section(p->table, name);
        if (!p->section_known) {
                log_warning("%s:%u: Unknown section [%s], ignoring.", p->file, line, quote(name, q));
                return 0;
        }
        if (!p->section_start)
                return 0;

        const char *reason = NULL;
        ConfigContext ctx = {
                .file = p->file,
                .line = line,
                .section = p->section,
                .section_line = line,
                .reason = &reason,
        };
        r = p->section_start(&ctx, p->userdata);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                if (reason)
                        log_error("%s:%u: Invalid section [%s]: %s", p->file, line, p->section, reason);
                else
                        log_error_errno(r, "%s:%u: Invalid section [%s]: %m", p->file, line, p->section);
                config_fail(p, -EINVAL);
                p->section_skip = true;
        }
        return 0;
}

static int assign(ConfigParse *p, unsigned line, const char *key, const char *value) {
        const ConfigItem *item;
        char q[QUOTE_BUF];
        int r;

        item = table_find(p->table, p->section, key);
        if (!item) {
                log_warning("%s:%u: Unknown key '%s' in section [%s], ignoring.",
                            p->file, line, quote(key, q), p->section);
                return 0;
        }
        if (!item->parse) {
                log_debug("%s:%u: [%s] %s= is obsolete, ignoring.", p->file, line, p->section, key);
                return 0;
        }

        const char *reason = NULL;
        ConfigContext ctx = {
                .file = p->file,
                .line = line,
                .section = p->section,
                .section_line = p->section_line,
                .reason = &reason,
        };
        r = item->parse(&ctx, key, value, item->ltype, item->data, p->userdata);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                const char *shown = item->flags & CONFIG_ITEM_SECRET ? "(secret, not shown)" : quote(value, q);

                if (reason)
                        log_error("%s:%u: Invalid value for [%s] %s=%s: %s",
                                  p->file, line, p->section, key, shown, reason);
                else
                        log_error_errno(r, "%s:%u: Invalid value for [%s] %s=%s: %m",
                                        p->file, line, p->section, key, shown);
                config_fail(p, -EINVAL);
        }
        return 0;
}

/* One logical line: stripped, not empty, not a comment, continuations joined. */
static int parse_line(ConfigParse *p, unsigned line, char *l) {
        char q[QUOTE_BUF];
        char *eq, *key, *value;

        if (l[0] == '[') {
                size_t k = strlen(l);

                if (k < 2 || l[k - 1] != ']') {
                        log_error("%s:%u: Invalid section header '%s': expected '[Name]' alone on the line.",
                                  p->file, line, quote(l, q));
                        goto bad_section;
                }
                l[k - 1] = 0;
                if (!section_name_is_valid(l + 1)) {
                        log_error("%s:%u: Invalid section name '%s': expected a name without spaces or brackets.",
                                  p->file, line, quote(l + 1, q));
                        goto bad_section;
                }
                return enter_section(p, line, l + 1);
        }

        eq = strchr(l, '=');
        if (!eq) {
                log_error("%s:%u: Expected 'Key=Value' or '[Section]', got '%s'.", p->file, line, quote(l, q));
                config_fail(p, -EINVAL);
                return 0;
        }
        *eq = 0;
        key = strip(l);
        value = strip(eq + 1);
        if (isempty(key)) {
                log_error("%s:%u: Missing key name before '='.", p->file, line);
                config_fail(p, -EINVAL);
                return 0;
        }
        if (p->section_skip)
                return 0;
        if (!p->section) {
                log_error("%s:%u: Assignment to '%s' before the first [Section] header.",
                          p->file, line, quote(key, q));
                config_fail(p, -EINVAL);
                return 0;
        }
        if (!p->section_known)
                return 0;
        return assign(p, line, key, value);

bad_section:
        /* Keys up to the next valid header belong to no known section: ignore them quietly. */
        config_fail(p, -EINVAL);
        p->section = mfree(p->section);
        p->section_known = false;
        p->section_skip = true;
        return 0;
}

/* The logical line in p->line (n bytes) is complete: parse it, or report why it cannot be. */
static int finish_line(ConfigParse *p, unsigned start_line, size_t n, const char *bad) {
        if (bad) {
                log_error("%s:%u: %s", p->file, start_line, bad);
                config_fail(p, -EINVAL);
                return 0;
        }
        if (n == 0)
                return 0;       /* only a backslash, or continuations of nothing */
        p->line[n] = 0;
        return parse_line(p, start_line, p->line);
}

static int parse_buffer(ConfigParse *p, const char *file, const char *buf, size_t len) {
        const char *pos = buf, *end = buf + len, *bad = NULL;
        unsigned line = 0, start_line = 0;
        bool continued = false;
        size_t n = 0;
        int r;

        p->file = file;
        p->section = mfree(p->section);
        p->section_line = 0;
        p->section_known = p->section_skip = false;

        if (len > CONFIG_FILE_SIZE_MAX) {
                log_error("%s: File too large (more than %u KiB), refusing.", file, CONFIG_FILE_SIZE_MAX / 1024);
                config_fail(p, -EFBIG);
                return 0;
        }
        if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
                pos += 3;       /* a UTF-8 byte order mark, as some editors write */

        while (pos < end) {
                const char *eol = memchr(pos, '\n', (size_t) (end - pos));
                const char *s = pos, *e = eol ?: end;
                bool escaped;

                pos = eol ? eol + 1 : end;
                line++;

                while (s < e && is_ws(*s))
                        s++;
                while (e > s && is_ws(e[-1]))
                        e--;            /* also the '\r' of CRLF line endings */

                if (!continued) {
                        if (s == e || *s == '#' || *s == ';')
                                continue;
                        start_line = line;
                        n = 0;
                        bad = NULL;
                } else if (s < e && (*s == '#' || *s == ';'))
                        continue;       /* comments inside a continuation are dropped, as in systemd */

                escaped = s < e && e[-1] == '\\';
                if (escaped) {
                        e--;
                        while (e > s && is_ws(e[-1]))
                                e--;
                }

                assert(s <= e);
                if (!bad && memchr(s, 0, (size_t) (e - s)))
                        bad = "Line contains a NUL byte.";
                if (!bad && s < e) {
                        size_t add = (size_t) (e - s) + (n > 0);

                        if (add > CONFIG_LINE_MAX - n)
                                bad = "Line too long (more than 64 KiB, continuation lines included).";
                        else {
                                if (n > 0)
                                        p->line[n++] = ' ';
                                memcpy(p->line + n, s, (size_t) (e - s));
                                n += (size_t) (e - s);
                        }
                }

                continued = escaped;
                if (continued)
                        continue;
                r = finish_line(p, start_line, n, bad);
                if (r < 0)
                        return r;
        }
        if (continued)          /* the file ends with a backslash or a comment inside a continuation */
                return finish_line(p, start_line, n, bad);
        return 0;
}

/* Read a whole file. With missing_ok, a missing file gives 0 and *ret = NULL. Logs errors. */
static int read_config_file(const char *path, bool missing_ok, char **ret, size_t *ret_size) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_(freep) char *buf = NULL;
        size_t n = 0, alloc;
        struct stat st;

        /* O_NONBLOCK: a FIFO must not hang us before fstat() refuses it. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                if (errno == ENOENT && missing_ok) {
                        log_debug("%s does not exist, skipping.", path);
                        *ret = NULL;
                        *ret_size = 0;
                        return 0;
                }
                return log_error_errno(errno, "Failed to open configuration file %s: %m", path);
        }
        if (fstat(fd, &st) < 0)
                return log_error_errno(errno, "Failed to check configuration file %s: %m", path);
        if (S_ISDIR(st.st_mode))
                return log_error_errno(EISDIR, "Failed to read configuration file %s: it is a directory.", path);
        if (!S_ISREG(st.st_mode))
                return log_error_errno(EBADFD, "Failed to read configuration file %s: not a regular file.", path);
        if (st.st_size > (off_t) CONFIG_FILE_SIZE_MAX)
                goto too_large;

        /* The size is a hint only: the file may change while we read it. */
        alloc = (size_t) st.st_size + 1;
        buf = malloc(alloc);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (n == alloc) {
                        char *t;

                        if (alloc > CONFIG_FILE_SIZE_MAX)
                                goto too_large;
                        alloc = MIN(alloc * 2, (size_t) CONFIG_FILE_SIZE_MAX + 1);
                        t = realloc(buf, alloc);
                        if (!t)
                                return -ENOMEM;
                        buf = t;
                }
                k = read(fd, buf + n, alloc - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "Failed to read configuration file %s: %m", path);
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        if (n > CONFIG_FILE_SIZE_MAX)
                goto too_large;

        log_debug("Reading %s.", path);
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;

too_large:
        return log_error_errno(EFBIG, "Failed to read configuration file %s: larger than %u KiB.",
                               path, CONFIG_FILE_SIZE_MAX / 1024);
}

static int parse_file(ConfigParse *p, const char *path, bool missing_ok) {
        _cleanup_(freep) char *buf = NULL;
        size_t size;
        int r;

        r = read_config_file(path, missing_ok, &buf, &size);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                config_fail(p, r);
                return 0;
        }
        if (!buf)
                return 0;
        r = parse_buffer(p, path, buf, size);
        explicit_bzero(buf, size);
        return r;
}

static int cmp_string(const void *a, const void *b) {
        return strcmp(*(char * const *) a, *(char * const *) b);
}

/* The "*.conf" files in dir, sorted; a missing directory has none. Logs errors. */
static int list_dropins(const char *dir, char ***ret) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_(config_strv_freep) char **l = NULL;
        size_t n = 0;
        bool slash = endswith(dir, "/");

        d = opendir(dir);
        if (!d) {
                if (errno == ENOENT) {
                        *ret = NULL;
                        return 0;
                }
                return log_error_errno(errno, "Failed to open drop-in directory %s: %m", dir);
        }
        l = new0(char *, CONFIG_DROPINS_MAX + 1);
        if (!l)
                return -ENOMEM;

        for (;;) {
                struct dirent *de;

                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0)
                                return log_error_errno(errno, "Failed to read drop-in directory %s: %m", dir);
                        break;
                }
                if (de->d_name[0] == '.' || !endswith(de->d_name, ".conf"))
                        continue;       /* hidden files, editor backups, READMEs */
                if (n >= CONFIG_DROPINS_MAX)
                        return log_error_errno(E2BIG, "Too many drop-ins in %s (more than %u), reading none of them.",
                                               dir, CONFIG_DROPINS_MAX);
                if (asprintf(&l[n], "%s%s%s", dir, slash ? "" : "/", de->d_name) < 0) {
                        l[n] = NULL;
                        return -ENOMEM;
                }
                n++;
        }
        qsort(l, n, sizeof l[0], cmp_string);
        *ret = TAKE_PTR(l);
        return 0;
}

int config_parse(const char *path, const char *dropin_dir, const ConfigItem *table,
                 ConfigSectionStart section_start, unsigned flags, void *userdata) {
        _cleanup_(config_parse_done) ConfigParse p = {
                .table = table,
                .section_start = section_start,
                .userdata = userdata,
        };
        _cleanup_(config_strv_freep) char **dropins = NULL;
        _cleanup_(freep) char *dir = NULL;
        int r;

        assert(path && table);

        p.line = malloc(CONFIG_LINE_MAX + 1);
        if (!p.line)
                return -ENOMEM;

        r = parse_file(&p, path, flags & CONFIG_MISSING_OK);
        if (r < 0)
                return r;
        if (flags & CONFIG_NO_DROPINS)
                return p.error;

        if (!dropin_dir) {
                if (asprintf(&dir, "%s.d", path) < 0)
                        return -ENOMEM;
                dropin_dir = dir;
        }
        r = list_dropins(dropin_dir, &dropins);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                config_fail(&p, r);
        for (char **i = dropins; i && *i; i++) {
                /* A drop-in removed since we listed the directory is simply gone. */
                r = parse_file(&p, *i, /* missing_ok= */ true);
                if (r < 0)
                        return r;
        }
        return p.error;
}

int config_parse_buffer(const char *name, const char *buf, size_t len, const ConfigItem *table,
                        ConfigSectionStart section_start, void *userdata) {
        _cleanup_(config_parse_done) ConfigParse p = {
                .table = table,
                .section_start = section_start,
                .userdata = userdata,
        };
        int r;

        assert(name && (buf || len == 0) && table);

        p.line = malloc(CONFIG_LINE_MAX + 1);
        if (!p.line)
                return -ENOMEM;
        r = parse_buffer(&p, name, buf ?: "", len);
        if (r < 0)
                return r;
        return p.error;
}

char **config_strv_free(char **l) {
        for (char **i = l; i && *i; i++)
                free(*i);
        return mfree(l);
}

CONFIG_PARSER_PROTOTYPE(config_parse_string) {
        assert(value && data);
        return free_and_strdup(data, isempty(value) ? NULL : value);
}

CONFIG_PARSER_PROTOTYPE(config_parse_bool) {
        bool *b = data;
        int r;

        assert(value && data);
        r = parse_boolean(value);
        if (r < 0) {
                config_set_reason(ctx, "expected a boolean: yes/no, true/false, on/off or 1/0");
                return r;
        }
        *b = r;
        return 0;
}

static void set_number_reason(const ConfigContext *ctx, int r, const char *too_large, const char *invalid) {
        config_set_reason(ctx, r == -ERANGE ? too_large : invalid);
}

CONFIG_PARSER_PROTOTYPE(config_parse_uint) {
        unsigned *u = data;
        int r;

        assert(value && data);
        r = parse_uint(value, u);
        if (r < 0)
                set_number_reason(ctx, r, "number too large (the maximum is 4294967295)",
                                  "expected a whole number, written in decimal digits only");
        return r;
}

CONFIG_PARSER_PROTOTYPE(config_parse_uint64) {
        uint64_t *u = data;
        int r;

        assert(value && data);
        r = parse_uint64(value, u);
        if (r < 0)
                set_number_reason(ctx, r, "number too large (the maximum is 18446744073709551615)",
                                  "expected a whole number, written in decimal digits only");
        return r;
}

CONFIG_PARSER_PROTOTYPE(config_parse_size) {
        uint64_t *sz = data;
        int r;

        assert(value && data);
        r = parse_size(value, sz);
        if (r < 0)
                set_number_reason(ctx, r, "size too large",
                                  "expected a size in bytes, optionally with a suffix K, M or G (e.g. 512, 64K, 1M)");
        return r;
}

CONFIG_PARSER_PROTOTYPE(config_parse_sec) {
        uint64_t *usec = data;
        int r;

        assert(value && data);
        r = parse_sec(value, usec);
        if (r < 0)
                set_number_reason(ctx, r, "time span too long",
                                  "expected a time span such as 30s, 500ms, 2min, 1h 30min or infinity");
        return r;
}

CONFIG_PARSER_PROTOTYPE(config_parse_sockaddr) {
        SockAddr *a = data, t = {};
        int r;

        assert(value && data);
        r = parse_sockaddr(value, &t.ss, &t.len);
        if (r < 0) {
                config_set_reason(ctx, "expected an IP address and a port, such as 127.0.0.1:8080 or [::1]:8080 "
                                       "(host names are not resolved)");
                return r;
        }
        *a = t;
        return 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_log_level) {
        int *level = data, l;

        assert(value && data);
        l = log_level_from_string(value);
        if (l < 0) {
                config_set_reason(ctx, "expected a log level: emerg, alert, crit, err, warning, notice, info, "
                                       "debug, or 0-7");
                return l;
        }
        *level = l;
        return 0;
}

CONFIG_PARSER_PROTOTYPE(config_parse_strv) {
        char ***sv = data, **l;
        size_t n = 0, words = 0;

        assert(value && data);
        if (isempty(value)) {
                *sv = config_strv_free(*sv);
                return 0;
        }

        for (const char *p = value; *p; ) {
                p += strspn(p, " \t");
                if (!*p)
                        break;
                words++;
                p += strcspn(p, " \t");
        }
        while (*sv && (*sv)[n])
                n++;
        if (words == 0)
                return 0;

        l = reallocarray(*sv, n + words + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        l[n] = NULL;
        *sv = l;

        /* The list stays NULL-terminated at every step, so a failure leaves it valid. */
        for (const char *p = value; *p; ) {
                size_t k;

                p += strspn(p, " \t");
                if (!*p)
                        break;
                k = strcspn(p, " \t");
                l[n] = strndup(p, k);
                if (!l[n])
                        return -ENOMEM;
                l[++n] = NULL;
                p += k;
        }
        return 0;
}
