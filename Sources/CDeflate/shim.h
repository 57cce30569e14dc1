// libdeflate (Debian's libdeflate-dev): whole-buffer DEFLATE/gzip compression, about 1.7× zlib's speed at its
// fastest level on line protocol, with smaller output (docs/PERFORMANCE.md, Forwarding).
#include <libdeflate.h>
