/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <limits.h>
#include <math.h>

#include "cleanup.h"
#include "json-util.h"

CLUB_DEFINE_CLEANUP_VOID(struct json_tokener *, json_tokener_free, tokener_freep);

#define JOBJ_TO_STRING_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static const char *tokener_reason(enum json_tokener_error e) {
        switch (e) {
        case json_tokener_continue:
        case json_tokener_error_parse_eof:
                return "unexpected end of JSON";
        case json_tokener_error_depth:
                return "nested too deeply";
        case json_tokener_error_parse_unexpected:
                return "unexpected character";
        case json_tokener_error_parse_null:
                return "invalid literal, expected null";
        case json_tokener_error_parse_boolean:
                return "invalid literal, expected true or false";
        case json_tokener_error_parse_number:
                return "invalid number";
        case json_tokener_error_parse_array:
                return "invalid array, expected ',' or ']'";
        case json_tokener_error_parse_object_key_name:
                return "invalid object, expected a key in double quotes";
        case json_tokener_error_parse_object_key_sep:
                return "invalid object, expected ':' after a key";
        case json_tokener_error_parse_object_value_sep:
                return "invalid object, expected ',' or '}'";
        case json_tokener_error_parse_string:
                return "invalid string (a control character or a bad escape)";
        case json_tokener_error_parse_comment:
                return "comments are not allowed";
        case json_tokener_error_parse_utf8_string:
                return "invalid UTF-8";
        case json_tokener_error_size:
                return "too large";
        default:
                return "invalid JSON";
        }
}

static bool is_json_ws(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

/* The length of the well-formed UTF-8 character at s (n bytes available), 0 if ill-formed. */
static size_t utf8_char_len(const unsigned char *s, size_t n) {
        uint32_t cp, min;
        size_t len;

        if (s[0] < 0x80)
                return 1;
        if (s[0] < 0xC2)
                return 0;               /* a continuation byte, or an overlong 2-byte form */
        if (s[0] < 0xE0)
                len = 2, cp = s[0] & 0x1F, min = 0x80;
        else if (s[0] < 0xF0)
                len = 3, cp = s[0] & 0x0F, min = 0x800;
        else if (s[0] < 0xF5)
                len = 4, cp = s[0] & 0x07, min = 0x10000;
        else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return 0;
        return len;
}

/* RFC 8259 number grammar, and integers json-c can hold without clamping. */
static const char *check_number(const char *s, size_t n) {
        size_t i = 0, digits;
        bool integer = true, negative = false;

        if (i < n && s[i] == '-') {
                negative = true;
                i++;
        }
        digits = i;
        if (i < n && s[i] == '0')
                i++;
        else if (i < n && s[i] >= '1' && s[i] <= '9')
                while (i < n && is_digit(s[i]))
                        i++;
        else
                return "invalid number";
        digits = i - digits;

        if (i < n && s[i] == '.') {
                integer = false;
                if (++i >= n || !is_digit(s[i]))
                        return "invalid number";
                while (i < n && is_digit(s[i]))
                        i++;
        }
        if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                integer = false;
                if (++i < n && (s[i] == '+' || s[i] == '-'))
                        i++;
                if (i >= n || !is_digit(s[i]))
                        return "invalid number";
                while (i < n && is_digit(s[i]))
                        i++;
        }
        if (i != n)
                return "invalid number";

        if (integer) {
                const char *max = negative ? "9223372036854775808" : "18446744073709551615";
                size_t l = strlen(max);
                const char *d = s + negative;

                if (digits > l || (digits == l && memcmp(d, max, l) > 0))
                        return "integer out of range";
        }
        return NULL;
}

/*
 * What json-c's strict mode lets through but JSON does not allow, or what json-c would change
 * silently. Runs on text that json-c has accepted, so it only has to find tokens, not structure.
 */
static const char *check_text(const char *s, size_t n) {
        size_t i = 0;

        while (i < n) {
                unsigned char c = (unsigned char) s[i];

                if (c == '"') {
                        bool nul = false;
                        size_t j = i + 1;

                        for (;;) {
                                if (j >= n)
                                        return "unexpected end of JSON";
                                c = (unsigned char) s[j];
                                if (c == '"')
                                        break;
                                if (c == '\\') {
                                        if (j + 5 < n && memcmp(s + j + 1, "u0000", 5) == 0)
                                                nul = true;
                                        j += 2;
                                } else if (c < 0x20) {
                                        return "invalid string (a control character or a bad escape)";
                                } else if (c >= 0x80) {
                                        size_t k = utf8_char_len((const unsigned char *) s + j, n - j);

                                        if (k == 0)
                                                return "invalid UTF-8";
                                        j += k;
                                } else
                                        j++;
                        }
                        i = j + 1;
                        if (nul) {
                                size_t k = i;

                                while (k < n && is_json_ws(s[k]))
                                        k++;
                                if (k < n && s[k] == ':')
                                        return "NUL character (\\u0000) in an object key";
                        }
                } else if (c == '-' || is_digit((char) c)) {
                        size_t j = i;
                        const char *reason;

                        while (j < n && (is_digit(s[j]) || memchr("+-.eE", s[j], 5)))
                                j++;
                        reason = check_number(s + i, j - i);
                        if (reason)
                                return reason;
                        i = j;
                } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
                        size_t j = i;

                        while (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z')))
                                j++;
                        if (!((j - i == 4 && (memcmp(s + i, "true", 4) == 0 || memcmp(s + i, "null", 4) == 0)) ||
                              (j - i == 5 && memcmp(s + i, "false", 5) == 0)))
                                return "invalid literal (NaN and Infinity are not JSON)";
                        i = j;
                } else if (c == '\'')
                        return "invalid object, expected a key in double quotes";  /* json-c takes {'a':1} */
                else if (is_json_ws((char) c) || memchr("[]{}:,", c, 6))
                        i++;
                else
                        return "unexpected character";
        }
        return NULL;
}

int jobj_parse(const char *buf, size_t len, int max_depth, json_object **ret, const char **ret_reason) {
        _cleanup_(tokener_freep) struct json_tokener *tok = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL;
        enum json_tokener_error e = json_tokener_continue;
        const char *reason;
        size_t done = 0, end = 0;

        assert(buf || len == 0);
        assert(max_depth >= 0);
        assert(ret);

        tok = json_tokener_new_ex(max_depth > 0 ? max_depth : JSON_DEPTH_MAX);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                    JSON_TOKENER_VALIDATE_UTF8);

        /* json-c takes an int length: feed larger buffers in pieces. */
        while (done < len) {
                size_t n = MIN(len - done, (size_t) INT_MAX);

                o = json_tokener_parse_ex(tok, buf + done, (int) n);
                e = json_tokener_get_error(tok);
                if (e != json_tokener_continue) {
                        end = done + json_tokener_get_parse_end(tok);
                        break;
                }
                done += n;
        }
        if (e == json_tokener_continue) {
                /* All input is in: a NUL tells json-c so, which ends a top-level number or literal
                 * ("123", "true"); anything else still open is truncated. */
                o = json_tokener_parse_ex(tok, "", 1);
                e = json_tokener_get_error(tok);
                end = len;
        }

        if (e == json_tokener_success) {
                reason = NULL;
                for (size_t i = end; i < len; i++)
                        if (!is_json_ws(buf[i])) {
                                reason = "unexpected text after the JSON value";
                                break;
                        }
                if (!reason)
                        reason = check_text(buf, end);
                if (!reason) {
                        *ret = TAKE_PTR(o);     /* NULL for "null" */
                        return 0;
                }
        } else if ((e == json_tokener_continue || e == json_tokener_error_parse_eof) &&
                   len > 0 && memchr(buf, 0, len))
                reason = "unexpected NUL byte";         /* json-c stops at a NUL as if the text ended */
        else
                reason = tokener_reason(e);

        if (ret_reason)
                *ret_reason = reason;
        return e == json_tokener_error_depth ? -E2BIG : -EINVAL;
}

static int get_field(json_object *o, const char *key, json_type type, json_object **ret) {
        json_object *v;

        assert(key);
        if (!json_object_is_type(o, json_type_object))
                return -EINVAL;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return -ENOENT;         /* missing, or null */
        if (type != json_type_null && !json_object_is_type(v, type))
                return -EINVAL;
        *ret = v;
        return 0;
}

int jobj_get_string(json_object *o, const char *key, const char **ret) {
        json_object *v;
        const char *s;
        int r;

        assert(ret);
        r = get_field(o, key, json_type_string, &v);
        if (r < 0)
                return r;
        s = json_object_get_string(v);
        if (strlen(s) != (size_t) json_object_get_string_len(v))
                return -EINVAL;         /* "\u0000" inside: C would see a shorter string */
        *ret = s;
        return 0;
}

int jobj_get_int64(json_object *o, const char *key, int64_t *ret) {
        json_object *v;
        int64_t i;
        int r;

        assert(ret);
        r = get_field(o, key, json_type_int, &v);
        if (r < 0)
                return r;
        i = json_object_get_int64(v);
        if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t) INT64_MAX)
                return -ERANGE;         /* json-c clamps what it holds as uint64 */
        *ret = i;
        return 0;
}

int jobj_get_uint64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        int r;

        assert(ret);
        r = get_field(o, key, json_type_int, &v);
        if (r < 0)
                return r;
        if (json_object_get_int64(v) < 0)
                return -ERANGE;         /* json-c would give 0 */
        *ret = json_object_get_uint64(v);
        return 0;
}

int jobj_get_bool(json_object *o, const char *key, bool *ret) {
        json_object *v;
        int r;

        assert(ret);
        r = get_field(o, key, json_type_boolean, &v);
        if (r < 0)
                return r;
        *ret = json_object_get_boolean(v);
        return 0;
}

int jobj_get_double(json_object *o, const char *key, double *ret) {
        json_object *v;
        double d;
        int r;

        assert(ret);
        r = get_field(o, key, json_type_null, &v);
        if (r < 0)
                return r;
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return -EINVAL;
        d = json_object_get_double(v);
        if (!isfinite(d))
                return -ERANGE;
        *ret = d;
        return 0;
}

int jobj_get_object(json_object *o, const char *key, json_object **ret) {
        assert(ret);
        return get_field(o, key, json_type_object, ret);
}

int jobj_get_array(json_object *o, const char *key, json_object **ret) {
        assert(ret);
        return get_field(o, key, json_type_array, ret);
}

int jobj_add(json_object *o, const char *key, json_object *v) {
        assert(json_object_is_type(o, json_type_object));
        assert(key);

        /* json-c replaces an existing key (that cannot fail); a new one needs memory. */
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

int jobj_add_string(json_object *o, const char *key, const char *value) {
        json_object *v = NULL;

        if (value) {
                v = json_object_new_string(value);
                if (!v)
                        return -ENOMEM;
        }
        return jobj_add(o, key, v);
}

int jobj_add_int64(json_object *o, const char *key, int64_t i) {
        json_object *v = json_object_new_int64(i);

        if (!v)
                return -ENOMEM;
        return jobj_add(o, key, v);
}

int jobj_add_bool(json_object *o, const char *key, bool b) {
        json_object *v = json_object_new_boolean(b);

        if (!v)
                return -ENOMEM;
        return jobj_add(o, key, v);
}

int jobj_to_string(json_object *o, char **ret, size_t *ret_len) {
        const char *s;
        size_t len;
        char *copy;

        assert(ret);
        s = json_object_to_json_string_length(o, JOBJ_TO_STRING_FLAGS, &len);
        if (!s)
                return -ENOMEM;
        copy = malloc(len + 1);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, s, len);
        copy[len] = 0;
        *ret = copy;
        if (ret_len)
                *ret_len = len;
        return 0;
}

int openai_error_body(const char *message, const char *type, const char *param, const char *code,
                      char **ret, size_t *ret_len) {
        _cleanup_(json_object_putp) json_object *body = NULL, *error = NULL;
        int r;

        assert(message && type && ret);

        error = json_object_new_object();
        body = json_object_new_object();
        if (!error || !body)
                return -ENOMEM;
        r = jobj_add_string(error, "message", message);
        if (r < 0)
                return r;
        r = jobj_add_string(error, "type", type);
        if (r < 0)
                return r;
        r = jobj_add_string(error, "param", param);
        if (r < 0)
                return r;
        r = jobj_add_string(error, "code", code);
        if (r < 0)
                return r;
        r = jobj_add(body, "error", TAKE_PTR(error));
        if (r < 0)
                return r;
        return jobj_to_string(body, ret, ret_len);
}
