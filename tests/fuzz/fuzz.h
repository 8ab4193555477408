/* The libFuzzer entry point every harness here defines; replay_main.c calls
 * it on committed corpus files under `meson test`. */
#ifndef CF_FUZZ_H
#define CF_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Fuzz-harness assertion: abort() so both libFuzzer and the replay runner
 * report a crash, also in builds with NDEBUG. */
#define FUZZ_CHECK(cond)                                                        \
    do {                                                                        \
        if (!(cond))                                                            \
            __builtin_trap();                                                   \
    } while (0)

#endif
