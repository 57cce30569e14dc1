#include <zlib.h>

// inflateInit2 is a function-like macro, which Swift cannot call. (Compression is libdeflate's: CDeflate.)
// windowBits 15 + 32: accept both zlib and gzip framing (auto-detect) when inflating.
static inline int czlib_inflate_init_auto(z_streamp s) { return inflateInit2(s, 15 + 32); }
