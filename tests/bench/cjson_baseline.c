/* cjson_baseline: the parsing limit of S2. Parses the given JSON body files
 * with cJSON (as the ingest path does: a NUL-terminated copy,
 * cJSON_ParseWithLengthOpts, require_null_terminated) over and over on one
 * core for --seconds, counting array elements, and prints events/s. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    int first = 1;
    if (argc > 2 && strcmp(argv[1], "--seconds") == 0) {
        seconds = atof(argv[2]);
        first = 3;
    }
    int n = argc - first;
    if (n <= 0) {
        fprintf(stderr, "usage: cjson_baseline [--seconds S] body.json...\n");
        return 2;
    }
    char **bodies = calloc((size_t)n, sizeof *bodies);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    for (int i = 0; i < n; i++) {
        FILE *f = fopen(argv[first + i], "rb");
        if (!f) {
            perror(argv[first + i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        lens[i] = (size_t)ftell(f);
        rewind(f);
        bodies[i] = malloc(lens[i] + 1);
        if (fread(bodies[i], 1, lens[i], f) != lens[i])
            return 1;
        bodies[i][lens[i]] = '\0';
        fclose(f);
    }
    unsigned long long events = 0, bytes = 0;
    double start = now_s(), elapsed = 0;
    for (unsigned long it = 0; elapsed < seconds; it++) {
        int k = (int)(it % (unsigned long)n);
        char *copy = malloc(lens[k] + 1);
        memcpy(copy, bodies[k], lens[k] + 1);
        cJSON *root = cJSON_ParseWithLengthOpts(copy, lens[k] + 1, NULL, 1);
        if (!root) {
            fprintf(stderr, "cjson_baseline: %s is not JSON\n", argv[first + k]);
            return 1;
        }
        events += (unsigned long long)cJSON_GetArraySize(root);
        bytes += lens[k];
        cJSON_Delete(root);
        free(copy);
        if ((it & 15) == 15)
            elapsed = now_s() - start;
    }
    elapsed = now_s() - start;
    printf("BENCH events_per_s=%.0f mb_per_s=%.1f\n", (double)events / elapsed,
           (double)bytes / elapsed / 1e6);
    for (int i = 0; i < n; i++)
        free(bodies[i]);
    free(bodies);
    free(lens);
    return 0;
}
