/* publish: the one way results reach the WebSocket hub. The shards publish
 * final results (windows, session_end, late) and the engine's ticker
 * publishes interim windows, trending and stats; both wrap their data in a
 * {"type","data"} message here, so a new publisher (a SQL view's topic, a
 * history hook) has one place to go through. */
#ifndef CF_PUBLISH_H
#define CF_PUBLISH_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "push.h"

/* Publishes data (consumed, freed in every case) to topic as one
 * {"type": type, "data": data} message; interim messages are the first a
 * slow client loses (cf_push_publish). Nothing happens on OOM. */
void cf_publish(cf_push *p, cf_topic topic, const char *type, cJSON *data, bool interim);

#endif
