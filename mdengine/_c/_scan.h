/* A strict, allocation-free JSON scanner for the C fast paths (_lane.c, depth snapshots in _speedups.c).
 *
 * It reads exchange frames of a known shape in place: strings come back as spans of the input, integers as
 * int64, and any value it is not asked about is skipped. It never raises: every function returns 0 when the
 * input is not what it expects (an escape inside a wanted string, a float where an integer belongs, the end of
 * the input), and the caller then hands the frame to the Python path, whose parser reports the error. So the
 * scanner only has to be right about what it accepts, never about how it refuses.
 */
#ifndef MDENGINE_SCAN_H
#define MDENGINE_SCAN_H

#include <stdint.h>
#include <string.h>

typedef struct {
    const char *p, *end;
} scan_t;

typedef struct {
    const char *s;
    Py_ssize_t n;
} span_t;

static inline void
scan_ws(scan_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
        c->p++;
}

/* the next non-blank byte is `ch`: consume it */
static inline int
scan_byte(scan_t *c, char ch)
{
    scan_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* the next non-blank byte, not consumed (0 at the end) */
static inline char
scan_peek(scan_t *c)
{
    scan_ws(c);
    return c->p < c->end ? *c->p : 0;
}

/* a string orjson reads as these very bytes (no escape, no control byte, ASCII, so valid UTF-8), as a span of the
   input (quotes excluded) */
static inline int
scan_str(scan_t *c, span_t *out)
{
    if (!scan_byte(c, '"'))
        return 0;
    const char *s = c->p;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            out->s = s;
            out->n = c->p - s;
            c->p++;
            return 1;
        }
        if (ch == '\\' || ch < 0x20 || ch >= 0x80)
            return 0;
        c->p++;
    }
    return 0;
}

/* a JSON integer that fits int64 (no fraction, no exponent) */
static inline int
scan_i64(scan_t *c, int64_t *out)
{
    scan_ws(c);
    const char *p = c->p;
    int neg = 0;
    if (p < c->end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= c->end || *p < '0' || *p > '9' || (*p == '0' && p + 1 < c->end && p[1] >= '0' && p[1] <= '9'))
        return 0;
    uint64_t v = 0;
    while (p < c->end && *p >= '0' && *p <= '9') {
        if (v > (UINT64_MAX - 9) / 10)
            return 0;
        v = v * 10 + (uint64_t)(*p++ - '0');
    }
    if (p < c->end && (*p == '.' || *p == 'e' || *p == 'E'))
        return 0;
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg)
        return 0;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    c->p = p;
    return 1;
}

/* a span of ASCII digits as a non-negative int64 ("1652400000000" in a string, as OKX sends times) */
static inline int
span_i64(span_t s, int64_t *out)
{
    if (s.n < 1 || s.n > 18)
        return 0;
    int64_t v = 0;
    for (Py_ssize_t i = 0; i < s.n; i++) {
        if (s.s[i] < '0' || s.s[i] > '9')
            return 0;
        v = v * 10 + (s.s[i] - '0');
    }
    *out = v;
    return 1;
}

/* true / false */
static inline int
scan_bool(scan_t *c, int *out)
{
    scan_ws(c);
    if (c->end - c->p >= 4 && memcmp(c->p, "true", 4) == 0) {
        c->p += 4;
        *out = 1;
        return 1;
    }
    if (c->end - c->p >= 5 && memcmp(c->p, "false", 5) == 0) {
        c->p += 5;
        *out = 0;
        return 1;
    }
    return 0;
}

/* Object iteration:  if (!scan_byte(c, '{')) fail;  int more = scan_obj_first(c);
 *                    while (more > 0) { span_t key; if (!scan_key(c, &key)) fail; ...value...; more = scan_obj_next(c); }
 *                    if (more < 0) fail;
 * scan_obj_first / scan_obj_next return 1 when a member follows, 0 at the closing brace, -1 on bad input. */
static inline int
scan_obj_first(scan_t *c)
{
    return scan_byte(c, '}') ? 0 : 1;
}

static inline int
scan_obj_next(scan_t *c)
{
    if (scan_byte(c, ','))
        return 1;
    return scan_byte(c, '}') ? 0 : -1;
}

/* a member's key and its colon */
static inline int
scan_key(scan_t *c, span_t *key)
{
    return scan_str(c, key) && scan_byte(c, ':');
}

/* the same for arrays: scan_arr_first after '[' and scan_arr_next after each item */
static inline int
scan_arr_first(scan_t *c)
{
    return scan_byte(c, ']') ? 0 : 1;
}

static inline int
scan_arr_next(scan_t *c)
{
    if (scan_byte(c, ','))
        return 1;
    return scan_byte(c, ']') ? 0 : -1;
}

/* a JSON number without exponent and of at most 100 digits: orjson takes it (never an infinity) */
static inline int
scan_number(scan_t *c)
{
    const char *p = c->p, *end = c->end;
    int digits = 0;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++, digits++;
    else
        while (p < end && *p >= '0' && *p <= '9')
            p++, digits++;
    if (!digits)
        return 0;
    if (p < end && *p == '.') {
        const char *f = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == f)
            return 0;
        digits += (int)(p - f);
    }
    if (digits > 100 || (p < end && (*p == 'e' || *p == 'E')))
        return 0;
    c->p = p;
    return 1;
}

/* any value orjson accepts, strictly: what is not JSON must reach the Python path, whose parser reports it;
   nesting is bounded so hostile input cannot recurse deeply */
static int
scan_skip_depth(scan_t *c, int depth)
{
    span_t s;
    char ch = scan_peek(c);
    if (depth > 64)
        return 0;
    if (ch == '"')
        return scan_str(c, &s);
    if (ch == '{' || ch == '[') {
        c->p++;
        int more = ch == '{' ? scan_obj_first(c) : scan_arr_first(c);
        while (more > 0) {
            if (ch == '{' && (!scan_str(c, &s) || !scan_byte(c, ':')))
                return 0;
            if (!scan_skip_depth(c, depth + 1))
                return 0;
            more = ch == '{' ? scan_obj_next(c) : scan_arr_next(c);
        }
        return more == 0;
    }
    int b;
    if (scan_bool(c, &b))
        return 1;
    if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) {
        c->p += 4;
        return 1;
    }
    return scan_number(c);
}

static inline int
scan_skip(scan_t *c)
{
    return scan_skip_depth(c, 0);
}

static inline int
span_is(span_t s, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)s.n == n && memcmp(s.s, lit, n) == 0;
}

/* the input is only blanks from here on */
static inline int
scan_done(scan_t *c)
{
    scan_ws(c);
    return c->p == c->end;
}

/* Exact powers of ten: each is a double, so mantissa / 10^k below is one correctly rounded operation. */
static const double pow10_exact[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* "[-+]digits[.digits]" with at most 2^53 as the digits' integer and at most 22 decimals: the value is
   mantissa / 10^decimals, both exact doubles, so one division gives the correctly rounded result, the one
   strtod and float() give (Clinger's fast path). Returns 0 when the string is not of that form. */
static inline int
plain_decimal(const char *p, Py_ssize_t n, double *out)
{
    Py_ssize_t i = 0;
    int neg = 0, digits = 0, decimals = -1;
    uint64_t mant = 0;
    if (n && (p[0] == '-' || p[0] == '+')) {
        neg = p[0] == '-';
        i = 1;
    }
    for (; i < n; i++) {
        char c = p[i];
        if (c == '.' && decimals < 0) {
            decimals = 0;
            continue;
        }
        if (c < '0' || c > '9')
            return 0;
        if (mant > (UINT64_C(1) << 53) / 10)
            return 0;
        mant = mant * 10 + (uint64_t)(c - '0');
        digits++;
        if (decimals >= 0)
            decimals++;
    }
    if (!digits || mant > (UINT64_C(1) << 53) || decimals > 22)
        return 0;
    double v = decimals > 0 ? (double)mant / pow10_exact[decimals] : (double)mant;
    *out = neg ? -v : v;
    return 1;
}

/* mdengine.limits' rule: a price in (0, PRICE_MAX], a quantity in [0, QTY_MAX] (NaN fails every comparison). The
   bounds are that module's, read when _speedups loads (load_limits); until then they are 0 and refuse everything. */
static double limits_price_max, limits_qty_max;

static inline int
sane_numbers(double p, double q)
{
    return p > 0.0 && p <= limits_price_max && q >= 0.0 && q <= limits_qty_max;
}

/* one book level as sent: ["price", "qty", ...more items, skipped], both plain decimals */
typedef struct {
    span_t px, qty;
    double p, q;
} level_t;

/* a growable array of levels (PyMem), reused from frame to frame by its owner */
typedef struct {
    level_t *v;
    Py_ssize_t n, cap;
} levels_t;

/* 8 ASCII digits, first one in the lowest byte: are they all digits, and their value (SWAR: pairs, quads) */
static inline int
scan_eight(uint64_t v, uint64_t *out)
{
    const uint64_t hi = UINT64_C(0xF0F0F0F0F0F0F0F0), zeros = UINT64_C(0x3030303030303030);
    if ((v & hi) != zeros || ((v + UINT64_C(0x0606060606060606)) & hi) != zeros)
        return 0;
    v -= zeros;
    v = (v * 10 + (v >> 8)) & UINT64_C(0x00FF00FF00FF00FF);
    v = (v * 100 + (v >> 16)) & UINT64_C(0x0000FFFF0000FFFF);
    *out = (v & 0xFFFFFFFFu) * 10000 + (v >> 32);
    return 1;
}

/* a level's "price" or "qty": scan_str and plain_decimal in one pass, eight digits at a time where it can.
 * The same Clinger fast path (digits as an integer <= 2^53, <= 22 decimals, one division), so the same double
 * as float(); it refuses what plain_decimal refuses, and also more than 19 digits. */
static inline int
scan_decimal(scan_t *c, span_t *sp, double *out)
{
    if (!scan_byte(c, '"'))
        return 0;
    const char *p = c->p, *end = c->end, *s = p;
    int neg = 0, digits = 0, decimals = -1;
    uint64_t mant = 0, eight;
    if (p < end && (*p == '-' || *p == '+'))
        neg = *p++ == '-';
    for (;;) {
        if (digits <= 11 && end - p >= 8) {  /* 11 + 8 digits stay below 2^64 */
            uint64_t v;
            memcpy(&v, p, 8);
            if (scan_eight(v, &eight)) {
                mant = mant * 100000000 + eight;
                digits += 8;
                decimals += decimals >= 0 ? 8 : 0;
                p += 8;
                continue;
            }
        }
        if (p >= end)
            return 0;
        char ch = *p++;
        if (ch >= '0' && ch <= '9') {
            if (digits >= 19)
                return 0;
            mant = mant * 10 + (uint64_t)(ch - '0');
            digits++;
            decimals += decimals >= 0;
        }
        else if (ch == '.' && decimals < 0)
            decimals = 0;
        else if (ch == '"')
            break;
        else
            return 0;
    }
    if (!digits || mant > (UINT64_C(1) << 53) || decimals > 22)
        return 0;
    double v = decimals > 0 ? (double)mant / pow10_exact[decimals] : (double)mant;
    *out = neg ? -v : v;
    sp->s = s;
    sp->n = p - 1 - s;
    c->p = p;
    return 1;
}

/* [["px","qty",...],...] into `out` (emptied first): extra items skipped; 0 when a price or quantity is not a plain
   decimal string or breaks the limits (sane_numbers): its reader then leaves the whole text to the Python path */
static inline int
scan_levels(scan_t *c, levels_t *out)
{
    out->n = 0;
    if (!scan_byte(c, '['))
        return 0;
    int more = scan_arr_first(c);
    while (more > 0) {
        if (out->n == out->cap) {
            Py_ssize_t cap = out->cap ? 2 * out->cap : 1024;
            level_t *v = PyMem_Realloc(out->v, cap * sizeof(level_t));
            if (v == NULL)
                return 0;
            out->v = v;
            out->cap = cap;
        }
        level_t *lv = &out->v[out->n];
        if (!scan_byte(c, '[') || !scan_decimal(c, &lv->px, &lv->p) || !scan_byte(c, ',') ||
            !scan_decimal(c, &lv->qty, &lv->q) || !sane_numbers(lv->p, lv->q))
            return 0;
        int item = scan_arr_next(c);
        while (item > 0) {
            if (!scan_skip_depth(c, 2))
                return 0;
            item = scan_arr_next(c);
        }
        if (item < 0)
            return 0;
        out->n++;
        more = scan_arr_next(c);
    }
    return more == 0;
}

#endif
