/* reader.c: read an mdengine segment from C, using nothing but docs/layout.md.
 *
 * Plain C11 plus POSIX (shm_open, mmap, clock_gettime); no other dependency.
 * Build:  cc -std=c11 -O2 -Wall -Wextra -Werror -o mde-reader examples/reader.c   (glibc < 2.34: add -lrt)
 *
 *   mde-reader lookup NS EXCHANGE SYMBOL [MARKET]      the directory entry SYMBOL names
 *   mde-reader watch  NS EXCHANGE SYMBOL [MARKET] [-d DEPTH] [-n BOOKS] [-t TRADES] [-s SECONDS] [-e]
 *       every new book it sees (up to DEPTH levels) and every new trade, until BOOKS books and TRADES
 *       trades were printed or SECONDS passed; -e starts the trades at the oldest one in the ring
 *   mde-reader bench  NS EXCHANGE SYMBOL [MARKET] [-d DEPTH] [-n READS]
 *       time READS consistent book reads, each between two clock_gettime calls (timer included)
 *   mde-reader perp   NS EXCHANGE SYMBOL [MARKET]      the perpetual's perp record (layout 1.4), read once
 *
 * Output is JSON lines. Exit status: 0 ok, 1 usage, 2 unknown or ambiguous symbol (or no perp record for perp),
 * 3 bad segment.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* docs/layout.md, "Segment header" */
#define MAGIC 0x00314D485345444DULL /* "MDESHM1\0" */
#define LAYOUT_MAJOR 1u
#define OFF_MAGIC 0
#define OFF_MAJOR 8
#define OFF_MINOR 12
#define OFF_SEGMENT_SIZE 16
#define OFF_MAX_SYMBOLS 24
#define OFF_BOOK_CAPACITY 28
#define OFF_TRADE_CAPACITY 32
#define OFF_SLOT_SIZE 36
#define OFF_SLOTS_OFFSET 40
#define OFF_DIRECTORY_OFFSET 44
#define OFF_GENERATION 144
#define OFF_DIRECTORY_COUNT 256
#define OFF_DIRECTORY_VERSION 264
#define OFF_PERP_AREA 288 /* 1.4 */
#define OFF_PERP_SLOT_SIZE 292
#define OFF_PERP_GROUP_STALE_MS 300 /* 1.6: 4 x uint32, mark, index, funding, open interest; 0: no bound */
#define OFF_LIQUIDATION_CAPACITY 296
#define HEADER_LENGTH 512
/* "Directory", "Slot", "Book copy", "Reading trades: the ring" */
#define DIR_ENTRY_LENGTH 128
#define SLOT_STATE_ACTIVE 1u
#define KIND_SPOT 0u
#define SLOT_BOOK_COPIES 192
#define BOOK_HEADER_LENGTH 64
#define LEVEL_LENGTH 32
#define RING_TAIL_INTENT 0
#define RING_TAIL 64
#define RING_HEADER_LENGTH 128
#define TRADE_RECORD_LENGTH 64
/* "Perp area (1.4)" */
#define PERP_COPY0 64
#define PERP_COPY1 192
#define PERP_RECORDS 448
#define PERP_RECORD_LENGTH 128
#define KIND_LINEAR 1u
#define KIND_INVERSE 2u
#define RETRY_LIMIT 100000
#define MAX_DEPTH 5000

#define ALIGN64(n) (((n) + 63u) & ~(uint64_t)63u)

typedef struct {
    uint32_t state, kind;
    char market[16], native[32], unified[40];
    double tick_size, lot_size, contract_value;
    int64_t added_ns;
} dir_entry;
typedef struct {
    int64_t update_id, exch_ts_ns, recv_ts_ns, pub_ts_ns;
    uint32_t n_bids, n_asks, state, flags;
    int64_t generation, version;
} book_header;
typedef struct { double bid_px, bid_qty, ask_px, ask_qty; } level;
typedef struct {
    int64_t exch_ts_ns, recv_ts_ns;
    double price, qty;
    int64_t trade_id;
    int8_t side;
    uint8_t flags, reserved0[6];
    int64_t index;
    uint8_t reserved1[8];
} trade;
typedef struct {
    double mark_price, index_price, funding_rate, next_funding_rate;
    int64_t next_funding_ns;
    double open_interest;
    int64_t exch_ts_ns, recv_ts_ns, pub_ts_ns;
    uint32_t state, reserved0;
    int64_t generation, version;
    int64_t group_recv_ns[4]; /* 1.6 (padding before): mark, index, funding, open interest receive times */
} perp_record;
_Static_assert(sizeof(perp_record) == PERP_RECORD_LENGTH, "perp record layout");
_Static_assert(sizeof(dir_entry) == DIR_ENTRY_LENGTH, "directory entry layout");
_Static_assert(sizeof(book_header) == BOOK_HEADER_LENGTH && sizeof(level) == LEVEL_LENGTH, "book layout");
_Static_assert(sizeof(trade) == TRADE_RECORD_LENGTH, "trade record layout");

typedef struct {
    const uint8_t *base;
    uint64_t size, slots_offset, slot_size, copy0, copy1, ring, perp_area, perp_slot_size;
    uint32_t max_symbols, book_capacity, trade_capacity, minor;
} segment;

/* Words the writer may change are read with atomic loads: the polled counters with acquire, everything
 * else (the bytes of a book copy, a trade record, a directory entry) with relaxed 8-byte loads, which are
 * plain movs on x86-64 and ARM64 but are not a data race in C11. The copy is trusted only after the
 * counter it is checked against is re-read behind an acquire fence. */
static uint64_t load_acquire(const uint8_t *p) {
    return atomic_load_explicit((const _Atomic uint64_t *)(const void *)p, memory_order_acquire);
}
static uint64_t load_relaxed(const uint8_t *p) {
    return atomic_load_explicit((const _Atomic uint64_t *)(const void *)p, memory_order_relaxed);
}
static uint32_t load_u32(const uint8_t *p) {
    return atomic_load_explicit((const _Atomic uint32_t *)(const void *)p, memory_order_relaxed);
}
static void copy_words(void *dst, const uint8_t *src, size_t bytes) {
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t w = load_relaxed(src + i);
        memcpy((uint8_t *)dst + i, &w, 8);
    }
}

static int fail(int status, const char *what) {
    printf("{\"error\":\"%s\"}\n", what);
    return status;
}

/* Attach read-only and check the header before trusting any offset in it. */
static int attach(segment *seg, const char *ns, const char *exchange) {
    char name[64];
    for (const char *part = ns; part; part = part == ns ? exchange : NULL) {
        size_t n = strlen(part);
        if (n < 1 || n > 12 || strspn(part, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
            return fail(1, "namespace and exchange are 1-12 characters of a-z, 0-9 or _");
    }
    snprintf(name, sizeof name, "/mde-%s-%s", ns, exchange);
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0) return fail(3, "no such segment: is an engine running in this namespace?");
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < HEADER_LENGTH) { close(fd); return fail(3, "segment too small"); }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return fail(3, "mmap failed");
    const uint8_t *b = map;
    /* the creator writes the magic last: an acquire load of it makes the identity words visible */
    if (load_acquire(b + OFF_MAGIC) != MAGIC) return fail(3, "bad magic: not a segment, or not initialised yet");
    if (load_u32(b + OFF_MAJOR) != LAYOUT_MAJOR) return fail(3, "unsupported layout major version");
    seg->base = b;
    seg->size = load_relaxed(b + OFF_SEGMENT_SIZE);
    seg->minor = load_u32(b + OFF_MINOR); /* informational: each writer stores its own; re-read to rely on it */
    seg->max_symbols = load_u32(b + OFF_MAX_SYMBOLS);
    seg->book_capacity = load_u32(b + OFF_BOOK_CAPACITY);
    seg->trade_capacity = load_u32(b + OFF_TRADE_CAPACITY);
    seg->slot_size = load_u32(b + OFF_SLOT_SIZE);
    seg->slots_offset = load_u32(b + OFF_SLOTS_OFFSET);
    uint64_t copy_length = BOOK_HEADER_LENGTH + (uint64_t)seg->book_capacity * LEVEL_LENGTH;
    seg->copy0 = SLOT_BOOK_COPIES;
    seg->copy1 = seg->copy0 + ALIGN64(copy_length);
    seg->ring = seg->copy1 + ALIGN64(copy_length);
    uint64_t tc = seg->trade_capacity;
    if (seg->max_symbols < 1 || seg->max_symbols > 4096 || seg->book_capacity < 1 || seg->book_capacity > MAX_DEPTH
        || tc < 2 || tc > (1u << 20) || (tc & (tc - 1)) || load_u32(b + OFF_DIRECTORY_OFFSET) != HEADER_LENGTH
        || seg->slots_offset != ALIGN64(HEADER_LENGTH + (uint64_t)seg->max_symbols * DIR_ENTRY_LENGTH)
        || seg->slot_size != ALIGN64(seg->ring + RING_HEADER_LENGTH + tc * TRADE_RECORD_LENGTH)
        || seg->slots_offset + seg->max_symbols * seg->slot_size > seg->size || seg->size > (uint64_t)st.st_size)
        return fail(3, "inconsistent header geometry");
    /* the perp area (1.4): absent (0) in older segments; ignored unless its words are consistent */
    uint64_t perp = load_u32(b + OFF_PERP_AREA), perp_slot = load_u32(b + OFF_PERP_SLOT_SIZE);
    uint64_t lc = load_u32(b + OFF_LIQUIDATION_CAPACITY);
    int sane = perp && lc >= 2 && lc <= (1u << 16) && !(lc & (lc - 1))
               && perp_slot == ALIGN64(PERP_RECORDS + lc * TRADE_RECORD_LENGTH)
               && perp + seg->max_symbols * perp_slot <= seg->size;
    seg->perp_area = sane ? perp : 0;
    seg->perp_slot_size = sane ? perp_slot : 0;
    return 0;
}

static const uint8_t *slot_base(const segment *seg, int slot) {
    return seg->base + seg->slots_offset + (uint64_t)slot * seg->slot_size;
}

/* ---------------------------------------------------------------- directory lookup (docs: "Finding a symbol") */
static int text_eq(const char *field, size_t size, const char *s, int fold) {
    size_t n = strnlen(field, size);
    if (strlen(s) != n) return 0;
    for (size_t i = 0; i < n; i++) {
        char a = field[i], c = s[i];
        if (fold && a >= 'a' && a <= 'z') a = (char)(a - 32);
        if (fold && c >= 'a' && c <= 'z') c = (char)(c - 32);
        if (a != c) return 0;
    }
    return 1;
}

/* Copy entries [0, count) so that no directory change overlapped the copy, then apply the rule.
 * Returns the slot, -1 if nothing matches, -2 if a native id names several symbols, -3 if the directory
 * changed during every copy. */
static int lookup(const segment *seg, const char *symbol, const char *market, dir_entry *out) {
    const uint8_t *dir = seg->base + HEADER_LENGTH;
    dir_entry *e = malloc((size_t)seg->max_symbols * sizeof *e);
    uint64_t count = 0;
    int stable = 0;
    if (!e) return -1;
    for (int attempt = 0; attempt < RETRY_LIMIT && !stable; attempt++) {
        uint64_t version = load_acquire(seg->base + OFF_DIRECTORY_VERSION);
        if (version & 1) continue; /* a change is under way (the directory's seqlock, 1.3) */
        uint64_t raw = load_acquire(seg->base + OFF_DIRECTORY_COUNT);
        count = (int64_t)raw < 0 ? 0 : raw > seg->max_symbols ? seg->max_symbols : raw;
        copy_words(e, dir, count * DIR_ENTRY_LENGTH);
        atomic_thread_fence(memory_order_acquire);
        stable = load_relaxed(seg->base + OFF_DIRECTORY_VERSION) == version;
    }
    int best = stable ? -1 : -3, best_rank = 8;
    for (uint64_t i = 0; i < count; i++) {
        const dir_entry *x = &e[i];
        if (!(text_eq(x->unified, 40, symbol, 1) || text_eq(x->native, 32, symbol, 1))) continue;
        if (market && !text_eq(x->market, 16, market, 1)) continue;
        int rank = !text_eq(x->unified, 40, symbol, 1) * 4 + (x->state != SLOT_STATE_ACTIVE) * 2
                   + (x->kind != KIND_SPOT);
        if (rank < best_rank) best = (int)i, best_rank = rank; /* ties: the lowest slot */
    }
    if (best >= 0 && best_rank >= 4) { /* matched by native id only: it must name one active symbol */
        for (uint64_t i = 0; i < count; i++) {
            const dir_entry *x = &e[i];
            if (x->state == SLOT_STATE_ACTIVE && x->kind == e[best].kind && text_eq(x->native, 32, symbol, 1)
                && (!market || text_eq(x->market, 16, market, 1))
                && strncmp(x->unified, e[best].unified, 40) != 0) best = -2;
            if (best == -2) break;
        }
    }
    if (best >= 0) *out = e[best];
    free(e);
    return best;
}

/* ---------------------------------------------------------------- the book latch (docs: "Reading a book") */
typedef struct { book_header h; level levels[MAX_DEPTH]; } book;

/* A consistent copy of the top `depth` levels; returns the retries it took, or -1 if every attempt raced. */
static long read_book(const segment *seg, const uint8_t *slot, uint32_t depth, book *out) {
    const uint8_t *seq = slot; /* SLOT_BOOK_SEQ_OFFSET = 0 */
    size_t length = BOOK_HEADER_LENGTH + (size_t)depth * LEVEL_LENGTH;
    for (long attempt = 0; attempt < RETRY_LIMIT; attempt++) {
        uint64_t s = load_acquire(seq);
        copy_words(out, slot + (s & 1 ? seg->copy1 : seg->copy0), length);
        atomic_thread_fence(memory_order_acquire);
        if (load_relaxed(seq) == s) { /* only now may the copy be interpreted */
            if (out->h.n_bids > depth) out->h.n_bids = depth;
            if (out->h.n_asks > depth) out->h.n_asks = depth;
            return attempt;
        }
    }
    return -1;
}

/* A consistent copy of a perp record through its latch (the books' protocol on its own counter); -1 if every
 * attempt raced. */
static long read_perp(const segment *seg, int slot, perp_record *out) {
    const uint8_t *p = seg->base + seg->perp_area + (uint64_t)slot * seg->perp_slot_size; /* PERP_SEQ = 0 */
    for (long attempt = 0; attempt < RETRY_LIMIT; attempt++) {
        uint64_t s = load_acquire(p);
        copy_words(out, p + (s & 1 ? PERP_COPY1 : PERP_COPY0), PERP_RECORD_LENGTH);
        atomic_thread_fence(memory_order_acquire);
        if (load_relaxed(p) == s) return attempt;
    }
    return -1;
}

/* ---------------------------------------------------------------- the trade ring (docs: "Reading trades") */
typedef struct { const uint8_t *ring; int64_t capacity, cursor, lost; } trade_cursor;

static void cursor_open(trade_cursor *c, const segment *seg, const uint8_t *slot, int earliest) {
    c->ring = slot + seg->ring;
    c->capacity = seg->trade_capacity;
    int64_t tail = (int64_t)load_acquire(c->ring + RING_TAIL);
    c->cursor = earliest ? (tail > c->capacity ? tail - c->capacity : 0) : tail;
    c->lost = 0;
}

/* Up to `max` trades after the cursor, oldest first, into out; *lost counts those the writer overwrote. */
static int64_t poll_trades(trade_cursor *c, trade *out, int64_t max, int64_t *lost) {
    int64_t tail = (int64_t)load_acquire(c->ring + RING_TAIL), cap = c->capacity;
    *lost = 0;
    if (tail <= c->cursor) {
        if (tail < c->cursor) c->cursor = tail; /* a ring that went backwards: follow it */
        return 0;
    }
    int64_t start = tail - cap > c->cursor ? tail - cap : c->cursor, n = tail - start;
    if (n > max) n = max;
    const uint8_t *records = c->ring + RING_HEADER_LENGTH;
    int64_t first = start & (cap - 1), k1 = n < cap - first ? n : cap - first;
    copy_words(out, records + first * TRADE_RECORD_LENGTH, (size_t)k1 * TRADE_RECORD_LENGTH);
    copy_words(out + k1, records, (size_t)(n - k1) * TRADE_RECORD_LENGTH);
    atomic_thread_fence(memory_order_acquire);
    int64_t oldest_valid = (int64_t)load_relaxed(c->ring + RING_TAIL_INTENT) - cap, kept = 0;
    for (int64_t j = 0; j < n; j++) { /* lapped, or cut by a writer killed mid-batch: lost, not returned */
        if (start + j < oldest_valid || out[j].index != start + j) continue;
        out[kept++] = out[j];
    }
    *lost = start - c->cursor + n - kept;
    c->lost += *lost;
    c->cursor = start + n;
    return kept;
}

/* ---------------------------------------------------------------- output */
static void put_double(double x) {
    if (x != x) fputs("NaN", stdout);
    else if (x > 1.7976931348623157e308 || x < -1.7976931348623157e308) fputs(x > 0 ? "Infinity" : "-Infinity", stdout);
    else printf("%.17g", x);
}
static void put_text(const char *key, const char *s, size_t size) {
    printf("\"%s\":\"", key);
    for (size_t i = 0; i < size && s[i]; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 32 || ch > 126) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}
static void print_book(const book *b) {
    const book_header *h = &b->h;
    printf("{\"book\":{\"update_id\":%lld,\"version\":%lld,\"generation\":%lld,\"state\":%u,\"flags\":%u,"
           "\"n_bids\":%u,\"n_asks\":%u,\"bids\":[", (long long)h->update_id, (long long)h->version,
           (long long)h->generation, h->state, h->flags, h->n_bids, h->n_asks);
    for (int side = 0; side < 2; side++) {
        uint32_t n = side ? h->n_asks : h->n_bids;
        for (uint32_t k = 0; k < n; k++) {
            const level *lv = &b->levels[k];
            printf(k ? ",[" : "[");
            put_double(side ? lv->ask_px : lv->bid_px);
            putchar(',');
            put_double(side ? lv->ask_qty : lv->bid_qty);
            putchar(']');
        }
        printf(side ? "]}}\n" : "],\"asks\":[");
    }
}
static void print_trade(const trade *t) {
    printf("{\"trade\":{\"index\":%lld,\"exch_ts_ns\":%lld,\"recv_ts_ns\":%lld,\"price\":", (long long)t->index,
           (long long)t->exch_ts_ns, (long long)t->recv_ts_ns);
    put_double(t->price);
    printf(",\"qty\":");
    put_double(t->qty);
    printf(",\"trade_id\":%lld,\"side\":%d,\"flags\":%u}}\n", (long long)t->trade_id, t->side, t->flags);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static int by_value(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- modes */
static int watch(const segment *seg, int slot, uint32_t depth, long books, long trades, double seconds, int earliest) {
    static book b;
    static trade t[4096];
    const uint8_t *base = slot_base(seg, slot);
    trade_cursor c;
    cursor_open(&c, seg, base, earliest);
    printf("{\"ready\":{\"slot\":%d,\"trade_cursor\":%lld}}\n", slot, (long long)c.cursor);
    fflush(stdout);
    long printed_books = 0, printed_trades = 0, retries = 0;
    int64_t last_version = -1, last_seq = -1, end = now_ns() + (int64_t)(seconds * 1e9), lost;
    while ((printed_books < books || printed_trades < trades) && now_ns() < end) {
        int64_t s = (int64_t)load_acquire(base);
        if (s != last_seq && printed_books < books) { /* the latch counter moved: there may be a new book */
            long r = read_book(seg, base, depth, &b);
            if (r < 0) return fail(3, "the book changed during every read");
            retries += r;
            last_seq = s;
            if (b.h.version != last_version) print_book(&b), printed_books++, last_version = b.h.version;
        }
        if (printed_trades >= trades) continue;
        int64_t n = poll_trades(&c, t, trades - printed_trades < 4096 ? trades - printed_trades : 4096, &lost);
        if (lost) printf("{\"lost\":%lld,\"cursor\":%lld}\n", (long long)lost, (long long)c.cursor);
        for (int64_t k = 0; k < n; k++) print_trade(&t[k]);
        printed_trades += (long)n;
    }
    printf("{\"done\":{\"books\":%ld,\"trades\":%ld,\"lost\":%lld,\"trade_cursor\":%lld,\"retries\":%ld}}\n",
           printed_books, printed_trades, (long long)c.lost, (long long)c.cursor, retries);
    return 0;
}

static int bench(const segment *seg, int slot, uint32_t depth, long reads) {
    static book b;
    int64_t *lat = malloc((size_t)reads * sizeof *lat), timer[1000];
    if (!lat) return fail(1, "out of memory");
    const uint8_t *base = slot_base(seg, slot);
    long retries = 0;
    for (int i = 0; i < 1000; i++) { int64_t t0 = now_ns(); timer[i] = now_ns() - t0; }
    for (long i = 0; i < reads; i++) {
        int64_t t0 = now_ns();
        long r = read_book(seg, base, depth, &b);
        lat[i] = now_ns() - t0;
        if (r < 0) return fail(3, "the book changed during every read");
        retries += r;
    }
    qsort(lat, (size_t)reads, sizeof *lat, by_value);
    qsort(timer, 1000, sizeof *timer, by_value);
    printf("{\"bench\":{\"reads\":%ld,\"depth\":%u,\"p50_ns\":%lld,\"p99_ns\":%lld,\"p999_ns\":%lld,\"max_ns\":%lld,"
           "\"retries\":%ld,\"timer_p50_ns\":%lld,\"last_update_id\":%lld}}\n", reads, depth,
           (long long)lat[reads / 2], (long long)lat[reads * 99 / 100], (long long)lat[reads * 999 / 1000],
           (long long)lat[reads - 1], retries, (long long)timer[500], (long long)b.h.update_id);
    free(lat);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fputs("usage: mde-reader lookup|watch|bench|perp NS EXCHANGE SYMBOL [MARKET] [-d DEPTH] [-n N] [-t TRADES] "
              "[-s SECONDS] [-e]\n", stderr);
        return 1;
    }
    const char *mode = argv[1], *market = NULL;
    long depth = 20, n = 1000, trades = 0;
    double seconds = 10;
    int earliest = 0, i = 5;
    if (i < argc && argv[i][0] != '-') market = argv[i++];
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-e")) { earliest = 1; continue; }
        if (i + 1 >= argc) return fail(1, "an option lacks its value");
        const char *v = argv[++i];
        switch (argv[i - 1][1]) {
        case 'd': depth = atol(v); break;
        case 'n': n = atol(v); break;
        case 't': trades = atol(v); break;
        case 's': seconds = atof(v); break;
        default: return fail(1, "unknown option");
        }
    }
    segment seg;
    int status = attach(&seg, argv[2], argv[3]);
    if (status) return status;
    dir_entry e;
    int slot = lookup(&seg, argv[4], market, &e);
    if (slot < 0)
        return fail(2, slot == -2 ? "ambiguous symbol" : slot == -3 ? "the directory kept changing" : "unknown symbol");
    if (depth < 1 || n < 1) return fail(1, "depth and counts must be positive");
    if (depth > seg.book_capacity) depth = seg.book_capacity;
    if (!strcmp(mode, "lookup")) {
        printf("{\"slot\":%d,\"state\":%u,\"kind\":%u,", slot, e.state, e.kind);
        put_text("market", e.market, 16), putchar(','), put_text("native", e.native, 32), putchar(',');
        put_text("unified", e.unified, 40);
        printf(",\"layout\":[%u,%u],\"generation\":%lld}\n", LAYOUT_MAJOR, seg.minor,
               (long long)load_relaxed(seg.base + OFF_GENERATION));
        return 0;
    }
    if (!strcmp(mode, "perp")) {
        if (!seg.perp_area) return fail(2, "no perp record: the segment has no perp area (layout before 1.4)");
        if (e.kind != KIND_LINEAR && e.kind != KIND_INVERSE) return fail(2, "no perp record: not a perpetual");
        perp_record r;
        if (read_perp(&seg, slot, &r) < 0) return fail(3, "the perp record changed during every read");
        printf("{\"perp\":{\"mark_price\":");
        put_double(r.mark_price), printf(",\"index_price\":"), put_double(r.index_price);
        printf(",\"funding_rate\":"), put_double(r.funding_rate), printf(",\"next_funding_rate\":");
        put_double(r.next_funding_rate);
        printf(",\"next_funding_ns\":%lld,\"open_interest\":", (long long)r.next_funding_ns);
        put_double(r.open_interest);
        printf(",\"exch_ts_ns\":%lld,\"recv_ts_ns\":%lld,\"state\":%u,\"version\":%lld", (long long)r.exch_ts_ns,
               (long long)r.recv_ts_ns, r.state, (long long)r.version);
        if (load_u32(seg.base + OFF_MINOR) >= 6) { /* per-group receive times and stale bounds */
            printf(",\"group_recv_ns\":[%lld,%lld,%lld,%lld],\"group_stale_ms\":[", (long long)r.group_recv_ns[0],
                   (long long)r.group_recv_ns[1], (long long)r.group_recv_ns[2], (long long)r.group_recv_ns[3]);
            for (int g = 0; g < 4; g++)
                printf(g ? ",%u" : "%u", load_u32(seg.base + OFF_PERP_GROUP_STALE_MS + 4 * g));
            putchar(']');
        }
        printf("}}\n");
        return 0;
    }
    if (!strcmp(mode, "watch")) status = watch(&seg, slot, (uint32_t)depth, n, trades, seconds, earliest);
    else if (!strcmp(mode, "bench")) status = bench(&seg, slot, (uint32_t)depth, n);
    else status = fail(1, "mode must be lookup, watch, bench or perp");
    fflush(stdout);
    return status;
}
