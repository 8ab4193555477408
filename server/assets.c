/* Placeholder until the dashboard build lands: one tiny page. */
#include "assets.h"

#include <string.h>

static const unsigned char index_html[] =
    "<!doctype html><title>clickflow</title><p>clickflow is running.</p>";

bool cf_asset_find(const char *path, const unsigned char **ret_data, size_t *ret_len,
                   const char **ret_content_type)
{
    if (strcmp(path, "/") != 0 && strcmp(path, "/index.html") != 0)
        return false;
    *ret_data = index_html;
    *ret_len = sizeof index_html - 1;
    *ret_content_type = "text/html; charset=utf-8";
    return true;
}
