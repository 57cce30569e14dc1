#include "cre2shim.h"

#include <re2/re2.h>

#include <cstring>

struct cre2shim_regex {
    re2::RE2 re;
    cre2shim_regex(const re2::StringPiece &pattern, const re2::RE2::Options &options) : re(pattern, options) {}
};

extern "C" cre2shim_regex *cre2shim_compile(const char *pattern, size_t length, int64_t max_mem, char *error,
                                            size_t error_size) {
    re2::RE2::Options options;
    options.set_log_errors(false);  // RE2 would write to stderr; the caller reports the error
    options.set_max_mem(max_mem);
    cre2shim_regex *regex = new (std::nothrow) cre2shim_regex(re2::StringPiece(pattern, length), options);
    if (regex == nullptr) {
        if (error_size > 0) std::strncpy(error, "out of memory", error_size - 1), error[error_size - 1] = 0;
        return nullptr;
    }
    if (!regex->re.ok()) {
        if (error_size > 0) {
            std::strncpy(error, regex->re.error().c_str(), error_size - 1);
            error[error_size - 1] = 0;
        }
        delete regex;
        return nullptr;
    }
    return regex;
}

extern "C" int cre2shim_match(const cre2shim_regex *regex, const char *text, size_t length) {
    return re2::RE2::PartialMatch(re2::StringPiece(text, length), regex->re) ? 1 : 0;
}

extern "C" void cre2shim_free(cre2shim_regex *regex) { delete regex; }
