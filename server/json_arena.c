#include "json_arena.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

/* Under AddressSanitizer the unused part of a chunk is poisoned and every
 * allocation is followed by a poisoned red zone, so an overrun of a cJSON
 * string or node is still reported as it would be with malloc. */
#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define REDZONE ((size_t)16)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#define REDZONE ((size_t)0)
#endif

/* What malloc guarantees, so any cJSON object fits. */
#define ALIGN (alignof(max_align_t))
/* First chunk: a 1000-event body's tree is a few hundred KiB, reached after
 * a few doublings on the first request and then kept. */
#define BASE_CHUNK ((size_t)64 << 10)

struct chunk {
    struct chunk *next;     /* the previous (smaller) chunk */
    size_t cap;             /* bytes of data */
    size_t used;
};

/* The chunk header, rounded up so data is ALIGN-aligned (malloc's pointer
 * is). */
#define HDR ((sizeof(struct chunk) + ALIGN - 1) & ~(ALIGN - 1))

struct arena {
    struct chunk *cur;      /* newest chunk, where allocation bumps */
    bool active;            /* between begin and end: allocations land here */
    bool in_use;            /* between begin and reset: memory is live */
};

/* Fast per-thread access; the key only exists for its destructor, which
 * frees the arena when an MHD pool thread exits. */
static _Thread_local struct arena *tl_arena;
static pthread_key_t arena_key;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static atomic_bool installed;

static inline unsigned char *chunk_data(struct chunk *c)
{
    return (unsigned char *)c + HDR;
}

static bool arena_owns(const struct arena *a, const void *p)
{
    uintptr_t u = (uintptr_t)p;
    for (struct chunk *c = a->cur; c; c = c->next) {
        uintptr_t lo = (uintptr_t)chunk_data(c);
        if (u >= lo && u - lo < c->cap)
            return true;
    }
    return false;
}

/* A new chunk for at least `need` bytes: twice the current one (so a request
 * chains O(log size) chunks), at most CF_JSON_ARENA_KEEP unless one
 * allocation needs more. */
static struct chunk *chunk_add(struct arena *a, size_t need)
{
    size_t cap = a->cur ? a->cur->cap * 2 : BASE_CHUNK;
    if (cap > CF_JSON_ARENA_KEEP)
        cap = CF_JSON_ARENA_KEEP;
    if (cap < need)
        cap = need;
    if (cap > SIZE_MAX - HDR)
        return NULL;
    struct chunk *c = malloc(HDR + cap);
    if (!c)
        return NULL;
    c->next = a->cur;
    c->cap = cap;
    c->used = 0;
    POISON(chunk_data(c), cap);
    a->cur = c;
    return c;
}

/* Bump allocation, ALIGN-aligned. O(1) amortized. */
static void *arena_alloc(struct arena *a, size_t n)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / 2)
        return NULL;
    size_t need = ((n + ALIGN - 1) & ~(ALIGN - 1)) + REDZONE;
    struct chunk *c = a->cur;
    if (!c || c->cap - c->used < need) {
        c = chunk_add(a, need);
        if (!c)
            return NULL;
    }
    void *p = chunk_data(c) + c->used;
    c->used += need;
    UNPOISON(p, n);
    return p;
}

static void *hook_malloc(size_t n)
{
    struct arena *a = tl_arena;
    if (a && a->active)
        return arena_alloc(a, n);
    return malloc(n);
}

/* Arena pointers are released by the reset. Only an arena in use can hold
 * live pointers, so other threads' and idle arenas cost one load. */
static void hook_free(void *p)
{
    struct arena *a = tl_arena;
    if (a && a->in_use && arena_owns(a, p))
        return;
    free(p);
}

static void arena_destroy(void *v)
{
    struct arena *a = v;
    if (!a)
        return;
    struct chunk *c = a->cur;
    while (c) {
        struct chunk *next = c->next;
        UNPOISON(chunk_data(c), c->cap);
        free(c);
        c = next;
    }
    free(a);
    tl_arena = NULL;
}

static void do_install(void)
{
    if (pthread_key_create(&arena_key, arena_destroy) != 0)
        return;
    cJSON_Hooks hooks = {.malloc_fn = hook_malloc, .free_fn = hook_free};
    cJSON_InitHooks(&hooks);
    atomic_store(&installed, true);
}

int cf_json_arena_install(void)
{
    pthread_once(&install_once, do_install);
    return atomic_load(&installed) ? 0 : -ENOMEM;
}

bool cf_json_arena_begin(void)
{
    if (!atomic_load_explicit(&installed, memory_order_relaxed))
        return false;
    struct arena *a = tl_arena;
    if (!a) {
        a = calloc(1, sizeof *a);
        if (!a)
            return false;
        if (pthread_setspecific(arena_key, a) != 0) {
            free(a);
            return false;
        }
        tl_arena = a;
    }
    if (a->in_use)
        return false;   /* an earlier tree still lives there */
    a->in_use = true;
    a->active = true;
    return true;
}

void cf_json_arena_end(void)
{
    struct arena *a = tl_arena;
    if (a)
        a->active = false;
}

void cf_json_arena_reset(void)
{
    struct arena *a = tl_arena;
    if (!a)
        return;
    a->active = false;
    a->in_use = false;
    /* Keep only the newest chunk (the largest, at least half of what this
     * request used), so the next request of the same size needs one chunk;
     * and not even that beyond the cap. */
    struct chunk *keep = a->cur;
    if (!keep)
        return;
    struct chunk *c = keep->next;
    while (c) {
        struct chunk *next = c->next;
        UNPOISON(chunk_data(c), c->cap);
        free(c);
        c = next;
    }
    keep->next = NULL;
    if (keep->cap > CF_JSON_ARENA_KEEP) {
        UNPOISON(chunk_data(keep), keep->cap);
        free(keep);
        a->cur = NULL;
        return;
    }
    keep->used = 0;
    POISON(chunk_data(keep), keep->cap);
}

bool cf_json_arena_owns(const void *p)
{
    struct arena *a = tl_arena;
    return a && arena_owns(a, p);
}

size_t cf_json_arena_capacity(void)
{
    struct arena *a = tl_arena;
    size_t n = 0;
    for (struct chunk *c = a ? a->cur : NULL; c; c = c->next)
        n += c->cap;
    return n;
}
