/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * JSON helpers on json-c: a strict parser with a depth limit, typed field access that does
 * not coerce, and builders that report allocation failures.
 *
 * jobj_parse() accepts RFC 8259 JSON only. On top of json-c's strict mode it refuses what
 * json-c would let through or silently change: NaN and Infinity, numbers such as "1." or
 * "-01", integers outside the int64/uint64 range (json-c would clamp them), invalid UTF-8
 * (overlong forms, encoded surrogates), and "\u0000" inside object keys (json-c would cut
 * the key there). "\u0000" inside string values is kept; jobj_get_string() refuses such
 * strings, so C code never sees a truncated string.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <json-c/json.h>

#include "macro.h"

/* Nesting limit for request and response bodies. Counted as json-c does: a scalar alone is
 * depth 1, [1] is depth 2, {"a":[1]} is depth 3. */
#define JSON_DEPTH_MAX 64

/**
 * jobj_parse() - parse exactly one JSON value
 * @buf:        the text, @len bytes, not necessarily NUL-terminated
 * @len:        its length
 * @max_depth:  the nesting limit (see JSON_DEPTH_MAX); 0 means JSON_DEPTH_MAX
 * @ret:        the value; NULL for the JSON literal null
 * @ret_reason: optional: on -EINVAL, a static human-readable reason
 *
 * Whitespace around the value is fine; anything else after it is an error, and so is
 * incomplete input ("unexpected end of JSON").
 *
 * Return: 0, -EINVAL on a syntax error, -E2BIG when nested deeper than @max_depth, -ENOMEM.
 */
int jobj_parse(const char *buf, size_t len, int max_depth, json_object **ret, const char **ret_reason);

/*
 * Typed field access. @o must be an object (-EINVAL otherwise). Each returns 0, -ENOENT if the
 * key is missing or its value is JSON null, -EINVAL if the value has another type. Strings and
 * objects returned belong to @o. Beyond that:
 *   jobj_get_string()  refuses (-EINVAL) a string with "\u0000" inside, which C would see cut short;
 *   jobj_get_int64()   integers only, no doubles (1.0) or strings ("1"); -ERANGE above INT64_MAX;
 *   jobj_get_uint64()  integers only; -ERANGE if negative;
 *   jobj_get_bool()    true and false only, no 0, 1 or "yes";
 *   jobj_get_double()  any number, integers too; -ERANGE if not finite (1e400).
 */
int jobj_get_string(json_object *o, const char *key, const char **ret);
int jobj_get_int64(json_object *o, const char *key, int64_t *ret);
int jobj_get_uint64(json_object *o, const char *key, uint64_t *ret);
int jobj_get_bool(json_object *o, const char *key, bool *ret);
int jobj_get_double(json_object *o, const char *key, double *ret);
int jobj_get_object(json_object *o, const char *key, json_object **ret);
int jobj_get_array(json_object *o, const char *key, json_object **ret);

/* Build: add a field to the object @o (replacing one of the same name). 0 or -ENOMEM. */
int jobj_add_string(json_object *o, const char *key, const char *value); /* NULL value adds JSON null */
int jobj_add_int64(json_object *o, const char *key, int64_t v);
int jobj_add_bool(json_object *o, const char *key, bool v);
int jobj_add(json_object *o, const char *key, json_object *v);           /* takes ownership of v, also on failure */

/**
 * jobj_to_string() - serialize compactly
 * @o:       the value; NULL serializes as null
 * @ret:     a malloc'd NUL-terminated string (strings holding NUL come out as "\u0000")
 * @ret_len: optional: its length
 *
 * Uses JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE: no spaces, "/" unescaped.
 *
 * Return: 0 or -ENOMEM.
 */
int jobj_to_string(json_object *o, char **ret, size_t *ret_len);

/**
 * openai_error_body() - an OpenAI-shaped error body
 * @message: for the person reading it
 * @type:    e.g. "invalid_request_error", "authentication_error", "server_error"
 * @param:   the request field at fault, or NULL (then JSON null)
 * @code:    e.g. "model_not_found", or NULL (then JSON null)
 * @ret:     {"error":{"message":…,"type":…,"param":…,"code":…}} as a malloc'd string
 * @ret_len: optional: its length
 *
 * Return: 0 or -ENOMEM.
 */
int openai_error_body(const char *message, const char *type, const char *param, const char *code,
                      char **ret, size_t *ret_len);
