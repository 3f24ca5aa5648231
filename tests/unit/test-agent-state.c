/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The agent's saved state (daemons/clubd/agent-state.c): round trip, atomic replace, mode
 * 0600, corrupt and newer-version files refused with a reason, the endpoint rules. */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-state.h"

static char dir[] = "/tmp/test-agent-state.XXXXXX";

static void setup(void) {
        strcpy(dir, "/tmp/test-agent-state.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void) {
        char cmd[128];

        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        ck_assert_int_eq(system(cmd), 0);
}

static void fill(AgentSavedState *s, int64_t id) {
        *s = (AgentSavedState) {
                .provider_id = id,
                .name = strdup("gpu-box-1"),
                .gateway_url = strdup("https://gw.example.org"),
                .gateway_endpoint = strdup("gw.example.org:51820"),
                .heartbeat_interval_sec = 30,
                .agent_port = 8090,
                .insecure = false,
                .ca_file = strdup("/etc/club/ca.pem"),
        };
        inet_pton(AF_INET, "100.96.0.8", &s->mesh_address);
        inet_pton(AF_INET, "100.96.0.1", &s->gateway_mesh_address);
        ck_assert_int_eq(wg_key_generate(&s->private_key), 0);
        ck_assert_int_eq(wg_key_generate(&s->gateway_public_key), 0);
        for (size_t i = 0; i < sizeof s->request_secret; i++)
                s->request_secret[i] = (uint8_t) (i * 7 + 1);
}

static void write_file(const char *text) {
        char path[256];
        FILE *f;

        snprintf(path, sizeof path, "%s/" AGENT_STATE_FILE, dir);
        f = fopen(path, "we");
        ck_assert_ptr_nonnull(f);
        fputs(text, f);
        fclose(f);
}

static size_t n_entries(void) {
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        ck_assert_ptr_nonnull(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' || (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")))
                        n++;
        closedir(d);
        return n;
}

START_TEST(test_round_trip)
{
        AgentSavedState s;
        AgentSavedState *l = NULL;
        char path[256];
        struct stat st;

        fill(&s, 7);
        ck_assert_int_eq(agent_state_save(dir, &s), 0);
        snprintf(path, sizeof path, "%s/" AGENT_STATE_FILE, dir);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0600);
        ck_assert_uint_eq(n_entries(), 1);      /* no temporary file left */

        ck_assert_int_eq(agent_state_load(dir, &l, NULL), 0);
        ck_assert_int_eq(l->provider_id, 7);
        ck_assert_str_eq(l->name, "gpu-box-1");
        ck_assert_str_eq(l->gateway_url, "https://gw.example.org");
        ck_assert_str_eq(l->gateway_endpoint, "gw.example.org:51820");
        ck_assert_str_eq(l->ca_file, "/etc/club/ca.pem");
        ck_assert_uint_eq(l->mesh_address.s_addr, s.mesh_address.s_addr);
        ck_assert_uint_eq(l->gateway_mesh_address.s_addr, s.gateway_mesh_address.s_addr);
        ck_assert_uint_eq(l->heartbeat_interval_sec, 30);
        ck_assert_uint_eq(l->agent_port, 8090);
        ck_assert(!l->insecure);
        ck_assert(wg_key_equal(&l->private_key, &s.private_key));
        ck_assert(wg_key_equal(&l->gateway_public_key, &s.gateway_public_key));
        ck_assert_mem_eq(l->request_secret, s.request_secret, sizeof s.request_secret);
        agent_saved_state_free(l);
        agent_saved_state_done(&s);
}
END_TEST

START_TEST(test_atomic_replace)
{
        AgentSavedState s;
        AgentSavedState *l = NULL;

        fill(&s, 7);
        ck_assert_int_eq(agent_state_save(dir, &s), 0);
        s.provider_id = 8;
        ck_assert_int_eq(free_and_strdup(&s.name, "renamed"), 0);
        s.ca_file = mfree(s.ca_file);
        s.insecure = true;
        ck_assert_int_eq(agent_state_save(dir, &s), 0);
        ck_assert_uint_eq(n_entries(), 1);
        ck_assert_int_eq(agent_state_load(dir, &l, NULL), 0);
        ck_assert_int_eq(l->provider_id, 8);
        ck_assert_str_eq(l->name, "renamed");
        ck_assert_ptr_null(l->ca_file);
        ck_assert(l->insecure);
        agent_saved_state_free(l);

        /* An invalid state is refused before anything is written: the old file stays. */
        s.heartbeat_interval_sec = 0;
        ck_assert_int_eq(agent_state_save(dir, &s), -EINVAL);
        ck_assert_int_eq(agent_state_load(dir, &l, NULL), 0);
        ck_assert_int_eq(l->provider_id, 8);
        agent_saved_state_free(l);
        agent_saved_state_done(&s);
}
END_TEST

START_TEST(test_save_creates_dir)
{
        AgentSavedState s;
        AgentSavedState *l = NULL;
        char sub[300];
        struct stat st;

        snprintf(sub, sizeof sub, "%s/new", dir);
        fill(&s, 3);
        ck_assert_int_eq(agent_state_save(sub, &s), 0);
        ck_assert_int_eq(stat(sub, &st), 0);
        ck_assert_uint_eq(st.st_mode & 07777, 0700);
        ck_assert_int_eq(agent_state_load(sub, &l, NULL), 0);
        agent_saved_state_free(l);
        agent_saved_state_done(&s);
}
END_TEST

START_TEST(test_missing_and_remove)
{
        AgentSavedState s;
        AgentSavedState *l = NULL;

        ck_assert_int_eq(agent_state_load(dir, &l, NULL), -ENOENT);
        ck_assert_int_eq(agent_state_remove(dir), 0);   /* nothing to remove is fine */
        fill(&s, 1);
        ck_assert_int_eq(agent_state_save(dir, &s), 0);
        ck_assert_int_eq(agent_state_remove(dir), 0);
        ck_assert_int_eq(agent_state_load(dir, &l, NULL), -ENOENT);
        agent_saved_state_done(&s);
}
END_TEST

static const char good[] =
        "{\"version\":1,\"provider_id\":7,\"name\":\"a\",\"gateway_url\":\"https://g\",\"mesh_address\":\"100.96.0.8\","
        "\"gateway_public_key\":\"HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVc=\",\"gateway_endpoint\":\"1.2.3.4:51820\","
        "\"gateway_mesh_address\":\"100.96.0.1\",\"heartbeat_interval_sec\":30,\"agent_port\":8090,"
        "\"private_key\":\"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\",\"request_secret\":\"HNAWHzJjeos6nBSDAVs8Yp1zccjyv4u9be4/VqJVoVc=\"}";

START_TEST(test_refuses)
{
        static const struct {
                const char *from, *to;          /* replace in good[] */
                int error;
                const char *reason;             /* a word of the reason */
        } cases[] = {
                { "{\"version\":1", "{\"version\":2", -EPROTONOSUPPORT, "newer clubd" },
                { "{\"version\":1,", "{", -EBADMSG, "version" },
                { "\"provider_id\":7", "\"provider_id\":0", -EBADMSG, "provider_id" },
                { "\"name\":\"a\"", "\"name\":\"a b\"", -EBADMSG, "name" },
                { "https://g", "ftp://g", -EBADMSG, "gateway_url" },
                { "100.96.0.8", "100.96.0", -EBADMSG, "mesh_address" },
                { "1.2.3.4:51820", "1.2.3.4", -EBADMSG, "gateway_endpoint" },
                { "\"heartbeat_interval_sec\":30", "\"heartbeat_interval_sec\":3601", -EBADMSG, "heartbeat" },
                { "\"agent_port\":8090", "\"agent_port\":65536", -EBADMSG, "agent_port" },
                { "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=", "short", -EBADMSG, "private_key" },
                { "\"request_secret\":\"HNAW", "\"request_secret\":\"!NAW", -EBADMSG, "request_secret" },
                { "}", "", -EBADMSG, "JSON" },
        };
        AgentSavedState *l = NULL;
        const char *reason;

        write_file(good);
        ck_assert_int_eq(agent_state_load(dir, &l, NULL), 0);
        l = agent_saved_state_free(l);

        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                char buf[2048];
                const char *p = strstr(good, cases[i].from);

                ck_assert_ptr_nonnull(p);
                snprintf(buf, sizeof buf, "%.*s%s%s", (int) (p - good), good, cases[i].to, p + strlen(cases[i].from));
                write_file(buf);
                reason = NULL;
                ck_assert_int_eq(agent_state_load(dir, &l, &reason), cases[i].error);
                ck_assert_ptr_nonnull(reason);
                ck_assert_msg(strstr(reason, cases[i].reason), "case %zu: reason '%s'", i, reason);
        }
}
END_TEST

START_TEST(test_too_big)
{
        char *big = malloc(AGENT_STATE_SIZE_MAX + 2);
        AgentSavedState *l = NULL;

        memset(big, ' ', AGENT_STATE_SIZE_MAX + 1);
        big[AGENT_STATE_SIZE_MAX + 1] = 0;
        write_file(big);
        free(big);
        ck_assert_int_eq(agent_state_load(dir, &l, NULL), -EFBIG);
}
END_TEST

START_TEST(test_endpoints)
{
        static const struct {
                const char *s;
                const char *host;
                unsigned port;
        } good_ones[] = {
                { "gw.example.org:51820", "gw.example.org", 51820 },
                { "10.0.0.1:1", "10.0.0.1", 1 },
                { "[fd00::1]:51820", "fd00::1", 51820 },
                { "a:65535", "a", 65535 },
        };
        static const char *const bad[] = {
                "gw.example.org", "gw.example.org:0", "gw.example.org:65536", ":51820", "[fd00::1]51820",
                "[nothex]:1", "fd00::1:51820", "-gw.org:1", "gw-.org:1", "gw..org:1", "g w:1", "gw.org:1x", "",
        };

        for (size_t i = 0; i < sizeof good_ones / sizeof good_ones[0]; i++) {
                char *host = NULL;
                uint16_t port;

                ck_assert_msg(agent_endpoint_valid(good_ones[i].s), "%s", good_ones[i].s);
                ck_assert_int_eq(agent_endpoint_split(good_ones[i].s, &host, &port), 0);
                ck_assert_str_eq(host, good_ones[i].host);
                ck_assert_uint_eq(port, good_ones[i].port);
                free(host);
        }
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                ck_assert_msg(!agent_endpoint_valid(bad[i]), "'%s' accepted", bad[i]);
}
END_TEST

int main(void) {
        Suite *s = suite_create("agent-state");
        TCase *tc = tcase_create("core");
        SRunner *sr;
        int failed;

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, test_round_trip);
        tcase_add_test(tc, test_atomic_replace);
        tcase_add_test(tc, test_save_creates_dir);
        tcase_add_test(tc, test_missing_and_remove);
        tcase_add_test(tc, test_refuses);
        tcase_add_test(tc, test_too_big);
        tcase_add_test(tc, test_endpoints);
        suite_add_tcase(s, tc);
        sr = srunner_create(s);
        srunner_run_all(sr, CK_NORMAL);
        failed = srunner_ntests_failed(sr);
        srunner_free(sr);
        return failed == 0 ? 0 : 1;
}
