/* assets: the dashboard files (web/), embedded into the binary at build time
 * so it works offline with no CDN. */
#ifndef CF_ASSETS_H
#define CF_ASSETS_H

#include <stdbool.h>
#include <stddef.h>

/* Looks up an asset by URL path ("/" means "/index.html"). On success sets
 * the borrowed, static data, its length and its Content-Type. */
bool cf_asset_find(const char *path, const unsigned char **ret_data, size_t *ret_len,
                   const char **ret_content_type);

#endif
