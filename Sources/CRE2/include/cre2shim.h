// A C face for RE2 (Debian's libre2), so Swift can use it without C++ interoperability: compile a pattern, test
// whether it matches anywhere in a text, free it. RE2 matches in time linear in the text, whatever the pattern
// (no backtracking), and its syntax is Go's regexp syntax, which InfluxDB uses for InfluxQL regexes.
#ifndef CRE2SHIM_H
#define CRE2SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cre2shim_regex cre2shim_regex;

/// Compiles `pattern` (UTF-8, `length` bytes). `max_mem` bounds the compiled program and its DFA caches, in bytes.
/// Returns NULL when the pattern is invalid or too large, with RE2's reason in `error` (NUL-terminated, cut to
/// `error_size`).
cre2shim_regex *cre2shim_compile(const char *pattern, size_t length, int64_t max_mem, char *error,
                                 size_t error_size);

/// 1 when the regex matches somewhere in `text` (`length` bytes, UTF-8), else 0 (Go's `regexp.Match`). Safe to call
/// from several threads at once on the same regex.
int cre2shim_match(const cre2shim_regex *regex, const char *text, size_t length);

void cre2shim_free(cre2shim_regex *regex);

#ifdef __cplusplus
}
#endif

#endif
