/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "cleanup.h"
#include "fuzz.h"
#include "json-util.h"

/* Every getter on every field: no crash, and a result that agrees with the type. */
static void get_fields(json_object *o) {
        json_object_object_foreach(o, key, v) {
                json_object *x;
                const char *s;
                int64_t i;
                uint64_t u;
                double d;
                bool b;
                int r;

                r = jobj_get_string(o, key, &s);
                check(r == 0 ? json_object_is_type(v, json_type_string) && strlen(s) == (size_t) json_object_get_string_len(v)
                             : r == -ENOENT ? v == NULL : r == -EINVAL);
                r = jobj_get_int64(o, key, &i);
                check(r == 0 ? json_object_is_type(v, json_type_int) : r == -ENOENT || r == -EINVAL || r == -ERANGE);
                r = jobj_get_uint64(o, key, &u);
                check(r == 0 ? json_object_is_type(v, json_type_int) : r == -ENOENT || r == -EINVAL || r == -ERANGE);
                r = jobj_get_bool(o, key, &b);
                check(r == 0 ? json_object_is_type(v, json_type_boolean) : r == -ENOENT || r == -EINVAL);
                r = jobj_get_double(o, key, &d);
                check(r == 0 ? d == d : r == -ENOENT || r == -EINVAL || r == -ERANGE);
                r = jobj_get_object(o, key, &x);
                check(r == 0 ? x == v : r == -ENOENT || r == -EINVAL);
                r = jobj_get_array(o, key, &x);
                check(r == 0 ? x == v : r == -ENOENT || r == -EINVAL);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        _cleanup_(json_object_putp) json_object *o = NULL, *back = NULL;
        _cleanup_(freep) char *s = NULL, *again = NULL, *body = NULL;
        const char *reason = NULL;
        size_t len, len2;
        int r;

        r = jobj_parse((const char *) data, size, JSON_DEPTH_MAX, &o, &reason);
        if (r < 0) {
                check(r == -EINVAL || r == -E2BIG || r == -ENOMEM);
                check(r == -ENOMEM || reason);
                return 0;
        }

        /* What we accept serializes to JSON that we accept again, unchanged. */
        check(jobj_to_string(o, &s, &len) == 0);
        check(strlen(s) == len);
        r = jobj_parse(s, len, JSON_DEPTH_MAX, &back, &reason);
        if (r < 0)
                fprintf(stderr, "Round trip failed (%s): %s\n", reason, s);
        check(r == 0);
        check(jobj_to_string(back, &again, &len2) == 0);
        check(len == len2 && memcmp(s, again, len) == 0);

        if (json_object_is_type(o, json_type_object))
                get_fields(o);

        /* Any string we accepted can be an error message, and reads back the same. */
        if (json_object_is_type(o, json_type_string) &&
            strlen(json_object_get_string(o)) == (size_t) json_object_get_string_len(o)) {
                _cleanup_(json_object_putp) json_object *e = NULL;
                json_object *err;
                const char *m;

                check(openai_error_body(json_object_get_string(o), "invalid_request_error", "x", NULL, &body, &len) == 0);
                check(jobj_parse(body, len, 0, &e, NULL) == 0);
                check(jobj_get_object(e, "error", &err) == 0);
                check(jobj_get_string(err, "message", &m) == 0);
                check(streq(m, json_object_get_string(o)));
        }
        return 0;
}
