/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "conf-parser.h"
#include "log.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static int log_fd = -EBADF;

static void log_capture_start(void) {
        log_fd = memfd_create("log", MFD_CLOEXEC);
        ck_assert_int_ge(log_fd, 0);
        log_set_fd(log_fd);
        log_set_max_level(LOG_INFO);
}

/* Everything logged since the last call. */
static const char *log_captured(void) {
        static char buf[256 * 1024];
        ssize_t n;

        ck_assert_int_eq(lseek(log_fd, 0, SEEK_SET), 0);
        n = read(log_fd, buf, sizeof buf - 1);
        buf[n < 0 ? 0 : n] = 0;
        ck_assert_int_eq(ftruncate(log_fd, 0), 0);
        ck_assert_int_eq(lseek(log_fd, 0, SEEK_SET), 0);
        return buf;
}

static char *make_tmpdir(void) {
        char *d = NULL;

        ck_assert_int_ge(asprintf(&d, "%s/test-conf-parser.XXXXXX", getenv("TMPDIR") ?: "/tmp"), 0);
        ck_assert_ptr_nonnull(mkdtemp(d));
        return d;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static void rm_rf(char *dir) {
        ck_assert_int_eq(nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(dir);
}

static char *path_join(const char *a, const char *b) {
        char *p;

        ck_assert_int_ge(asprintf(&p, "%s/%s", a, b), 0);
        return p;
}

static char *write_file_len(const char *dir, const char *name, const char *content, size_t len) {
        char *p = path_join(dir, name);
        FILE *f = fopen(p, "we");

        ck_assert_ptr_nonnull(f);
        ck_assert_uint_eq(fwrite(content, 1, len, f), len);
        ck_assert_int_eq(fclose(f), 0);
        return p;
}

static char *write_file(const char *dir, const char *name, const char *content) {
        return write_file_len(dir, name, content, strlen(content));
}

/* Replace each '@' in tmpl by path. */
static char *expand(const char *tmpl, const char *path) {
        size_t n = 1;
        char *s, *p;

        for (const char *t = tmpl; *t; t++)
                n += *t == '@' ? strlen(path) : 1;
        p = s = malloc(n);
        ck_assert_ptr_nonnull(s);
        for (const char *t = tmpl; *t; t++)
                if (*t == '@')
                        p = stpcpy(p, path);
                else
                        *p++ = *t;
        *p = 0;
        return s;
}

/* ---- the configuration under test ------------------------------------------------------- */

#define UPSTREAMS_MAX 2

typedef struct Upstream {
        char *url;
        unsigned weight;
        unsigned line;          /* of its header */
} Upstream;

typedef struct Settings {
        SockAddr listen;
        bool enabled;
        unsigned workers;
        uint64_t requests;
        uint64_t body_max;
        uint64_t timeout;
        int log_level;
        char *name;
        char **models;
        Upstream upstreams[UPSTREAMS_MAX];
        unsigned n_upstreams;
        unsigned sections_seen;
} Settings;

static void settings_done(Settings *s) {
        free(s->name);
        config_strv_free(s->models);
        for (unsigned i = 0; i < s->n_upstreams; i++)
                free(s->upstreams[i].url);
}

static int upstream_start(const ConfigContext *ctx, void *userdata) {
        Settings *s = userdata;

        s->sections_seen++;
        if (!streq(ctx->section, "Upstream"))
                return 0;
        ck_assert_uint_eq(ctx->line, ctx->section_line);
        if (s->n_upstreams >= UPSTREAMS_MAX) {
                config_set_reason(ctx, "too many upstreams (at most 2)");
                return -E2BIG;
        }
        s->upstreams[s->n_upstreams++] = (Upstream) { .line = ctx->line };
        return 0;
}

static int parse_upstream(const ConfigContext *ctx, const char *key, const char *value, int ltype, void *data, void *userdata) {
        Settings *s = userdata;
        Upstream *u;

        ck_assert_uint_gt(s->n_upstreams, 0);
        u = &s->upstreams[s->n_upstreams - 1];
        ck_assert_uint_eq(ctx->section_line, u->line);
        if (streq(key, "URL"))
                return config_parse_string(ctx, key, value, ltype, &u->url, userdata);
        return config_parse_uint(ctx, key, value, ltype, &u->weight, userdata);
}

/* A parser that gives no reason: the message ends with the error's text. */
static int parse_even(const ConfigContext *ctx, const char *key, const char *value, int ltype, void *data, void *userdata) {
        unsigned u;

        if (parse_uint(value, &u) < 0 || u % 2 != 0)
                return -ERANGE;
        *(unsigned *) data = u;
        return 0;
}

static int parse_oom(const ConfigContext *ctx, const char *key, const char *value, int ltype, void *data, void *userdata) {
        return -ENOMEM;
}

static unsigned even;

#define TABLE(s) ((const ConfigItem[]) {                                                \
        { "Proxy",    "Listen",        config_parse_sockaddr,  0, &(s)->listen },       \
        { "Proxy",    "Enabled",       config_parse_bool,      0, &(s)->enabled },      \
        { "Proxy",    "Workers",       config_parse_uint,      0, &(s)->workers },      \
        { "Proxy",    "Requests",      config_parse_uint64,    0, &(s)->requests },     \
        { "Proxy",    "BodyMax",       config_parse_size,      0, &(s)->body_max },     \
        { "Proxy",    "Timeout",       config_parse_sec,       0, &(s)->timeout },      \
        { "Proxy",    "LogLevel",      config_parse_log_level, 0, &(s)->log_level },    \
        { "Proxy",    "Name",          config_parse_string,    0, &(s)->name },         \
        { "Proxy",    "Models",        config_parse_strv,      0, &(s)->models },       \
        { "Proxy",    "Even",          parse_even,             0, &even },              \
        { "Proxy",    "Obsolete",      NULL,                   0, NULL },               \
        { "Proxy",    "Explode",       parse_oom,              0, NULL },               \
        { "Proxy",    "Token",         parse_even,             0, &even, CONFIG_ITEM_SECRET }, \
        { "Upstream", "URL",           parse_upstream,         0, NULL },               \
        { "Upstream", "Weight",        parse_upstream,         0, NULL },               \
        { NULL }                                                                        \
})

static int parse_path(const char *path, const char *dropin_dir, unsigned flags, Settings *s) {
        return config_parse(path, dropin_dir, TABLE(s), upstream_start, flags, s);
}

/* ---- syntax: one file in, return value and exact diagnostics out -------------------------- */

#define IN(s) s, sizeof(s) - 1

static const struct {
        const char *in;
        size_t len;
        int r;
        const char *log;        /* '@' stands for the file's path */
} syntax_cases[] = {
        { IN(""), 0, "" },
        { IN("# comment\n; comment\n\n   \n\t# indented comment\n"), 0, "" },
        { IN("[Proxy]\nLisen=127.0.0.1:80\n"), 0,
          "<4>@:2: Unknown key 'Lisen' in section [Proxy], ignoring.\n" },
        { IN("[Proxy]\nenabled=yes\n"), 0,       /* keys are case-sensitive, as in systemd */
          "<4>@:2: Unknown key 'enabled' in section [Proxy], ignoring.\n" },
        { IN("[Nope]\nA=1\nB=2\n[Proxy]\nEnabled=yes\n"), 0,
          "<4>@:1: Unknown section [Nope], ignoring.\n" },
        { IN("Enabled=yes\n[Proxy]\n"), -EINVAL,
          "<3>@:1: Assignment to 'Enabled' before the first [Section] header.\n" },
        { IN("[Proxy\nEnabled=yes\n"), -EINVAL,
          "<3>@:1: Invalid section header '[Proxy': expected '[Name]' alone on the line.\n" },
        { IN("[Proxy] # no comments here\nEnabled=yes\n"), -EINVAL,
          "<3>@:1: Invalid section header '[Proxy] # no comments here': expected '[Name]' alone on the line.\n" },
        { IN("[ Proxy ]\nEnabled=yes\n"), -EINVAL,
          "<3>@:1: Invalid section name ' Proxy ': expected a name without spaces or brackets.\n" },
        { IN("[]\n"), -EINVAL,
          "<3>@:1: Invalid section name '': expected a name without spaces or brackets.\n" },
        { IN("[Proxy]\nEnabled yes\n"), -EINVAL,
          "<3>@:2: Expected 'Key=Value' or '[Section]', got 'Enabled yes'.\n" },
        { IN("[Proxy]\n = yes\n"), -EINVAL,
          "<3>@:2: Missing key name before '='.\n" },
        { IN("[Proxy]\nEnabled=maybe\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Enabled=maybe: expected a boolean: yes/no, true/false, on/off or 1/0\n" },
        /* All errors are reported, not just the first; warnings do not fail. */
        { IN("[Proxy]\nEnabled=maybe\nWorkers=-1\nLisen=x\nTimeout=5 fortnights\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Enabled=maybe: expected a boolean: yes/no, true/false, on/off or 1/0\n"
          "<3>@:3: Invalid value for [Proxy] Workers=-1: expected a whole number, written in decimal digits only\n"
          "<4>@:4: Unknown key 'Lisen' in section [Proxy], ignoring.\n"
          "<3>@:5: Invalid value for [Proxy] Timeout=5 fortnights: expected a time span such as 30s, 500ms, 2min, 1h 30min or infinity\n" },
        /* A parser without a reason: the error number's text. */
        { IN("[Proxy]\nEven=3\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Even=3: Numerical result out of range\n" },
        /* An error in a continued line names the line where it starts. */
        { IN("[Proxy]\n\nWorkers=1 \\\n  2\n"), -EINVAL,
          "<3>@:3: Invalid value for [Proxy] Workers=1 2: expected a whole number, written in decimal digits only\n" },
        /* CRLF line endings, and a byte order mark. */
        { IN("\xef\xbb\xbf[Proxy]\r\nWorkers=7\r\n\r\nWorkers=x\r\n"), -EINVAL,
          "<3>@:4: Invalid value for [Proxy] Workers=x: expected a whole number, written in decimal digits only\n" },
        /* Control characters are escaped, long values cut. */
        { IN("[Proxy]\nEnabled=\x1b[31mred\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Enabled=\\x1b[31mred: expected a boolean: yes/no, true/false, on/off or 1/0\n" },
        { IN("[Proxy]\nEnabled=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Enabled=01234567890123456789012345678901234567890123456789012345678901234567890123456…: "
          "expected a boolean: yes/no, true/false, on/off or 1/0\n" },
        /* A NUL byte cannot be part of a line. */
        { IN("[Proxy]\nName=a\0b\nEnabled=yes\n"), -EINVAL, "<3>@:2: Line contains a NUL byte.\n" },
        /* Keys of a section with an invalid header are skipped quietly: the header was reported. */
        { IN("[Pro xy]\nLisen=1\n[Proxy]\nLisen=2\n"), -EINVAL,
          "<3>@:1: Invalid section name 'Pro xy': expected a name without spaces or brackets.\n"
          "<4>@:4: Unknown key 'Lisen' in section [Proxy], ignoring.\n" },
        /* A secret is never quoted. */
        { IN("[Proxy]\nToken=sk-12345\n"), -EINVAL,
          "<3>@:2: Invalid value for [Proxy] Token=(secret, not shown): Numerical result out of range\n" },
        /* An obsolete key (no parser) is accepted silently. */
        { IN("[Proxy]\nObsolete=whatever\n"), 0, "" },
        /* Quotes are not special, and so not an error either. */
        { IN("[Proxy]\nName=\"quoted\"\n"), 0, "" },
};

START_TEST(test_syntax)
{
        char *dir = make_tmpdir();

        log_capture_start();
        for (size_t i = 0; i < ELEMENTSOF(syntax_cases); i++) {
                const char *in = syntax_cases[i].in;
                size_t len = syntax_cases[i].len;
                _cleanup_(freep) char *path = write_file_len(dir, "club.conf", in, len);
                _cleanup_(freep) char *want = expand(syntax_cases[i].log, path);
                Settings s = {};
                int r;

                r = parse_path(path, NULL, 0, &s);
                ck_assert_msg(r == syntax_cases[i].r, "case %zu: r=%d, expected %d", i, r, syntax_cases[i].r);
                ck_assert_str_eq(log_captured(), want);
                settings_done(&s);
        }
        rm_rf(dir);
}
END_TEST

/* ---- values --------------------------------------------------------------------------- */

START_TEST(test_values)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *path = NULL;
        Settings s = { .log_level = -1 };
        char buf[64];

        log_capture_start();
        path = write_file(dir, "club.conf",
                          "[Proxy]\n"
                          "  Listen   =   [::1]:8080   \n"
                          "Enabled=on\n"
                          "Workers=4294967295\n"
                          "Requests=18446744073709551615\n"
                          "BodyMax=64K\n"
                          "Timeout=1h 30min\n"
                          "LogLevel=debug\n"
                          "Name=\"a b\" ; not a comment\n"
                          "Models=llama   qwen\tmistral\n"
                          "Models=phi\n"
                          "Even=4\n");
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), 0);
        ck_assert_str_eq(log_captured(), "");

        ck_assert_uint_eq(s.listen.len, sizeof(struct sockaddr_in6));
        ck_assert_str_eq(format_sockaddr((struct sockaddr *) &s.listen.ss, buf, sizeof buf), "[::1]:8080");
        ck_assert(s.enabled);
        ck_assert_uint_eq(s.workers, 4294967295U);
        ck_assert_uint_eq(s.requests, UINT64_MAX);
        ck_assert_uint_eq(s.body_max, 65536);
        ck_assert_uint_eq(s.timeout, 5400 * USEC_PER_SEC);
        ck_assert_int_eq(s.log_level, LOG_DEBUG);
        ck_assert_str_eq(s.name, "\"a b\" ; not a comment");  /* raw, quotes and all */
        ck_assert_ptr_nonnull(s.models);
        ck_assert_str_eq(s.models[0], "llama");
        ck_assert_str_eq(s.models[1], "qwen");
        ck_assert_str_eq(s.models[2], "mistral");
        ck_assert_str_eq(s.models[3], "phi");   /* appended */
        ck_assert_ptr_null(s.models[4]);
        ck_assert_uint_eq(even, 4);

        /* The last assignment wins; an empty value resets strings and lists. */
        free(path);
        path = write_file(dir, "club.conf",
                          "[Proxy]\nWorkers=1\nWorkers=2\nName=x\nName=\nModels=a b\nModels=\nModels=c\n"
                          "Enabled=yes\nEnabled=false\nLogLevel=3\nListen=10.0.0.1:1\n");
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), 0);
        ck_assert_uint_eq(s.workers, 2);
        ck_assert_ptr_null(s.name);
        ck_assert_str_eq(s.models[0], "c");
        ck_assert_ptr_null(s.models[1]);
        ck_assert(!s.enabled);
        ck_assert_int_eq(s.log_level, LOG_ERR);
        ck_assert_uint_eq(s.listen.len, sizeof(struct sockaddr_in));
        ck_assert_str_eq(format_sockaddr((struct sockaddr *) &s.listen.ss, buf, sizeof buf), "10.0.0.1:1");

        /* An invalid value leaves the previous one in place. */
        free(path);
        path = write_file(dir, "club.conf", "[Proxy]\nWorkers=99999999999\nListen=localhost:80\n");
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EINVAL);
        ck_assert_uint_eq(s.workers, 2);
        ck_assert_str_eq(format_sockaddr((struct sockaddr *) &s.listen.ss, buf, sizeof buf), "10.0.0.1:1");
        (void) log_captured();

        settings_done(&s);
        rm_rf(dir);
}
END_TEST

/* Each built-in parser explains itself. */
static const struct {
        const char *line;
        const char *reason;
} invalid_cases[] = {
        { "Listen=localhost:80", "expected an IP address and a port, such as 127.0.0.1:8080 or [::1]:8080 (host names are not resolved)" },
        { "Listen=1.2.3.4", "expected an IP address and a port, such as 127.0.0.1:8080 or [::1]:8080 (host names are not resolved)" },
        { "Enabled=2", "expected a boolean: yes/no, true/false, on/off or 1/0" },
        { "Workers=4294967296", "number too large (the maximum is 4294967295)" },
        { "Workers=0x10", "expected a whole number, written in decimal digits only" },
        { "Requests=18446744073709551616", "number too large (the maximum is 18446744073709551615)" },
        { "Requests=+1", "expected a whole number, written in decimal digits only" },
        { "BodyMax=1T", "expected a size in bytes, optionally with a suffix K, M or G (e.g. 512, 64K, 1M)" },
        { "BodyMax=99999999999999999999G", "size too large" },
        { "Timeout=soon", "expected a time span such as 30s, 500ms, 2min, 1h 30min or infinity" },
        { "Timeout=99999999999999999999h", "time span too long" },
        { "LogLevel=chatty", "expected a log level: emerg, alert, crit, err, warning, notice, info, debug, or 0-7" },
        { "LogLevel=8", "expected a log level: emerg, alert, crit, err, warning, notice, info, debug, or 0-7" },
};

START_TEST(test_invalid_values)
{
        char *dir = make_tmpdir();

        log_capture_start();
        for (size_t i = 0; i < ELEMENTSOF(invalid_cases); i++) {
                _cleanup_(freep) char *content = NULL, *path = NULL, *want = NULL;
                const char *eq = strchr(invalid_cases[i].line, '=');
                Settings s = {};

                ck_assert_int_ge(asprintf(&content, "# x\n[Proxy]\n%s\n", invalid_cases[i].line), 0);
                path = write_file(dir, "club.conf", content);
                ck_assert_int_ge(asprintf(&want, "<3>%s:3: Invalid value for [Proxy] %.*s=%s: %s\n", path,
                                          (int) (eq - invalid_cases[i].line), invalid_cases[i].line, eq + 1,
                                          invalid_cases[i].reason), 0);
                ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EINVAL);
                ck_assert_str_eq(log_captured(), want);
                settings_done(&s);
        }
        rm_rf(dir);
}
END_TEST

/* ---- continuation lines ------------------------------------------------------------------ */

static const struct {
        const char *in;
        const char *name;
} continuation_cases[] = {
        { "Name=a \\\n  b\n", "a b" },
        { "Name=a\\\nb\\\nc\n", "a b c" },
        { "Name=a \\\n# a comment inside is dropped\n; so is this \\\n  b\n", "a b" },
        { "Name=a \\\n\nWorkers=3\n", "a" },     /* an empty line ends it */
        { "Name=a \\", "a" },                    /* a backslash at the end of the file */
        { "Name=a \\\n# and a comment at the end of the file", "a" },
        { "Name=a\\\r\nb\r\n", "a b" },         /* CRLF */
        { "Name=\\\n  b\n", "b" },
        { "Na\\\nme=x\n", NULL },                /* the key "Na me": unknown */
        { "Name=C:\\\\\n", "C:\\" },            /* only the last backslash continues */
};

START_TEST(test_continuation)
{
        char *dir = make_tmpdir();

        log_capture_start();
        for (size_t i = 0; i < ELEMENTSOF(continuation_cases); i++) {
                _cleanup_(freep) char *content = NULL, *path = NULL;
                Settings s = {};

                ck_assert_int_ge(asprintf(&content, "[Proxy]\n%s", continuation_cases[i].in), 0);
                path = write_file(dir, "club.conf", content);
                ck_assert_msg(parse_path(path, NULL, 0, &s) == 0, "case %zu", i);
                if (continuation_cases[i].name)
                        ck_assert_msg(streq_ptr(s.name, continuation_cases[i].name),
                                      "case %zu: '%s'", i, strna(s.name));
                else
                        ck_assert_ptr_null(s.name);
                (void) log_captured();
                settings_done(&s);
        }
        rm_rf(dir);
}
END_TEST

/* ---- repeated sections ----------------------------------------------------------------- */

START_TEST(test_repeated_sections)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *path = NULL, *want = NULL;
        Settings s = {};

        log_capture_start();
        path = write_file(dir, "club.conf",
                          "[Upstream]\n"                  /* 1 */
                          "URL=http://127.0.0.1:8000\n"
                          "Weight=2\n"
                          "\n"
                          "[Proxy]\n"                     /* 5 */
                          "Workers=2\n"
                          "[Unknown]\n"                   /* 7: no callback */
                          "[Upstream]\n"                  /* 8 */
                          "URL=http://127.0.0.1:11434\n"
                          "[Upstream]\n"                  /* 10: refused by the callback */
                          "URL=http://127.0.0.1:9999\n"
                          "Bogus=1\n"                     /* ignored quietly with its section */
                          "[Upstream]\n"                  /* 13: refused again */
                          "Weight=x\n");
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EINVAL);
        want = expand("<4>@:7: Unknown section [Unknown], ignoring.\n"
                      "<3>@:10: Invalid section [Upstream]: too many upstreams (at most 2)\n"
                      "<3>@:13: Invalid section [Upstream]: too many upstreams (at most 2)\n", path);
        ck_assert_str_eq(log_captured(), want);

        ck_assert_uint_eq(s.sections_seen, 5);
        ck_assert_uint_eq(s.n_upstreams, 2);
        ck_assert_uint_eq(s.upstreams[0].line, 1);
        ck_assert_str_eq(s.upstreams[0].url, "http://127.0.0.1:8000");
        ck_assert_uint_eq(s.upstreams[0].weight, 2);
        ck_assert_uint_eq(s.upstreams[1].line, 8);
        ck_assert_str_eq(s.upstreams[1].url, "http://127.0.0.1:11434");
        ck_assert_uint_eq(s.upstreams[1].weight, 0);
        ck_assert_uint_eq(s.workers, 2);

        settings_done(&s);
        rm_rf(dir);
}
END_TEST

/* ---- drop-ins ------------------------------------------------------------------------ */

START_TEST(test_dropins)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *main_path = NULL, *dropins = NULL, *want = NULL, *sub = NULL;
        Settings s = {};

        log_capture_start();
        main_path = write_file(dir, "clubd.conf", "[Proxy]\nWorkers=1\nName=main\nModels=m0\n");
        dropins = path_join(dir, "clubd.conf.d");
        ck_assert_int_eq(mkdir(dropins, 0755), 0);
        free(write_file(dropins, "20-b.conf", "[Proxy]\nWorkers=3\nModels=b\n"));
        free(write_file(dropins, "10-a.conf", "# first drop-in\n[Proxy]\nWorkers=2\nName=a\nModels=a\n"));
        free(write_file(dropins, "README", "not a drop-in\n"));
        free(write_file(dropins, ".hidden.conf", "[Proxy]\nWorkers=99\n"));
        free(write_file(dropins, "30-c.conf.bak", "[Proxy]\nWorkers=98\n"));

        ck_assert_int_eq(parse_path(main_path, NULL, 0, &s), 0);
        ck_assert_str_eq(log_captured(), "");
        ck_assert_uint_eq(s.workers, 3);        /* 20-b.conf is read last */
        ck_assert_str_eq(s.name, "a");
        ck_assert_str_eq(s.models[0], "m0");
        ck_assert_str_eq(s.models[1], "a");
        ck_assert_str_eq(s.models[2], "b");
        ck_assert_ptr_null(s.models[3]);
        settings_done(&s);

        /* Errors name the drop-in. Each file starts outside any section. */
        s = (Settings) {};
        free(write_file(dropins, "15-bad.conf", "\n\nWorkers=4\n[Proxy]\nEnabled=perhaps\n"));
        ck_assert_int_eq(parse_path(main_path, NULL, 0, &s), -EINVAL);
        want = expand("<3>@/15-bad.conf:3: Assignment to 'Workers' before the first [Section] header.\n"
                      "<3>@/15-bad.conf:5: Invalid value for [Proxy] Enabled=perhaps: "
                      "expected a boolean: yes/no, true/false, on/off or 1/0\n", dropins);
        ck_assert_str_eq(log_captured(), want);
        ck_assert_uint_eq(s.workers, 3);        /* the files after it were read too */
        settings_done(&s);

        /* A directory where a drop-in should be: an error naming it; the rest is still read. */
        s = (Settings) {};
        free(want);
        sub = path_join(dropins, "15-bad.conf");
        ck_assert_int_eq(unlink(sub), 0);
        ck_assert_int_eq(mkdir(sub, 0755), 0);
        ck_assert_int_eq(parse_path(main_path, NULL, 0, &s), -EISDIR);
        want = expand("<3>Failed to read configuration file @/15-bad.conf: it is a directory.\n", dropins);
        ck_assert_str_eq(log_captured(), want);
        ck_assert_uint_eq(s.workers, 3);
        ck_assert_int_eq(rmdir(sub), 0);
        settings_done(&s);

        /* An explicit drop-in directory, and CONFIG_NO_DROPINS. */
        s = (Settings) {};
        free(sub);
        sub = path_join(dir, "alt");
        ck_assert_int_eq(mkdir(sub, 0755), 0);
        free(write_file(sub, "x.conf", "[Proxy]\nWorkers=7\n"));
        ck_assert_int_eq(parse_path(main_path, sub, 0, &s), 0);
        ck_assert_uint_eq(s.workers, 7);
        ck_assert_str_eq(s.name, "main");
        settings_done(&s);
        s = (Settings) {};
        ck_assert_int_eq(parse_path(main_path, NULL, CONFIG_NO_DROPINS, &s), 0);
        ck_assert_uint_eq(s.workers, 1);
        ck_assert_str_eq(s.name, "main");
        settings_done(&s);

        /* A drop-in "directory" that is a file. */
        s = (Settings) {};
        free(want);
        ck_assert_int_eq(parse_path(main_path, main_path, 0, &s), -ENOTDIR);
        want = expand("<3>Failed to open drop-in directory @: Not a directory\n", main_path);
        ck_assert_str_eq(log_captured(), want);
        settings_done(&s);

        rm_rf(dir);
}
END_TEST

START_TEST(test_missing)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *path = path_join(dir, "clubd.conf"), *dropins = NULL, *want = NULL;
        Settings s = {};

        log_capture_start();
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -ENOENT);
        want = expand("<3>Failed to open configuration file @: No such file or directory\n", path);
        ck_assert_str_eq(log_captured(), want);

        ck_assert_int_eq(parse_path(path, NULL, CONFIG_MISSING_OK, &s), 0);
        ck_assert_str_eq(log_captured(), "");

        /* Drop-ins are read even without the main file. */
        ck_assert_int_ge(asprintf(&dropins, "%s.d", path), 0);
        ck_assert_int_eq(mkdir(dropins, 0755), 0);
        free(write_file(dropins, "50-x.conf", "[Proxy]\nWorkers=5\n"));
        ck_assert_int_eq(parse_path(path, NULL, CONFIG_MISSING_OK, &s), 0);
        ck_assert_uint_eq(s.workers, 5);
        settings_done(&s);
        rm_rf(dir);
}
END_TEST

START_TEST(test_not_regular)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *sub = path_join(dir, "clubd.conf"), *fifo = path_join(dir, "fifo.conf");
        _cleanup_(freep) char *want1 = NULL, *want2 = NULL, *want3 = NULL;
        Settings s = {};

        log_capture_start();
        ck_assert_int_eq(mkdir(sub, 0755), 0);
        ck_assert_int_eq(parse_path(sub, NULL, 0, &s), -EISDIR);
        want1 = expand("<3>Failed to read configuration file @: it is a directory.\n", sub);
        ck_assert_str_eq(log_captured(), want1);
        /* Not even with CONFIG_MISSING_OK: it is there, just wrong. */
        ck_assert_int_eq(parse_path(sub, NULL, CONFIG_MISSING_OK, &s), -EISDIR);
        (void) log_captured();

        /* A FIFO must neither hang the parser nor be read. */
        ck_assert_int_eq(mkfifo(fifo, 0600), 0);
        ck_assert_int_eq(parse_path(fifo, NULL, 0, &s), -EBADFD);
        want2 = expand("<3>Failed to read configuration file @: not a regular file.\n", fifo);
        ck_assert_str_eq(log_captured(), want2);

        /* Unreadable: root reads anything, so only check this as another user. */
        if (geteuid() != 0) {
                _cleanup_(freep) char *secret = write_file(dir, "secret.conf", "[Proxy]\n");

                ck_assert_int_eq(chmod(secret, 0), 0);
                ck_assert_int_eq(parse_path(secret, NULL, 0, &s), -EACCES);
                want3 = expand("<3>Failed to open configuration file @: Permission denied\n", secret);
                ck_assert_str_eq(log_captured(), want3);
        }
        rm_rf(dir);
}
END_TEST

/* ---- limits --------------------------------------------------------------------------- */

START_TEST(test_limits)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *content = malloc(CONFIG_FILE_SIZE_MAX + 2), *path = NULL, *want = NULL;
        size_t n;
        Settings s = {};

        log_capture_start();
        ck_assert_ptr_nonnull(content);

        /* A logical line of exactly CONFIG_LINE_MAX bytes is fine. */
        n = (size_t) sprintf(content, "[Proxy]\nName=");
        memset(content + n, 'x', CONFIG_LINE_MAX - 5);
        n += CONFIG_LINE_MAX - 5;
        n += (size_t) sprintf(content + n, "\nWorkers=9\n");
        path = write_file_len(dir, "club.conf", content, n);
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), 0);
        ck_assert_uint_eq(strlen(s.name), CONFIG_LINE_MAX - 5);
        ck_assert_uint_eq(s.workers, 9);
        ck_assert_str_eq(log_captured(), "");
        settings_done(&s);

        /* One byte more is an error, reported once; parsing goes on after it. */
        s = (Settings) {};
        free(path);
        n = (size_t) sprintf(content, "[Proxy]\nName=");
        memset(content + n, 'x', CONFIG_LINE_MAX - 4);
        n += CONFIG_LINE_MAX - 4;
        n += (size_t) sprintf(content + n, "\nWorkers=9\n");
        path = write_file_len(dir, "club.conf", content, n);
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EINVAL);
        ck_assert_ptr_null(s.name);
        ck_assert_uint_eq(s.workers, 9);
        want = expand("<3>@:2: Line too long (more than 64 KiB, continuation lines included).\n", path);
        ck_assert_str_eq(log_captured(), want);
        settings_done(&s);

        /* The same through continuation lines, each of them short. */
        s = (Settings) {};
        free(path);
        n = (size_t) sprintf(content, "[Proxy]\nName=");
        for (unsigned i = 0; i < CONFIG_LINE_MAX / 8; i++)
                n += (size_t) sprintf(content + n, "abcdefg\\\n");
        n += (size_t) sprintf(content + n, "end\nWorkers=8\n");
        path = write_file_len(dir, "club.conf", content, n);
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EINVAL);
        ck_assert_ptr_null(s.name);
        ck_assert_uint_eq(s.workers, 8);
        ck_assert_str_eq(log_captured(), want);
        settings_done(&s);

        /* A file larger than CONFIG_FILE_SIZE_MAX is refused whole. */
        s = (Settings) {};
        free(path);
        free(want);
        memset(content, '#', CONFIG_FILE_SIZE_MAX + 1);
        content[0] = '\n';
        path = write_file_len(dir, "club.conf", content, CONFIG_FILE_SIZE_MAX + 1);
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -EFBIG);
        want = expand("<3>Failed to read configuration file @: larger than 4096 KiB.\n", path);
        ck_assert_str_eq(log_captured(), want);
        ck_assert_int_eq(config_parse_buffer("buf", content, CONFIG_FILE_SIZE_MAX + 1, TABLE(&s), NULL, &s), -EFBIG);
        ck_assert_str_eq(log_captured(), "<3>buf: File too large (more than 4096 KiB), refusing.\n");

        rm_rf(dir);
}
END_TEST

START_TEST(test_too_many_dropins)
{
        char *dir = make_tmpdir();
        _cleanup_(freep) char *path = NULL, *dropins = NULL, *want = NULL;
        Settings s = {};

        log_capture_start();
        path = write_file(dir, "clubd.conf", "[Proxy]\nWorkers=1\n");
        ck_assert_int_ge(asprintf(&dropins, "%s.d", path), 0);
        ck_assert_int_eq(mkdir(dropins, 0755), 0);
        for (unsigned i = 0; i < CONFIG_DROPINS_MAX; i++) {
                char name[32];

                snprintf(name, sizeof name, "%03u.conf", i);
                free(write_file(dropins, name, "[Proxy]\nWorkers=2\n"));
        }
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), 0);
        ck_assert_uint_eq(s.workers, 2);

        free(write_file(dropins, "999.conf", "[Proxy]\nWorkers=3\n"));
        s.workers = 0;
        ck_assert_int_eq(parse_path(path, NULL, 0, &s), -E2BIG);
        ck_assert_uint_eq(s.workers, 1);        /* the main file only */
        want = expand("<3>Too many drop-ins in @ (more than 128), reading none of them.\n", dropins);
        ck_assert_str_eq(log_captured(), want);
        rm_rf(dir);
}
END_TEST

/* ---- everything else ------------------------------------------------------------------ */

START_TEST(test_enomem_aborts)
{
        Settings s = {};
        const char *in = "[Proxy]\nWorkers=1\nExplode=1\nWorkers=2\n";

        log_capture_start();
        ck_assert_int_eq(config_parse_buffer("mem", in, strlen(in), TABLE(&s), upstream_start, &s), -ENOMEM);
        ck_assert_uint_eq(s.workers, 1);        /* stopped at once */
}
END_TEST

START_TEST(test_buffer)
{
        Settings s = {};
        const char *in = "[Proxy]\nWorkers=6\nLisen=x";

        log_capture_start();
        ck_assert_int_eq(config_parse_buffer("<memory>", in, strlen(in), TABLE(&s), NULL, &s), 0);
        ck_assert_uint_eq(s.workers, 6);
        ck_assert_str_eq(log_captured(), "<4><memory>:3: Unknown key 'Lisen' in section [Proxy], ignoring.\n");
        ck_assert_int_eq(config_parse_buffer("<empty>", NULL, 0, TABLE(&s), NULL, &s), 0);
}
END_TEST

START_TEST(test_builtin_parsers_direct)
{
        /* Built-in parsers can be called outside config_parse(), e.g. from a custom parser. */
        ConfigContext ctx = { .file = "x", .line = 1, .section = "S", .section_line = 1 };
        bool b = false;
        char *str = NULL;
        char **l = NULL;

        ck_assert_int_eq(config_parse_bool(&ctx, "K", "yes", 0, &b, NULL), 0);
        ck_assert(b);
        ck_assert_int_eq(config_parse_bool(&ctx, "K", "nah", 0, &b, NULL), -EINVAL);
        ck_assert_int_eq(config_parse_string(&ctx, "K", "v", 0, &str, NULL), 0);
        ck_assert_str_eq(str, "v");
        ck_assert_int_eq(config_parse_string(&ctx, "K", "", 0, &str, NULL), 0);
        ck_assert_ptr_null(str);
        ck_assert_int_eq(config_parse_strv(&ctx, "K", "  \t ", 0, &l, NULL), 0);
        ck_assert_ptr_null(l);
        ck_assert_int_eq(config_parse_strv(&ctx, "K", "a", 0, &l, NULL), 0);
        ck_assert_int_eq(config_parse_strv(&ctx, "K", " b  c ", 0, &l, NULL), 0);
        ck_assert_str_eq(l[0], "a");
        ck_assert_str_eq(l[1], "b");
        ck_assert_str_eq(l[2], "c");
        ck_assert_ptr_null(l[3]);
        l = config_strv_free(l);
        ck_assert_ptr_null(l);
}
END_TEST

static Suite *conf_parser_suite(void) {
        Suite *s = suite_create("conf-parser");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_syntax);
        tcase_add_test(tc, test_values);
        tcase_add_test(tc, test_invalid_values);
        tcase_add_test(tc, test_continuation);
        tcase_add_test(tc, test_repeated_sections);
        tcase_add_test(tc, test_dropins);
        tcase_add_test(tc, test_missing);
        tcase_add_test(tc, test_not_regular);
        tcase_add_test(tc, test_limits);
        tcase_add_test(tc, test_too_many_dropins);
        tcase_add_test(tc, test_enomem_aborts);
        tcase_add_test(tc, test_buffer);
        tcase_add_test(tc, test_builtin_parsers_direct);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        SRunner *sr = srunner_create(conf_parser_suite());
        int failed;

        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
