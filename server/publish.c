/* publish: see publish.h. */
#include "publish.h"

#include "results_json.h"

void cf_publish(cf_push *p, cf_topic topic, const char *type, cJSON *data, bool interim)
{
    size_t len = 0;
    char *text = cf_push_message(type, data, &len);
    if (text) {
        cf_push_publish(p, topic, text, len, interim);
        cJSON_free(text);
    }
}
