#include <zlib.h>

// inflateInit2/deflateInit2 are function-like macros, which Swift cannot call.
// windowBits 15 + 32: accept both zlib and gzip framing (auto-detect) when inflating.
static inline int czlib_inflate_init_auto(z_streamp s) { return inflateInit2(s, 15 + 32); }
// windowBits 15 + 16: write gzip framing.
static inline int czlib_deflate_init_gzip(z_streamp s, int level) {
    return deflateInit2(s, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
