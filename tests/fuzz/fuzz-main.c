/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Replays fuzzing inputs without libFuzzer: each argument is a file or a directory of files,
 * and each file goes once through LLVMFuzzerTestOneInput(). Used by `meson test --suite fuzz`
 * in normal builds, so every corpus file (crashes found earlier included) is a regression test.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "macro.h"

static int replay_file(const char *path) {
        _cleanup_(closep) int fd = -EBADF;
        _cleanup_(freep) uint8_t *buf = NULL;
        struct stat st;
        size_t n = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                fprintf(stderr, "Failed to open %s: %m\n", path);
                return -errno;
        }
        /* Exactly size bytes, so that ASan sees any read past the end. */
        buf = malloc((size_t) st.st_size ?: 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + n, (size_t) st.st_size - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        fprintf(stderr, "Failed to read %s: %s\n", path, k < 0 ? strerror(errno) : "short read");
                        return k < 0 ? -errno : -EIO;
                }
                n += (size_t) k;
        }
        (void) LLVMFuzzerTestOneInput(buf, n);
        return 0;
}

static int filter_regular(const struct dirent *de) {
        return de->d_name[0] != '.';
}

int main(int argc, char *argv[]) {
        unsigned count = 0;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s FILE|DIRECTORY…\n", argv[0]);
                return 2;
        }
        for (int i = 1; i < argc; i++) {
                struct dirent **names;
                struct stat st;
                int n;

                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "Failed to access %s: %m\n", argv[i]);
                        return 1;
                }
                if (!S_ISDIR(st.st_mode)) {
                        if (replay_file(argv[i]) < 0)
                                return 1;
                        count++;
                        continue;
                }
                n = scandir(argv[i], &names, filter_regular, alphasort);
                if (n < 0) {
                        fprintf(stderr, "Failed to list %s: %m\n", argv[i]);
                        return 1;
                }
                for (int j = 0; j < n; j++) {
                        char *p = NULL;
                        int r = -ENOMEM;

                        if (asprintf(&p, "%s/%s", argv[i], names[j]->d_name) >= 0) {
                                r = replay_file(p);
                                free(p);
                        }
                        free(names[j]);
                        if (r < 0) {
                                for (j++; j < n; j++)
                                        free(names[j]);
                                free(names);
                                return 1;
                        }
                        count++;
                }
                free(names);
        }
        if (count == 0) {
                fprintf(stderr, "No inputs found: a corpus directory is missing or empty.\n");
                return 1;
        }
        printf("%s: replayed %u inputs.\n", argv[0], count);
        return 0;
}
