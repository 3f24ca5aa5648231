/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* Cleanup helpers for the C libraries we use (STYLE.md §5). */

#include <stdio.h>
#include <curl/curl.h>
#include <json-c/json.h>

#include "macro.h"

CLUB_DEFINE_CLEANUP_VOID(CURL *, curl_easy_cleanup, curl_easy_cleanupp);
CLUB_DEFINE_CLEANUP_VOID(CURLM *, curl_multi_cleanup, curl_multi_cleanupp);
CLUB_DEFINE_CLEANUP_VOID(struct curl_slist *, curl_slist_free_all, curl_slist_free_allp);
CLUB_DEFINE_CLEANUP_VOID(FILE *, fclose, fclosep);

static inline void json_object_putp(json_object **j) {
        if (*j)
                json_object_put(*j);
        *j = NULL;
}
