/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>

#include "conf-parser.h"
#include "fuzz.h"
#include "log.h"

typedef struct FuzzConfig {
        SockAddr listen;
        bool enabled;
        unsigned workers;
        uint64_t requests, body_max, timeout;
        int log_level;
        char *name;
        char **models;
        unsigned sections;
} FuzzConfig;

static int fuzz_section_start(const ConfigContext *ctx, void *userdata) {
        FuzzConfig *c = userdata;

        check(ctx->file && ctx->section && ctx->line == ctx->section_line);
        if (++c->sections > 8) {
                config_set_reason(ctx, "too many sections");
                return -E2BIG;
        }
        return 0;
}

static int parse(const char *file, const uint8_t *data, size_t size, bool from_file) {
        FuzzConfig c = {};
        const ConfigItem table[] = {
                { "Proxy",    "Listen",   config_parse_sockaddr,  0, &c.listen },
                { "Proxy",    "Enabled",  config_parse_bool,      0, &c.enabled },
                { "Proxy",    "Workers",  config_parse_uint,      0, &c.workers },
                { "Proxy",    "Requests", config_parse_uint64,    0, &c.requests },
                { "Proxy",    "BodyMax",  config_parse_size,      0, &c.body_max },
                { "Proxy",    "Timeout",  config_parse_sec,       0, &c.timeout },
                { "Proxy",    "LogLevel", config_parse_log_level, 0, &c.log_level },
                { "Proxy",    "Name",     config_parse_string,    0, &c.name },
                { "Upstream", "URL",      config_parse_string,    0, &c.name },
                { "Upstream", "Models",   config_parse_strv,      0, &c.models },
                { "Upstream", "Obsolete", NULL,                   0, NULL },
                { NULL }
        };
        int r;

        if (from_file)
                r = config_parse(file, NULL, table, fuzz_section_start, CONFIG_NO_DROPINS, &c);
        else
                r = config_parse_buffer(file, (const char *) data, size, table, fuzz_section_start, &c);
        check(r == 0 || r == -EINVAL || r == -ENOMEM || r == -EFBIG);

        if (c.name)
                check(strlen(c.name) <= CONFIG_LINE_MAX);
        free(c.name);
        config_strv_free(c.models);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static int null_fd = -EBADF, mem_fd = -EBADF;
        char path[64];
        int a, b;

        if (null_fd < 0) {
                /* Format every message (that code is under test too), but write them nowhere. */
                null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
                check(null_fd >= 0);
                log_set_fd(null_fd);
                log_set_max_level(LOG_DEBUG);
                mem_fd = memfd_create("fuzz.conf", MFD_CLOEXEC);
                check(mem_fd >= 0);
        }

        a = parse("fuzz.conf", data, size, false);

        /* The same bytes as a file must give the same result. */
        check(ftruncate(mem_fd, 0) == 0);
        check(pwrite(mem_fd, data, size, 0) == (ssize_t) size);
        snprintf(path, sizeof path, "/proc/self/fd/%d", mem_fd);
        b = parse(path, data, size, true);
        check(a == b);
        return 0;
}
