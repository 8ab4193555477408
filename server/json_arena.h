/* json_arena: a per-thread bump allocator behind cJSON's allocation hooks.
 *
 * Parsing a 1000-event ingest body makes about 13 cJSON allocations per event
 * (one per node, key and string value) and as many frees afterwards; malloc
 * and free were about an eighth of the HTTP threads' CPU. With the hooks
 * installed, a thread that has begun its arena gets cJSON's memory by bumping
 * a pointer, and the whole tree is released at once by a reset.
 *
 * The hooks are process-global (cJSON_InitHooks), so they must behave like
 * malloc/free for every other cJSON user (responses, push messages, queries):
 * - allocate: from the calling thread's arena while it is active (between
 *   begin and end), plain malloc() otherwise;
 * - free: nothing for a pointer inside the calling thread's arena (active or
 *   not), free() otherwise.
 * So a tree built in an arena must be dropped with cf_json_arena_reset() on
 * the same thread (cJSON_Delete on it is harmless but useless), and nothing
 * allocated while the arena is active may outlive the reset.
 *
 * Memory: chunks are kept across requests, but at most CF_JSON_ARENA_KEEP
 * bytes per thread; a request that needed more gives the excess back at its
 * reset. A thread's arena is freed when the thread exits. */
#ifndef CF_JSON_ARENA_H
#define CF_JSON_ARENA_H

#include <stdbool.h>
#include <stddef.h>

/* Bytes of arena memory a thread keeps between requests at most. */
#define CF_JSON_ARENA_KEEP ((size_t)4 << 20)

/* Installs the hooks, once per process (later calls do nothing). Call it at
 * start-up before other threads use cJSON: cJSON_InitHooks writes globals
 * without synchronisation. Returns 0, or -ENOMEM if the thread-exit cleanup
 * cannot be registered (the hooks are then not installed and cJSON keeps
 * using malloc). */
int cf_json_arena_install(void);

/* Routes the calling thread's cJSON allocations into its arena until
 * cf_json_arena_end(). Returns true if it did; false (cJSON keeps using
 * malloc, nothing to reset) if the hooks are not installed, if the arena
 * still holds memory of an earlier begin that was not reset yet, or on OOM
 * of the arena's bookkeeping. A true return must be paired with a
 * cf_json_arena_reset() on this thread. */
bool cf_json_arena_begin(void);

/* Stops routing allocations into the arena; what was allocated stays valid
 * until the reset. */
void cf_json_arena_end(void);

/* Invalidates everything allocated since begin and makes the arena
 * available to the next begin (ends it first if still active). Keeps up to
 * CF_JSON_ARENA_KEEP bytes of chunks, frees the rest. O(chunks). */
void cf_json_arena_reset(void);

/* True if p points into the calling thread's arena (for tests and checks). */
bool cf_json_arena_owns(const void *p);

/* Bytes of chunks the calling thread's arena holds right now. */
size_t cf_json_arena_capacity(void);

#endif
