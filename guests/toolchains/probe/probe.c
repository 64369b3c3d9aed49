// The C toolchain's proof: one function, compiled and linked against
// wasi-libc and clang's wasm32 runtime the way the C ports are, then turned
// into a component with the preview1 adapter.
#include "toolchain.h"

uint32_t exports_sluice_toolchain_probe_probe_answer(void) {
    return 42;
}
