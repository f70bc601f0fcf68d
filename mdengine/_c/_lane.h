/* The fast lane: a feed's steady-state frames handled in one C call, from the frame's text to the store.
 *
 * Included by _speedups.c (one translation unit: the lane reuses its book and store primitives). Python
 * glue: mdengine/feed/fastlane.py; design and rules: docs/feed.md, "The fast lane".
 *
 * Lane.on_frame(conn, data, recv_ns) stands in front of the adapter's own on_frame. It takes the frames whose
 * outcome is routine (a book update that follows the symbol's last one on a LIVE book, a trade) and does, in
 * C, what the adapter and the Publisher do for them in Python: decode, check the sequence, apply the levels to
 * the same LocalBook lists, set the same attributes, publish the top levels through the same latch, append the
 * trades to the same ring and bump the same counters. Any other frame (acks, snapshots, gaps, duplicates, an
 * unknown stream, a number it does not parse exactly or that breaks mdengine.limits' rule, a symbol not LIVE, an
 * adapter mid-rotation) it declines before changing anything, and the adapter's on_frame handles it as before. A check that fails only after the
 * update was applied (OKX's checksum, a crossed book) is handed to the adapter's own verdict function, which
 * returns the events the Python path would have returned.
 *
 * The lane reads and writes the adapter's objects through their __slots__ (member offsets resolved once,
 * objects of exactly those classes only): that is what keeps one frame near a microsecond. Python names every
 * member, every offset and every sequencing rule when the lane starts (Lane_init: dicts, checked here with errors
 * that name what is missing or wrong); the only numbers compiled in are the layout's record sizes and formats, and
 * the lane refuses to start unless store["layout"] (from mdengine/store/layout.py) says the same.
 */
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030C0000
#define LANE_T_OBJECT_EX Py_T_OBJECT_EX
#else
#define LANE_T_OBJECT_EX T_OBJECT_EX
#endif

enum { LANE_BINANCE = 1, LANE_OKX = 2, LANE_BYBIT = 3, LANE_BITGET = 4 };
#define LANE_ALL ((1 << LANE_BINANCE) | (1 << LANE_OKX) | (1 << LANE_BYBIT) | (1 << LANE_BITGET))
#define LANE_WS ((1 << LANE_OKX) | (1 << LANE_BYBIT) | (1 << LANE_BITGET))

/* the attributes the lane reads or writes, by role; spec["members"][owner][role] names each one's member, and its
   offset is resolved at construction */
enum {
    M_SYM_STATE, M_SYM_BOOK, M_SYM_SEQ, M_SYM_APPLIED, M_SYM_LAST_TRADE, M_SYM_CHANNEL, M_SYM_CHAIN,
    M_BOOK_BIDS, M_BOOK_ASKS, M_BOOK_UPDATE_ID, M_BOOK_EXCH_TS, M_BOOK_WATCH, M_BOOK_DIRTY,
    M_SIDE_KEYS, M_SIDE_QTY, M_SIDE_RAW,
    M_SLOT_PUBLISHED,
    M_COUNT
};
static const char *const lane_owners[4] = {"symbol", "book", "side", "slot"};
static const struct {
    int owner;        /* index into lane_owners and Lane.types */
    const char *role; /* the key in spec["members"][owner] */
    int need;         /* the exchanges (bits 1 << LANE_*) that read it; M_SYM_CHAIN: when there are several chains */
} lane_roles[M_COUNT] = {
    [M_SYM_STATE] = {0, "state", LANE_ALL},
    [M_SYM_BOOK] = {0, "book", LANE_ALL},
    [M_SYM_SEQ] = {0, "seq", LANE_WS},
    [M_SYM_APPLIED] = {0, "applied", 1 << LANE_BINANCE},
    [M_SYM_LAST_TRADE] = {0, "last_trade", 1 << LANE_BINANCE},
    [M_SYM_CHANNEL] = {0, "channel", 1 << LANE_BITGET},
    [M_SYM_CHAIN] = {0, "chain", 0},
    [M_BOOK_BIDS] = {1, "bids", LANE_ALL},
    [M_BOOK_ASKS] = {1, "asks", LANE_ALL},
    [M_BOOK_UPDATE_ID] = {1, "update_id", LANE_ALL},
    [M_BOOK_EXCH_TS] = {1, "exch_ts_ns", LANE_ALL},
    [M_BOOK_WATCH] = {1, "watch_depth", LANE_ALL},
    [M_BOOK_DIRTY] = {1, "top_dirty", LANE_ALL},
    [M_SIDE_KEYS] = {2, "keys", LANE_ALL},
    [M_SIDE_QTY] = {2, "qty", LANE_ALL},
    [M_SIDE_RAW] = {2, "raw", LANE_ALL},
    [M_SLOT_PUBLISHED] = {3, "levels_published", LANE_ALL},
};

/* The layout numbers (LANE_BOOK_HEADER_LENGTH, ...) are defined at the top of _speedups.c, which uses them too. */

/* The sequencing rules the lane implements: mdengine/exchanges/_sequencing.py's ChainKind values. An update with new
   id `id` (and, when sent, its first id and the id before it) follows `last` by the symbol's chain. */
enum { CHAIN_NEXT_ID = 1, CHAIN_PREV_ID = 2 };
#define LANE_MAX_CHAINS 2
typedef struct {
    int kind, same_id_ok, prev_optional;
} chain_t;

static int
chain_follows(const chain_t *r, int64_t last, int64_t id, int has_first, int64_t first, int has_prev, int64_t prev)
{
    if (r == NULL)
        return 0;
    if (r->kind == CHAIN_NEXT_ID)
        return has_first && last < INT64_MAX && first == last + 1 && id > last;
    int linked = has_prev ? prev == last : r->prev_optional;
    return linked && (r->same_id_ok ? id >= last : id > last);
}

typedef struct {
    PyObject *sym, *book, *bids, *asks, *slot_obj, *stage;
    Py_buffer stage_buf;
    Py_ssize_t slot, latch[6], ring[4], mask, book_updates, messages, last_recv, trades;
} target_t;

typedef struct {
    PyObject_HEAD
    int exchange;
    PyObject *adapter, *on_frame_func, *routes, *live, *depth_kind, *trade_kind, *verdict, *target_of;
    PyObject *types[4]; /* symbol, book, side, slot classes (lane_owners) */
    PyObject *chain_objs[LANE_MAX_CHAINS]; /* the adapter's Chain objects, matched by identity (several: by member) */
    chain_t chains[LANE_MAX_CHAINS];
    int n_chains;
    PyObject *targets;  /* dict: sym -> capsule(target_t) */
    PyObject *shm_obj, *meta_obj;
    Py_buffer shm, meta;
    int open;
    Py_ssize_t off[M_COUNT];
    int64_t generation, capacity, depth, state_live, flag_truncated, flag_crossed, side_buy, side_sell, side_unknown;
    Py_ssize_t seg_book_updates, seg_trades;
    levels_t bids, asks;
    unsigned long long handled, declined;
    int last_handled; /* the newest frame was the lane's (the loop's warm-up pass replays only the adapter's) */
} Lane;

static PyObject *str_on_frame;

/* ---------------------------------------------------------------------------------------- slot access */
static Py_ssize_t
member_offset(PyObject *type, const char *name)
{
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "fast lane: %R has no member %s", type, name);
        }
        return -1;
    }
    Py_ssize_t off = -1;
    if (PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == LANE_T_OBJECT_EX && !(m->flags & READONLY))
            off = m->offset;
    }
    if (off < 0)
        PyErr_Format(PyExc_TypeError, "fast lane: %R.%s is not a __slots__ member", type, name);
    Py_DECREF(d);
    return off;
}

/* borrowed; NULL (no exception) when unset */
#define SLOT_GET(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *value /* stolen */)
{
    PyObject **p = (PyObject **)((char *)obj + off);
    PyObject *old = *p;
    *p = value;
    Py_XDECREF(old);
}

static int
slot_i64(PyObject *obj, Py_ssize_t off, int64_t *out)
{
    PyObject *v = SLOT_GET(obj, off);
    if (v == NULL || !PyLong_CheckExact(v))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || (x == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = x;
    return 1;
}

static int
slot_set_i64(PyObject *obj, Py_ssize_t off, int64_t v)
{
    PyObject *o = PyLong_FromLongLong(v);
    if (o == NULL)
        return -1;
    slot_set(obj, off, o);
    return 0;
}

/* ---------------------------------------------------------------------------------------- targets */
static void
target_free(PyObject *capsule)
{
    target_t *t = PyCapsule_GetPointer(capsule, "mdengine.lane.target");
    if (t == NULL)
        return;
    if (t->stage_buf.obj != NULL)
        PyBuffer_Release(&t->stage_buf);
    Py_XDECREF(t->sym);
    Py_XDECREF(t->book);
    Py_XDECREF(t->bids);
    Py_XDECREF(t->asks);
    Py_XDECREF(t->slot_obj);
    Py_XDECREF(t->stage);
    PyMem_Free(t);
}

/* target[name], borrowed; NULL with a clear error when target_of left it out */
static PyObject *
target_item(PyObject *target, const char *name)
{
    PyObject *v = PyDict_GetItemString(target, name);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_KeyError, "fast lane: target_of's dict has no '%s'", name);
    return v;
}

/* the symbol's target (its book's objects and its slot's offsets), made on first use from target_of(sym);
   NULL without an exception when the symbol has no slot (or its objects are not of the lane's classes) */
static target_t *
lane_target(Lane *L, PyObject *sym)
{
    PyObject *cap = PyDict_GetItemWithError(L->targets, sym);
    if (cap != NULL) {
        target_t *t = PyCapsule_GetPointer(cap, "mdengine.lane.target");
        if (t != NULL && SLOT_GET(sym, L->off[M_SYM_BOOK]) == t->book &&
            SLOT_GET(t->book, L->off[M_BOOK_BIDS]) == t->bids && SLOT_GET(t->book, L->off[M_BOOK_ASKS]) == t->asks)
            return t;
        PyErr_Clear();
        if (PyDict_DelItem(L->targets, sym) < 0)
            return NULL;
    }
    else if (PyErr_Occurred())
        return NULL;
    PyObject *book = SLOT_GET(sym, L->off[M_SYM_BOOK]);
    if (book == NULL || Py_TYPE(book) != (PyTypeObject *)L->types[1])
        return NULL;
    PyObject *bids = SLOT_GET(book, L->off[M_BOOK_BIDS]), *asks = SLOT_GET(book, L->off[M_BOOK_ASKS]);
    if (bids == NULL || asks == NULL || Py_TYPE(bids) != (PyTypeObject *)L->types[2] ||
        Py_TYPE(asks) != (PyTypeObject *)L->types[2])
        return NULL;
    PyObject *spec = PyObject_CallOneArg(L->target_of, sym);
    if (spec == NULL || spec == Py_None) {
        Py_XDECREF(spec);
        return NULL;
    }
    target_t *t = PyMem_Calloc(1, sizeof(target_t));
    if (t == NULL) {
        Py_DECREF(spec);
        PyErr_NoMemory();
        return NULL;
    }
    cap = PyCapsule_New(t, "mdengine.lane.target", target_free);
    if (cap == NULL) {
        PyMem_Free(t);
        Py_DECREF(spec);
        return NULL;
    }
    int ok = PyDict_CheckExact(spec);
    PyObject *f = ok ? target_item(spec, "record") : NULL;
    if (f != NULL) {
        t->slot_obj = Py_NewRef(f);
        f = target_item(spec, "stage");
        ok = f != NULL && Py_TYPE(t->slot_obj) == (PyTypeObject *)L->types[3] &&
             PyObject_GetBuffer(f, &t->stage_buf, PyBUF_WRITABLE | PyBUF_SIMPLE) == 0;
        if (ok)
            t->stage = Py_NewRef(f);
    }
    else
        ok = 0;
    if (ok) {
        static const char *const names[] = {"slot", "ring_mask", "book_updates", "messages", "last_recv_ns",
                                            "trades"};
        Py_ssize_t *scalars[] = {&t->slot, &t->mask, &t->book_updates, &t->messages, &t->last_recv, &t->trades};
        for (int i = 0; ok && i < 6; i++) {
            f = target_item(spec, names[i]);
            *scalars[i] = f == NULL ? -1 : PyLong_AsSsize_t(f);
            ok = f != NULL && !(*scalars[i] == -1 && PyErr_Occurred());
        }
        PyObject *latch = ok ? target_item(spec, "latch") : NULL, *ring = ok ? target_item(spec, "ring") : NULL;
        ok = ok && latch != NULL && ring != NULL && read_offsets(latch, t->latch, 6, "fast lane: latch") == 0 &&
             read_offsets(ring, t->ring, 4, "fast lane: ring") == 0;
    }
    if (!ok && !PyErr_Occurred())
        PyErr_SetString(PyExc_TypeError, "fast lane: target_of must return a dict (see fastlane.attach)");
    Py_DECREF(spec);
    if (ok) {
        Py_ssize_t len = L->shm.len, copy = LANE_BOOK_HEADER_LENGTH + L->capacity * LANE_LEVEL_LENGTH;
        for (int i = 0; ok && i < 6; i++)
            ok = t->latch[i] >= 0 && t->latch[i] % 8 == 0 && t->latch[i] + ((i == 1 || i == 2) ? copy : 8) <= len;
        for (int i = 0; ok && i < 4; i++)
            ok = t->ring[i] >= 0 && t->ring[i] % 8 == 0 &&
                 t->ring[i] + (i == 2 ? (t->mask + 1) * LANE_TRADE_RECORD_LENGTH : 8) <= len;
        Py_ssize_t words[] = {t->book_updates, t->messages, t->last_recv, t->trades};
        for (int i = 0; ok && i < 4; i++)
            ok = words[i] >= 0 && words[i] % 8 == 0 && words[i] + 8 <= len;
        ok = ok && t->mask >= 0 && !(t->mask & (t->mask + 1)) && t->slot >= 0 &&
             (t->slot + 1) * LANE_META_WORDS * 8 <= L->meta.len && t->stage_buf.len >= copy;
        if (!ok && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "fast lane: a target's offsets do not fit the segment");
    }
    if (!ok) {
        Py_DECREF(cap);
        return NULL;
    }
    t->sym = Py_NewRef(sym);
    t->book = Py_NewRef(book);
    t->bids = Py_NewRef(bids);
    t->asks = Py_NewRef(asks);
    int rc = PyDict_SetItem(L->targets, sym, cap);
    Py_DECREF(cap);
    return rc < 0 ? NULL : t;
}

/* the symbol's sequencing rule: the only chain, or the one its chain member names (Binance: spot or USDⓈ-M); NULL
   (decline) for a Chain object the spec did not list */
static const chain_t *
lane_chain(Lane *L, PyObject *sym)
{
    if (L->n_chains == 1)
        return &L->chains[0];
    PyObject *c = SLOT_GET(sym, L->off[M_SYM_CHAIN]);
    for (int i = 0; i < L->n_chains; i++)
        if (c == L->chain_objs[i])
            return &L->chains[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------- the book */
/* a side's three lists, if it has them, of one length */
static int
side_lists(Lane *L, PyObject *side, PyObject **keys, PyObject **qtys, PyObject **raws)
{
    *keys = SLOT_GET(side, L->off[M_SIDE_KEYS]);
    *qtys = SLOT_GET(side, L->off[M_SIDE_QTY]);
    *raws = SLOT_GET(side, L->off[M_SIDE_RAW]);
    return *keys != NULL && *qtys != NULL && *raws != NULL && PyList_CheckExact(*keys) && PyList_CheckExact(*qtys) &&
           PyList_CheckExact(*raws) && PyList_GET_SIZE(*keys) == PyList_GET_SIZE(*qtys) &&
           PyList_GET_SIZE(*keys) == PyList_GET_SIZE(*raws);
}

/* BookSide.update for scanned levels (their numbers already parsed): 0 done, -1 error (the side may then be half
   updated: memory errors only, or keys that are not floats) */
static int
lane_side_update(PyObject *keys, PyObject *qtys, PyObject *raws, int bid, const levels_t *lv, Py_ssize_t watch,
                 int *touched)
{
    double limit = INFINITY;
    if (watch > 0 && watch <= PyList_GET_SIZE(keys)) {
        PyObject *v = PyList_GET_ITEM(keys, watch - 1);
        if (!PyFloat_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "book keys must be floats");
            return -1;
        }
        limit = PyFloat_AS_DOUBLE(v);
    }
    for (Py_ssize_t i = 0; i < lv->n; i++) {
        const level_t *x = &lv->v[i];
        PyObject *s = NULL;
        if (x->q != 0.0 && (s = level_raw(x)) == NULL)
            return -1;
        int rc = place_level(keys, qtys, raws, bid ? -x->p : x->p, x->q, s, limit, touched);
        Py_XDECREF(s);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* both sides of a checked update; 0 only when a side is not of the expected shape, before any change */
static int
lane_apply(Lane *L, target_t *t, int *touched)
{
    int64_t watch;
    PyObject *bk, *bq, *br, *ak, *aq, *ar;
    if (!slot_i64(t->book, L->off[M_BOOK_WATCH], &watch) || !side_lists(L, t->bids, &bk, &bq, &br) ||
        !side_lists(L, t->asks, &ak, &aq, &ar))
        return 0;
    if (lane_side_update(bk, bq, br, 1, &L->bids, (Py_ssize_t)watch, touched) < 0 ||
        lane_side_update(ak, aq, ar, 0, &L->asks, (Py_ssize_t)watch, touched) < 0)
        return -1;
    return 1;
}

static int
lane_crossed(Lane *L, target_t *t)
{
    PyObject *bk = SLOT_GET(t->bids, L->off[M_SIDE_KEYS]), *ak = SLOT_GET(t->asks, L->off[M_SIDE_KEYS]);
    if (PyList_GET_SIZE(bk) == 0 || PyList_GET_SIZE(ak) == 0)
        return 0;
    PyObject *b = PyList_GET_ITEM(bk, 0), *a = PyList_GET_ITEM(ak, 0);
    return PyFloat_Check(b) && PyFloat_Check(a) && -PyFloat_AS_DOUBLE(b) >= PyFloat_AS_DOUBLE(a);
}

/* ---------------------------------------------------------------------------------------- the store */
static void
bump(Lane *L, Py_ssize_t off, int64_t n)
{
    int64_t *w = (int64_t *)((char *)L->shm.buf + off);
    __atomic_store_n(w, __atomic_load_n(w, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* SegmentWriter._write_latched with the writer's meta row */
static void
lane_latched(Lane *L, target_t *t, int64_t uid, int64_t exch, int64_t recv, int64_t nb, int64_t na, int64_t flags,
             Py_ssize_t n_levels)
{
    int64_t *m = (int64_t *)L->meta.buf + t->slot * LANE_META_WORDS;
    int64_t version = m[1] + 1;
    if (!m[0])
        n_levels = L->capacity;
    int64_t row[8] = {1, version, uid, exch, recv, nb, na, flags};
    memcpy(m, row, sizeof row);
    long long h[3] = {uid, exch, recv};
    uint32_t q4[4] = {(uint32_t)nb, (uint32_t)na, (uint32_t)L->state_live, (uint32_t)flags};
    latch_store(L->shm.buf, t->latch, t->stage_buf.buf, LANE_BOOK_HEADER_LENGTH + n_levels * LANE_LEVEL_LENGTH, h, q4,
                L->generation, version);
}

/* Publisher._book after an update: the top levels when they may have changed, else the header only */
static int
lane_publish(Lane *L, target_t *t, int64_t recv_ns, int touched)
{
    PyObject *book = t->book;
    int64_t uid, exch, watch;
    PyObject *dirty = SLOT_GET(book, L->off[M_BOOK_DIRTY]), *published = SLOT_GET(t->slot_obj, L->off[M_SLOT_PUBLISHED]);
    if (!slot_i64(book, L->off[M_BOOK_UPDATE_ID], &uid) || !slot_i64(book, L->off[M_BOOK_EXCH_TS], &exch) ||
        !slot_i64(book, L->off[M_BOOK_WATCH], &watch) || dirty == NULL || published == NULL) {
        PyErr_SetString(PyExc_TypeError, "fast lane: a book's update_id, exch_ts_ns or watch_depth is not an int");
        return -1;
    }
    int64_t *m = (int64_t *)L->meta.buf + t->slot * LANE_META_WORDS;
    if (touched || dirty == Py_True || published != Py_True || watch != L->depth || !m[0]) {
        PyObject *bk = SLOT_GET(t->bids, L->off[M_SIDE_KEYS]), *bq = SLOT_GET(t->bids, L->off[M_SIDE_QTY]);
        PyObject *ak = SLOT_GET(t->asks, L->off[M_SIDE_KEYS]), *aq = SLOT_GET(t->asks, L->off[M_SIDE_QTY]);
        unsigned char *rows = (unsigned char *)t->stage_buf.buf + LANE_BOOK_HEADER_LENGTH;
        Py_ssize_t nb, na;
        if (write_top(rows, L->capacity * LANE_LEVEL_LENGTH, bk, bq, ak, aq, L->depth, &nb, &na) < 0)
            return -1;
        Py_ssize_t n = nb > na ? nb : na, old_n = m[0] ? (m[5] > m[6] ? m[5] : m[6]) : 0;
        for (Py_ssize_t i = n; i < old_n; i++) { /* blank what a deeper previous book left */
            double blank[4] = {NAN, 0.0, NAN, 0.0};
            memcpy(rows + i * LANE_LEVEL_LENGTH, blank, LANE_LEVEL_LENGTH);
        }
        int64_t flags = PyList_GET_SIZE(bk) > L->depth || PyList_GET_SIZE(ak) > L->depth ? L->flag_truncated : 0;
        if (nb && na) {
            double best_bid, best_ask;
            memcpy(&best_bid, rows, 8);
            memcpy(&best_ask, rows + 2 * sizeof(double), 8); /* a level: bid px, bid qty, ask px, ask qty */
            if (best_bid >= best_ask)
                flags |= L->flag_crossed;
        }
        lane_latched(L, t, uid, exch, recv_ns, nb, na, flags, n > old_n ? n : old_n);
        if (watch != L->depth && slot_set_i64(book, L->off[M_BOOK_WATCH], L->depth) < 0)
            return -1;
        if (dirty != Py_False)
            slot_set(book, L->off[M_BOOK_DIRTY], Py_NewRef(Py_False));
        if (published != Py_True)
            slot_set(t->slot_obj, L->off[M_SLOT_PUBLISHED], Py_NewRef(Py_True));
    }
    else
        lane_latched(L, t, uid, exch, recv_ns, m[5], m[6], m[7], 0);
    bump(L, L->seg_book_updates, 1);
    bump(L, t->book_updates, 1);
    bump(L, t->messages, 1);
    __atomic_store_n((int64_t *)((char *)L->shm.buf + t->last_recv), recv_ns, __ATOMIC_RELAXED);
    return 0;
}

/* Publisher._trades */
static void
lane_trades(Lane *L, target_t *t, const trade_rec *recs, Py_ssize_t n)
{
    Py_ssize_t cap = t->mask + 1, skipped = n > cap ? n - cap : 0;
    ring_store(L->shm.buf, t->ring, t->mask, recs + skipped, n - skipped, skipped);
    bump(L, L->seg_trades, n - skipped);
    bump(L, t->trades, n - skipped);
    bump(L, t->messages, 1);
}

/* after an applied update: a failed check goes to the adapter's verdict (its events are the frame's result) */
static int
lane_verdict(Lane *L, target_t *t, int64_t recv_ns, int64_t checksum, int touched, PyObject **result)
{
    if (touched)
        slot_set(t->book, L->off[M_BOOK_DIRTY], Py_NewRef(Py_True));
    *result = PyObject_CallFunction(L->verdict, "OLL", t->sym, (long long)recv_ns, (long long)checksum);
    return *result == NULL ? -1 : 1;
}

/* the frame was handled: its result is an empty event list */
static int
handled(PyObject **result)
{
    return (*result = PyList_New(0)) == NULL ? -1 : 1;
}

/* `sym`'s target in *t: 1; 0 to decline (no slot); -1 on an error */
static int
find_target(Lane *L, PyObject *sym, target_t **t)
{
    *t = lane_target(L, sym);
    return *t != NULL ? 1 : PyErr_Occurred() ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- Binance */
enum { BN_E = 1, BN_T = 2, BN_U = 4, BN_u = 8, BN_pu = 16, BN_b = 32, BN_a = 64, BN_e = 128, BN_t = 256,
       BN_aid = 512, BN_p = 1024, BN_q = 2048, BN_m = 4096 };

typedef struct {
    unsigned has;
    int64_t E, T, U, u, pu, t, aid;
    span_t e, p, q;
    int m;
} bn_fields;

/* the "data" object of a combined-stream frame: depth=1 for a diff-depth stream, 0 for a trade stream */
static int
bn_data(Lane *L, scan_t *c, int depth, bn_fields *f)
{
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c);
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        int ok = 1;
        if (k.n == 1) {
            switch (k.s[0]) {
            case 'E': ok = scan_i64(c, &f->E), f->has |= BN_E; break;
            case 'T': ok = scan_i64(c, &f->T), f->has |= BN_T; break;
            case 'U': ok = scan_i64(c, &f->U), f->has |= BN_U; break;
            case 'u': ok = scan_i64(c, &f->u), f->has |= BN_u; break;
            case 'e': ok = scan_str(c, &f->e), f->has |= BN_e; break;
            case 'b':
                if (depth)
                    ok = !(f->has & BN_b) && scan_levels(c, &L->bids), f->has |= BN_b;
                else
                    ok = scan_skip(c);
                break;
            case 'a':
                if (depth)
                    ok = !(f->has & BN_a) && scan_levels(c, &L->asks), f->has |= BN_a;
                else
                    ok = scan_i64(c, &f->aid), f->has |= BN_aid;
                break;
            case 't': ok = scan_i64(c, &f->t), f->has |= BN_t; break;
            case 'p': ok = scan_str(c, &f->p), f->has |= BN_p; break;
            case 'q': ok = scan_str(c, &f->q), f->has |= BN_q; break;
            case 'm': ok = scan_bool(c, &f->m), f->has |= BN_m; break;
            default: ok = scan_skip(c);
            }
        }
        else if (k.n == 2 && k.s[0] == 'p' && k.s[1] == 'u')
            ok = scan_i64(c, &f->pu), f->has |= BN_pu;
        else
            ok = scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    return more == 0;
}

static int
bn_depth(Lane *L, target_t *t, const bn_fields *f, int64_t recv_ns, PyObject **result)
{
    PyObject *sym = t->sym;
    const chain_t *chain = lane_chain(L, sym);
    int64_t last, applied;
    unsigned need = BN_E | BN_u | BN_b | BN_a;
    if (chain == NULL || (f->has & need) != need || f->E < 0 || f->E > INT64_MAX / 1000000 ||
        !slot_i64(t->book, L->off[M_BOOK_UPDATE_ID], &last) || !slot_i64(sym, L->off[M_SYM_APPLIED], &applied))
        return 0;
    /* a duplicate or a gap: the adapter says what it means (SymbolSync.chain reads U for NEXT_ID, pu for PREV_ID) */
    if (f->u <= last || !chain_follows(chain, last, f->u, chain->kind == CHAIN_NEXT_ID && (f->has & BN_U), f->U,
                                       chain->kind == CHAIN_PREV_ID && (f->has & BN_pu), f->pu))
        return 0;
    int touched = 0;
    int rc = lane_apply(L, t, &touched);
    if (rc <= 0)
        return rc;
    if (slot_set_i64(t->book, L->off[M_BOOK_UPDATE_ID], f->u) < 0 ||
        slot_set_i64(t->book, L->off[M_BOOK_EXCH_TS], f->E * 1000000) < 0 ||
        slot_set_i64(sym, L->off[M_SYM_APPLIED], applied + 1) < 0)
        return -1;
    if (lane_crossed(L, t))
        return lane_verdict(L, t, recv_ns, 0, touched, result);
    if (lane_publish(L, t, recv_ns, touched) < 0)
        return -1;
    return handled(result);
}

static int
bn_trade(Lane *L, target_t *t, const bn_fields *f, int64_t recv_ns, PyObject **result)
{
    unsigned need = BN_e | BN_T | BN_p | BN_q | BN_m;
    int64_t tid, last;
    trade_rec r;
    if ((f->has & need) != need)
        return 0;
    if (span_is(f->e, "trade") && (f->has & BN_t))
        tid = f->t;
    else if (span_is(f->e, "aggTrade") && (f->has & BN_aid))
        tid = f->aid;
    else
        return 0;
    if (!slot_i64(t->sym, L->off[M_SYM_LAST_TRADE], &last) || tid <= last || f->T < 0 || f->T > INT64_MAX / 1000000 ||
        !plain_decimal(f->p.s, f->p.n, &r.price) || !plain_decimal(f->q.s, f->q.n, &r.qty) ||
        !sane_numbers(r.price, r.qty))
        return 0;
    if (slot_set_i64(t->sym, L->off[M_SYM_LAST_TRADE], tid) < 0)
        return -1;
    r.exch_ts = f->T * 1000000;
    r.recv_ts = recv_ns;
    r.trade_id = tid;
    r.side = (int8_t)(f->m ? L->side_sell : L->side_buy); /* m: the buyer was the maker, so the taker sold */
    r.flags = 0;
    lane_trades(L, t, &r, 1);
    return handled(result);
}

/* route = adapter._routes[conn][stream] = (sym, kind) */
static int
bn_route(Lane *L, PyObject *conn, span_t stream, PyObject **sym, int *depth)
{
    PyObject *routes = PyDict_GetItemWithError(L->routes, conn);
    if (routes == NULL || !PyDict_CheckExact(routes))
        return 0;
    PyObject *name = PyUnicode_FromStringAndSize(stream.s, stream.n);
    if (name == NULL)
        return -1;
    PyObject *route = PyDict_GetItemWithError(routes, name);
    Py_DECREF(name);
    if (route == NULL || !PyTuple_CheckExact(route) || PyTuple_GET_SIZE(route) != 2)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *kind = PyTuple_GET_ITEM(route, 1);
    if (kind != L->depth_kind && kind != L->trade_kind)
        return 0;
    *sym = PyTuple_GET_ITEM(route, 0);
    *depth = kind == L->depth_kind;
    return Py_TYPE(*sym) == (PyTypeObject *)L->types[0];
}

static int
bn_frame(Lane *L, PyObject *conn, scan_t *c, int64_t recv_ns, PyObject **result)
{
    span_t stream = {NULL, 0};
    const char *data = NULL;
    PyObject *sym = NULL;
    int depth = 0, parsed = 0, rc;
    bn_fields f;
    memset(&f, 0, sizeof f);
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c);
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "stream")) {
            if (stream.s != NULL || !scan_str(c, &stream))
                return 0;
        }
        else if (span_is(k, "data")) {
            if (data != NULL)
                return 0;
            data = c->p;
            if (stream.s != NULL) { /* the usual order: route first, then decode the data in place */
                if ((rc = bn_route(L, conn, stream, &sym, &depth)) <= 0)
                    return rc;
                if (!bn_data(L, c, depth, &f))
                    return 0;
                parsed = 1;
            }
            else if (!scan_skip(c))
                return 0;
        }
        else if (!scan_skip(c))
            return 0;
        more = scan_obj_next(c);
    }
    if (more < 0 || !scan_done(c) || stream.s == NULL || data == NULL)
        return 0;
    if (!parsed) {
        scan_t d = {data, c->end};
        if ((rc = bn_route(L, conn, stream, &sym, &depth)) <= 0)
            return rc;
        if (!bn_data(L, &d, depth, &f))
            return 0;
    }
    target_t *t;
    if ((rc = find_target(L, sym, &t)) <= 0)
        return rc;
    if (!depth)
        return bn_trade(L, t, &f, recv_ns, result);
    if (SLOT_GET(sym, L->off[M_SYM_STATE]) != L->live)
        return 0;
    return bn_depth(L, t, &f, recv_ns, result);
}

static int ws_update(Lane *L, target_t *t, int has_seq, int64_t seq, int64_t ts_ms, int64_t checksum, int64_t recv_ns,
                     PyObject **result);

/* the trades of one frame: a growable array shared by every lane (all run under the GIL) */
static trade_rec *trades_buf;
static Py_ssize_t trades_cap;

static trade_rec *
trade_slot(Py_ssize_t n)
{
    if (n == trades_cap) {
        Py_ssize_t cap = trades_cap ? 2 * trades_cap : 64;
        trade_rec *v = PyMem_Realloc(trades_buf, cap * sizeof(trade_rec));
        if (v == NULL)
            return NULL;
        trades_buf = v;
        trades_cap = cap;
    }
    return &trades_buf[n];
}

/* the "arg" object of an OKX or Bitget push: its channel, instId and (Bitget) instType; all three must be there
   except instType when `itype` is NULL */
static int
scan_arg(scan_t *c, span_t *channel, span_t *inst, span_t *itype)
{
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c);
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        int ok = span_is(k, "channel") ? scan_str(c, channel)
                 : span_is(k, "instId") ? scan_str(c, inst)
                 : itype != NULL && span_is(k, "instType") ? scan_str(c, itype) : scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    return more == 0 && channel->s != NULL && inst->s != NULL && (itype == NULL || itype->s != NULL);
}

/* the n trades scanned into trades_buf, received at recv_ns, into the symbol's ring */
static int
lane_trade_batch(Lane *L, target_t *t, Py_ssize_t n, int64_t recv_ns, PyObject **result)
{
    for (Py_ssize_t i = 0; i < n; i++)
        trades_buf[i].recv_ts = recv_ns;
    lane_trades(L, t, trades_buf, n);
    return handled(result);
}

/* ---------------------------------------------------------------------------------------- OKX */
typedef struct {
    int n_rows, has_seq, has_prev, has_ts, has_checksum, has_bids, has_asks;
    int64_t seq, prev, ts, checksum;
} okx_book;

/* one element of "data": book fields (the first element only, as the adapter reads data[0]) and a trade */
static int
okx_row(Lane *L, scan_t *c, int books, int first, okx_book *b, trade_rec *tr)
{
    span_t ts = {NULL, 0}, tid = {NULL, 0}, px = {NULL, 0}, sz = {NULL, 0}, side = {NULL, 0};
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c), ok;
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "ts"))
            ok = scan_str(c, &ts);
        else if (books && first && span_is(k, "bids"))
            ok = !b->has_bids && scan_levels(c, &L->bids), b->has_bids = 1;
        else if (books && first && span_is(k, "asks"))
            ok = !b->has_asks && scan_levels(c, &L->asks), b->has_asks = 1;
        else if (books && first && span_is(k, "seqId"))
            ok = scan_i64(c, &b->seq), b->has_seq = 1;
        else if (books && first && span_is(k, "prevSeqId"))
            ok = scan_i64(c, &b->prev), b->has_prev = 1;
        else if (books && first && span_is(k, "checksum"))
            ok = scan_i64(c, &b->checksum), b->has_checksum = 1;
        else if (!books && span_is(k, "tradeId"))
            ok = scan_str(c, &tid);
        else if (!books && span_is(k, "px"))
            ok = scan_str(c, &px);
        else if (!books && span_is(k, "sz"))
            ok = scan_str(c, &sz);
        else if (!books && span_is(k, "side"))
            ok = scan_str(c, &side);
        else
            ok = scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    if (more != 0)
        return 0;
    if (books) {
        if (first) {
            b->has_ts = ts.s != NULL && span_i64(ts, &b->ts);
            if (!b->has_ts)
                return 0;
        }
        return 1;
    }
    int64_t ms;
    if (ts.s == NULL || tid.s == NULL || px.s == NULL || sz.s == NULL || side.s == NULL || !span_i64(ts, &ms) ||
        ms > INT64_MAX / 1000000 || !span_i64(tid, &tr->trade_id) || !plain_decimal(px.s, px.n, &tr->price) ||
        !plain_decimal(sz.s, sz.n, &tr->qty) || !sane_numbers(tr->price, tr->qty))
        return 0;
    tr->exch_ts = ms * 1000000;
    tr->side = (int8_t)(span_is(side, "buy") ? L->side_buy : span_is(side, "sell") ? L->side_sell : L->side_unknown);
    tr->flags = 0;
    return 1;
}

static int
okx_frame(Lane *L, PyObject *conn, scan_t *c, int64_t recv_ns, PyObject **result)
{
    span_t channel = {NULL, 0}, inst = {NULL, 0}, action = {NULL, 0};
    int books = 0, seen_data = 0;
    okx_book b;
    Py_ssize_t n_trades = 0;
    memset(&b, 0, sizeof b);
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c);
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "arg")) {
            if (channel.s != NULL || !scan_arg(c, &channel, &inst, NULL))
                return 0;
            if (span_is(channel, "books"))
                books = 1;
            else if (!span_is(channel, "trades"))
                return 0;
        }
        else if (span_is(k, "action")) {
            if (!scan_str(c, &action))
                return 0;
        }
        else if (span_is(k, "data")) {
            if (channel.s == NULL || seen_data || !scan_byte(c, '['))
                return 0; /* "arg" comes first in every OKX push; anything else is the adapter's to read */
            seen_data = 1;
            int item = scan_arr_first(c);
            while (item > 0) {
                trade_rec *tr = books ? NULL : trade_slot(n_trades);
                if ((!books && tr == NULL) || !okx_row(L, c, books, b.n_rows == 0, &b, tr))
                    return 0;
                b.n_rows++;
                n_trades += !books;
                item = scan_arr_next(c);
            }
            if (item != 0)
                return 0;
        }
        else if (!scan_skip(c))
            return 0;
        more = scan_obj_next(c);
    }
    if (more != 0 || !scan_done(c) || !seen_data || b.n_rows == 0)
        return 0;
    PyObject *name = PyUnicode_FromStringAndSize(inst.s, inst.n);
    if (name == NULL)
        return -1;
    PyObject *sym = PyDict_GetItemWithError(L->routes, name); /* adapter._alias: instId -> SymbolSync */
    Py_DECREF(name);
    if (sym == NULL || Py_TYPE(sym) != (PyTypeObject *)L->types[0])
        return PyErr_Occurred() ? -1 : 0;
    target_t *t;
    int rc = find_target(L, sym, &t);
    if (rc <= 0)
        return rc;
    if (!books)
        return lane_trade_batch(L, t, n_trades, recv_ns, result);
    /* books: an update on a LIVE book whose prevSeqId is the last seqId and whose seqId does not restart */
    int64_t last;
    if ((action.s != NULL && !span_is(action, "update")) || !b.has_bids || !b.has_asks ||
        SLOT_GET(sym, L->off[M_SYM_STATE]) != L->live || !slot_i64(sym, L->off[M_SYM_SEQ], &last))
        return 0;
    if (b.has_seq && !chain_follows(lane_chain(L, sym), last, b.seq, 0, 0, b.has_prev, b.prev))
        return 0; /* a gap, a duplicate or a reset: the adapter's verdicts */
    return ws_update(L, t, b.has_seq, b.seq, b.ts, b.checksum, recv_ns, result);
}

/* OKX, Bybit, Bitget (mdengine/exchanges/_wsbook.py): a checked update applied, then `_publish`'s verdicts. The
   symbol's seq becomes `seq` when the frame has one; update_id is max(seq, 0); a non-zero checksum is verified over
   the top 25 levels' wire strings. */
static int
ws_update(Lane *L, target_t *t, int has_seq, int64_t seq, int64_t ts_ms, int64_t checksum, int64_t recv_ns,
          PyObject **result)
{
    int64_t last;
    if (ts_ms < 0 || ts_ms > INT64_MAX / 1000000 || !slot_i64(t->sym, L->off[M_SYM_SEQ], &last))
        return 0;
    int touched = 0;
    int rc = lane_apply(L, t, &touched);
    if (rc <= 0)
        return rc;
    if (has_seq) {
        last = seq;
        if (slot_set_i64(t->sym, L->off[M_SYM_SEQ], last) < 0)
            return -1;
    }
    if (slot_set_i64(t->book, L->off[M_BOOK_UPDATE_ID], last > 0 ? last : 0) < 0 ||
        slot_set_i64(t->book, L->off[M_BOOK_EXCH_TS], ts_ms * 1000000) < 0)
        return -1;
    if (checksum) {
        PyObject *br = SLOT_GET(t->bids, L->off[M_SIDE_RAW]), *ar = SLOT_GET(t->asks, L->off[M_SIDE_RAW]);
        int64_t local;
        if (crc_sides(br, ar, 25, &local) < 0)
            return -1;
        if (local != checksum)
            return lane_verdict(L, t, recv_ns, checksum, touched, result);
    }
    if (lane_crossed(L, t))
        return lane_verdict(L, t, recv_ns, checksum, touched, result);
    if (lane_publish(L, t, recv_ns, touched) < 0)
        return -1;
    return handled(result);
}

/* ---------------------------------------------------------------------------------------- Bybit */
/* the value of a member that is an integer or a string of digits (Bybit "cts"/"ts", Bitget "ts") */
static int
scan_int_or_digits(scan_t *c, int64_t *out)
{
    span_t s;
    if (scan_peek(c) == '"')
        return scan_str(c, &s) && span_i64(s, out);
    return scan_i64(c, out);
}

/* publicTrade rows: {"T": ms, "S": "Buy"|"Sell", "v": qty, "p": price, "i": id of digits, ...} */
static int
by_trades(Lane *L, scan_t *c, Py_ssize_t *n)
{
    if (!scan_byte(c, '['))
        return 0;
    int item = scan_arr_first(c);
    while (item > 0) {
        trade_rec *tr = trade_slot(*n);
        span_t side = {NULL, 0}, qty = {NULL, 0}, px = {NULL, 0}, id = {NULL, 0};
        int64_t ms = -1;
        if (tr == NULL || !scan_byte(c, '{'))
            return 0;
        int more = scan_obj_first(c), ok;
        while (more > 0) {
            span_t k;
            if (!scan_key(c, &k))
                return 0;
            ok = span_is(k, "T") ? scan_i64(c, &ms) : span_is(k, "S") ? scan_str(c, &side)
                 : span_is(k, "v") ? scan_str(c, &qty) : span_is(k, "p") ? scan_str(c, &px)
                 : span_is(k, "i") ? scan_str(c, &id) : scan_skip(c);
            if (!ok)
                return 0;
            more = scan_obj_next(c);
        }
        if (more != 0 || ms < 0 || ms > INT64_MAX / 1000000 || side.s == NULL || !span_i64(id, &tr->trade_id) ||
            qty.s == NULL || px.s == NULL || !plain_decimal(px.s, px.n, &tr->price) ||
            !plain_decimal(qty.s, qty.n, &tr->qty) || !sane_numbers(tr->price, tr->qty))
            return 0;
        tr->exch_ts = ms * 1000000;
        tr->side = (int8_t)(span_is(side, "Buy") ? L->side_buy : span_is(side, "Sell") ? L->side_sell : L->side_unknown);
        tr->flags = 0;
        (*n)++;
        item = scan_arr_next(c);
    }
    return item == 0;
}

/* orderbook data: {"s": ..., "b": levels, "a": levels, "u": update id, "seq": ...} */
static int
by_book(Lane *L, scan_t *c, int64_t *u)
{
    int has_b = 0, has_a = 0, has_u = 0;
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c), ok;
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "b"))
            ok = !has_b++ && scan_levels(c, &L->bids);
        else if (span_is(k, "a"))
            ok = !has_a++ && scan_levels(c, &L->asks);
        else if (span_is(k, "u"))
            ok = !has_u++ && scan_i64(c, u);
        else
            ok = scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    return more == 0 && has_b && has_a && has_u;
}

/* adapter._alias["<category>|<topic>"], the category being the connection's name up to its last "-" */
static PyObject *
by_symbol(Lane *L, PyObject *conn, span_t topic)
{
    Py_ssize_t n;
    const char *cn = PyUnicode_Check(conn) ? PyUnicode_AsUTF8AndSize(conn, &n) : NULL;
    if (cn == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_ssize_t cat = n;
    while (cat > 0 && cn[cat - 1] != '-')
        cat--;
    cat = cat > 0 ? cat - 1 : n;
    char buf[256];
    if (cat + 1 + topic.n > (Py_ssize_t)sizeof buf)
        return NULL;
    memcpy(buf, cn, cat);
    buf[cat] = '|';
    memcpy(buf + cat + 1, topic.s, topic.n);
    PyObject *name = PyUnicode_DecodeUTF8(buf, cat + 1 + topic.n, "strict");
    if (name == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *sym = PyDict_GetItemWithError(L->routes, name);
    Py_DECREF(name);
    if (sym == NULL)
        PyErr_Clear();
    return sym != NULL && Py_TYPE(sym) == (PyTypeObject *)L->types[0] ? sym : NULL;
}

static int
by_frame(Lane *L, PyObject *conn, scan_t *c, int64_t recv_ns, PyObject **result)
{
    span_t topic = {NULL, 0}, type = {NULL, 0};
    int64_t ts = 0, cts = 0, u = 0;
    int has_ts = 0, book = -1; /* book: 1 data was an orderbook object, 0 trade rows */
    Py_ssize_t n_trades = 0;
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c), ok;
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "topic"))
            ok = topic.s == NULL && scan_str(c, &topic);
        else if (span_is(k, "type"))
            ok = type.s == NULL && scan_str(c, &type);
        else if (span_is(k, "ts"))
            ok = !has_ts++ && scan_int_or_digits(c, &ts);
        else if (span_is(k, "cts"))
            ok = scan_int_or_digits(c, &cts);
        else if (span_is(k, "data")) {
            char ch = scan_peek(c);
            ok = book < 0 && (ch == '{' ? (book = 1, by_book(L, c, &u)) : (book = 0, by_trades(L, c, &n_trades)));
        }
        else
            ok = scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    if (more != 0 || !scan_done(c) || topic.s == NULL || topic.n < 1 || book < 0)
        return 0;
    PyObject *sym = by_symbol(L, conn, topic);
    if (sym == NULL || (book != (topic.s[0] == 'o')))
        return 0;
    target_t *t;
    int rc = find_target(L, sym, &t);
    if (rc <= 0)
        return rc;
    if (!book)
        return n_trades == 0 ? 0 : lane_trade_batch(L, t, n_trades, recv_ns, result);
    /* a delta that follows the last update id on a LIVE book (u == 1 is Bybit's restart: a snapshot) */
    int64_t last;
    if (type.s == NULL || span_is(type, "snapshot") || u == 1 || (!cts && !has_ts) ||
        SLOT_GET(sym, L->off[M_SYM_STATE]) != L->live || !slot_i64(sym, L->off[M_SYM_SEQ], &last) ||
        !chain_follows(lane_chain(L, sym), last, u, 1, u, 0, 0))
        return 0;
    return ws_update(L, t, 1, u, cts ? cts : ts, 0, recv_ns, result);
}

/* ---------------------------------------------------------------------------------------- Bitget */
static int
bg_frame(Lane *L, PyObject *conn, scan_t *c, int64_t recv_ns, PyObject **result)
{
    span_t action = {NULL, 0}, itype = {NULL, 0}, inst = {NULL, 0}, channel = {NULL, 0};
    int64_t seq = 0, pseq = 0, ts = 0, checksum = 0;
    int has_seq = 0, has_pseq = 0, has_ts = 0, has_b = 0, has_a = 0, rows = 0, ok;
    if (!scan_byte(c, '{'))
        return 0;
    int more = scan_obj_first(c);
    while (more > 0) {
        span_t k;
        if (!scan_key(c, &k))
            return 0;
        if (span_is(k, "action"))
            ok = action.s == NULL && scan_str(c, &action);
        else if (span_is(k, "arg"))  /* trades (de-duplicated by id) and books1/5/15 stay with the adapter */
            ok = channel.s == NULL && scan_arg(c, &channel, &inst, &itype) && span_is(channel, "books");
        else if (span_is(k, "data")) {
            /* "arg" comes first in every Bitget push; the book fields are read from data[0], as the adapter does */
            ok = channel.s != NULL && rows == 0 && scan_byte(c, '[');
            int item = ok ? scan_arr_first(c) : -1;
            while (ok && item > 0) {
                if (rows++ == 0) {
                    ok = scan_byte(c, '{');
                    int m3 = ok ? scan_obj_first(c) : -1;
                    while (ok && m3 > 0) {
                        span_t k3;
                        ok = scan_key(c, &k3);
                        if (!ok)
                            break;
                        if (span_is(k3, "bids"))
                            ok = !has_b++ && scan_levels(c, &L->bids);
                        else if (span_is(k3, "asks"))
                            ok = !has_a++ && scan_levels(c, &L->asks);
                        else if (span_is(k3, "seq"))
                            ok = !has_seq++ && scan_i64(c, &seq);
                        else if (span_is(k3, "pseq"))
                            ok = !has_pseq++ && scan_i64(c, &pseq);
                        else if (span_is(k3, "ts"))
                            ok = !has_ts++ && scan_int_or_digits(c, &ts);
                        else if (span_is(k3, "checksum"))
                            ok = scan_i64(c, &checksum);
                        else
                            ok = scan_skip(c);
                        m3 = ok ? scan_obj_next(c) : -1;
                    }
                    ok = ok && m3 == 0;
                }
                else
                    ok = scan_skip(c);
                item = ok ? scan_arr_next(c) : -1;
            }
            ok = ok && item == 0;
        }
        else
            ok = scan_skip(c);
        if (!ok)
            return 0;
        more = scan_obj_next(c);
    }
    if (more != 0 || !scan_done(c) || rows == 0 || !has_b || !has_a || !has_ts || action.s == NULL ||
        !span_is(action, "update"))
        return 0;
    PyObject *key = Py_BuildValue("(s#s#)", itype.s, itype.n, inst.s, inst.n);
    if (key == NULL)
        return -1;
    PyObject *sym = PyDict_GetItemWithError(L->routes, key); /* adapter.syms: (instType, instId) -> SymbolSync */
    Py_DECREF(key);
    if (sym == NULL || Py_TYPE(sym) != (PyTypeObject *)L->types[0])
        return PyErr_Occurred() ? -1 : 0;
    PyObject *sym_channel = SLOT_GET(sym, L->off[M_SYM_CHANNEL]);
    int64_t last;
    if (sym_channel == NULL || !PyUnicode_Check(sym_channel) ||
        PyUnicode_CompareWithASCIIString(sym_channel, "books") != 0 ||
        SLOT_GET(sym, L->off[M_SYM_STATE]) != L->live || !slot_i64(sym, L->off[M_SYM_SEQ], &last))
        return 0;
    if (has_seq && !chain_follows(lane_chain(L, sym), last, seq, 0, 0, has_pseq, pseq))
        return 0; /* a gap, a duplicate or a reset: the adapter's verdicts */
    target_t *t;
    int rc = find_target(L, sym, &t);
    return rc <= 0 ? rc : ws_update(L, t, has_seq, seq, ts, checksum, recv_ns, result);
}

/* ---------------------------------------------------------------------------------------- the type */
static PyObject *
Lane_on_frame(Lane *L, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "on_frame(conn, data, recv_ns)");
        return NULL;
    }
    PyObject *fallback = PyObject_GetAttr(L->adapter, str_on_frame);
    if (fallback == NULL)
        return NULL;
    PyObject *data = args[1], *result = NULL;
    long long recv_ns = PyLong_AsLongLong(args[2]);
    int rc = 0;
    if (recv_ns == -1 && PyErr_Occurred()) {
        Py_DECREF(fallback);
        return NULL;
    }
    /* an instance's own on_frame (Binance mid-rotation) sees every frame */
    if (L->open && PyMethod_Check(fallback) && PyMethod_GET_FUNCTION(fallback) == L->on_frame_func &&
        PyUnicode_CheckExact(data) && PyUnicode_IS_COMPACT_ASCII(data)) {
        const char *p = (const char *)PyUnicode_1BYTE_DATA(data);
        scan_t c = {p, p + PyUnicode_GET_LENGTH(data)};
        L->bids.n = L->asks.n = 0;
        switch (L->exchange) {
        case LANE_BINANCE: rc = bn_frame(L, args[0], &c, recv_ns, &result); break;
        case LANE_OKX: rc = okx_frame(L, args[0], &c, recv_ns, &result); break;
        case LANE_BYBIT: rc = by_frame(L, args[0], &c, recv_ns, &result); break;
        default: rc = bg_frame(L, args[0], &c, recv_ns, &result);
        }
    }
    L->last_handled = rc > 0;
    if (rc != 0) {
        Py_DECREF(fallback);
        if (rc > 0)
            L->handled++;
        return rc > 0 ? result : NULL;
    }
    L->declined++;
    result = PyObject_Vectorcall(fallback, args, 3, NULL);
    Py_DECREF(fallback);
    return result;
}

static void
lane_release(Lane *L)
{
    if (!L->open)
        return;
    L->open = 0;
    PyBuffer_Release(&L->shm);
    PyBuffer_Release(&L->meta);
    if (L->targets != NULL)
        PyDict_Clear(L->targets);
}

static PyObject *
Lane_close(Lane *L, PyObject *unused)
{
    lane_release(L);
    Py_RETURN_NONE;
}

static PyObject *
Lane_forget(Lane *L, PyObject *unused)
{
    PyDict_Clear(L->targets);
    Py_RETURN_NONE;
}

static PyObject *
Lane_stats(Lane *L, PyObject *unused)
{
    return Py_BuildValue("{sKsK}", "handled", L->handled, "declined", L->declined);
}

static int
Lane_traverse(Lane *L, visitproc visit, void *arg)
{
    Py_VISIT(L->adapter);
    Py_VISIT(L->on_frame_func);
    Py_VISIT(L->routes);
    Py_VISIT(L->verdict);
    Py_VISIT(L->target_of);
    Py_VISIT(L->targets);
    return 0;
}

static int
Lane_clear(Lane *L)
{
    lane_release(L);
    Py_CLEAR(L->adapter);
    Py_CLEAR(L->on_frame_func);
    Py_CLEAR(L->routes);
    Py_CLEAR(L->verdict);
    Py_CLEAR(L->target_of);
    Py_CLEAR(L->targets);
    return 0;
}

static void
Lane_dealloc(Lane *L)
{
    PyObject_GC_UnTrack(L);
    Lane_clear(L);
    Py_CLEAR(L->live);
    Py_CLEAR(L->depth_kind);
    Py_CLEAR(L->trade_kind);
    Py_CLEAR(L->shm_obj);
    Py_CLEAR(L->meta_obj);
    for (int i = 0; i < 4; i++)
        Py_CLEAR(L->types[i]);
    for (int i = 0; i < LANE_MAX_CHAINS; i++)
        Py_CLEAR(L->chain_objs[i]);
    PyMem_Free(L->bids.v);
    PyMem_Free(L->asks.v);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

/* d[key], borrowed; NULL with an error naming `what` and the key when it is missing */
static PyObject *
spec_item(PyObject *d, const char *what, const char *key)
{
    if (!PyDict_Check(d)) {
        PyErr_Format(PyExc_TypeError, "fast lane: %s must be a dict", what);
        return NULL;
    }
    PyObject *v = PyDict_GetItemString(d, key);
    if (v == NULL && !PyErr_Occurred())
        PyErr_Format(PyExc_KeyError, "fast lane: %s has no '%s'", what, key);
    return v;
}

/* an int64 item of `d` */
static int
spec_i64(PyObject *d, const char *what, const char *key, int64_t *out)
{
    PyObject *v = spec_item(d, what, key);
    if (v == NULL)
        return -1;
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    *out = x;
    return 0;
}

/* store["layout"] must describe the layout this file was compiled for */
static int
check_layout(PyObject *layout)
{
    static const struct {
        const char *key;
        long long value;
        const char *text;
    } want[] = {
        {"BOOK_HEADER_LENGTH", LANE_BOOK_HEADER_LENGTH, NULL}, {"LEVEL_LENGTH", LANE_LEVEL_LENGTH, NULL},
        {"TRADE_RECORD_LENGTH", LANE_TRADE_RECORD_LENGTH, NULL}, {"META_WORDS", LANE_META_WORDS, NULL},
        {"BOOK_HEADER_STRUCT", 0, LANE_BOOK_HEADER_STRUCT}, {"TRADE_STRUCT", 0, LANE_TRADE_STRUCT},
        {"META_FIELDS", 0, LANE_META_FIELDS},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        PyObject *v = spec_item(layout, "store['layout']", want[i].key);
        if (v == NULL)
            return -1;
        int same;
        if (want[i].text != NULL)
            same = PyUnicode_Check(v) && PyUnicode_CompareWithASCIIString(v, want[i].text) == 0;
        else {
            long long x = PyLong_Check(v) ? PyLong_AsLongLong(v) : -1;
            if (x == -1 && PyErr_Occurred())
                return -1;
            same = x == want[i].value;
        }
        if (!same) {
            PyErr_Format(PyExc_ValueError, "fast lane: layout %s is %R in Python but the C module was built for %s%lld "
                         "(rebuild it: setup.py build_ext --inplace)", want[i].key, v,
                         want[i].text != NULL ? want[i].text : "", want[i].text != NULL ? 0LL : want[i].value);
            return -1;
        }
    }
    return 0;
}

/* spec["chains"]: the adapter's Chain objects (mdengine/exchanges/_sequencing.py), one or LANE_MAX_CHAINS */
static int
read_chains(Lane *L, PyObject *chains)
{
    if (!PyTuple_Check(chains) || PyTuple_GET_SIZE(chains) < 1 || PyTuple_GET_SIZE(chains) > LANE_MAX_CHAINS) {
        PyErr_Format(PyExc_TypeError, "fast lane: spec['chains'] must be a tuple of 1 to %d Chain objects",
                     LANE_MAX_CHAINS);
        return -1;
    }
    L->n_chains = (int)PyTuple_GET_SIZE(chains);
    for (int i = 0; i < L->n_chains; i++) {
        PyObject *c = PyTuple_GET_ITEM(chains, i), *v;
        chain_t *r = &L->chains[i];
        const char *attrs[] = {"kind", "same_id_ok", "prev_optional"};
        int *dst[] = {&r->kind, &r->same_id_ok, &r->prev_optional};
        for (int j = 0; j < 3; j++) {
            if ((v = PyObject_GetAttrString(c, attrs[j])) == NULL) {
                PyErr_Format(PyExc_TypeError, "fast lane: chain %R has no %s", c, attrs[j]);
                return -1;
            }
            long x = j == 0 ? PyLong_AsLong(v) : PyObject_IsTrue(v);
            Py_DECREF(v);
            if (x == -1 && PyErr_Occurred())
                return -1;
            *dst[j] = (int)x;
        }
        if (r->kind != CHAIN_NEXT_ID && r->kind != CHAIN_PREV_ID) {
            PyErr_Format(PyExc_ValueError, "fast lane: chain %R is of kind %d, which the lane does not implement "
                         "(NEXT_ID = %d, PREV_ID = %d)", c, r->kind, CHAIN_NEXT_ID, CHAIN_PREV_ID);
            return -1;
        }
        L->chain_objs[i] = Py_NewRef(c);
    }
    return 0;
}

/* every member a role of this exchange needs, by the names in spec["members"] */
static int
read_members(Lane *L, PyObject *members)
{
    for (int i = 0; i < M_COUNT; i++) {
        int need = (lane_roles[i].need >> L->exchange) & 1;
        if (i == M_SYM_CHAIN)
            need = L->n_chains > 1;
        L->off[i] = -1;
        if (!need)
            continue;
        const char *owner = lane_owners[lane_roles[i].owner];
        PyObject *names = spec_item(members, "spec['members']", owner), *name;
        if (names == NULL)
            return -1;
        char what[64];
        snprintf(what, sizeof what, "spec['members']['%s']", owner);
        if ((name = spec_item(names, what, lane_roles[i].role)) == NULL)
            return -1;
        const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (s == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "fast lane: %s['%s'] must be a str", what, lane_roles[i].role);
            return -1;
        }
        if ((L->off[i] = member_offset(L->types[lane_roles[i].owner], s)) < 0)
            return -1;
    }
    return 0;
}

/* Lane(adapter, on_frame_func, spec, target_of, shm, meta, store): see fastlane.attach for the dicts.
 *   spec: exchange, routes, live, kinds ((depth, trade) for binance), chains, verdict,
 *         types {symbol, book, side, slot: class}, members {symbol, book, side, slot: {role: member name}}
 *   store: generation, capacity, depth, state_live, flag_truncated, flag_crossed, side_buy, side_sell, side_unknown,
 *          counter_book_updates, counter_trades (segment byte offsets), layout {see check_layout} */
static int
Lane_init(Lane *L, PyObject *args, PyObject *kw)
{
    PyObject *adapter, *func, *spec, *target_of, *shm, *meta, *store, *v;
    if (L->adapter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "a Lane is initialised once");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "OOO!OOOO!:Lane", &adapter, &func, &PyDict_Type, &spec, &target_of, &shm, &meta,
                          &PyDict_Type, &store))
        return -1;
    for (int i = 0; i < 4; i++) /* from an earlier call that was refused */
        Py_CLEAR(L->types[i]);
    for (int i = 0; i < LANE_MAX_CHAINS; i++)
        Py_CLEAR(L->chain_objs[i]);
    PyObject *exchange = spec_item(spec, "spec", "exchange");
    if (exchange == NULL)
        return -1;
    static const char *const exchanges[] = {NULL, "binance", "okx", "bybit", "bitget"};
    L->exchange = 0;
    for (int i = LANE_BINANCE; i <= LANE_BITGET; i++)
        if (PyUnicode_Check(exchange) && PyUnicode_CompareWithASCIIString(exchange, exchanges[i]) == 0)
            L->exchange = i;
    if (L->exchange == 0) {
        PyErr_Format(PyExc_ValueError, "fast lane: no decoder for exchange %R", exchange);
        return -1;
    }
    PyObject *routes = spec_item(spec, "spec", "routes"), *live = spec_item(spec, "spec", "live");
    PyObject *kinds = spec_item(spec, "spec", "kinds"), *verdict = spec_item(spec, "spec", "verdict");
    PyObject *types = spec_item(spec, "spec", "types"), *members = spec_item(spec, "spec", "members");
    PyObject *chains = spec_item(spec, "spec", "chains"), *layout = spec_item(store, "store", "layout");
    if (routes == NULL || live == NULL || kinds == NULL || verdict == NULL || types == NULL || members == NULL ||
        chains == NULL || layout == NULL)
        return -1;
    if (!PyDict_Check(routes)) {
        PyErr_SetString(PyExc_TypeError, "fast lane: spec['routes'] must be a dict");
        return -1;
    }
    if (L->exchange == LANE_BINANCE && (!PyTuple_Check(kinds) || PyTuple_GET_SIZE(kinds) != 2)) {
        PyErr_SetString(PyExc_TypeError, "fast lane: spec['kinds'] is (depth kind, trade kind) for binance");
        return -1;
    }
    if (check_layout(layout) < 0)
        return -1;
    for (int i = 0; i < 4; i++) {
        if ((v = spec_item(types, "spec['types']", lane_owners[i])) == NULL)
            return -1;
        if (!PyType_Check(v)) {
            PyErr_Format(PyExc_TypeError, "fast lane: spec['types']['%s'] must be a class", lane_owners[i]);
            return -1;
        }
        L->types[i] = Py_NewRef(v);
    }
    if (read_chains(L, chains) < 0 || read_members(L, members) < 0)
        return -1;
    static const char *const names[] = {"generation", "capacity", "depth", "state_live", "flag_truncated",
                                        "flag_crossed", "side_buy", "side_sell", "side_unknown"};
    int64_t *dst[] = {&L->generation, &L->capacity, &L->depth, &L->state_live, &L->flag_truncated, &L->flag_crossed,
                      &L->side_buy, &L->side_sell, &L->side_unknown};
    for (int i = 0; i < 9; i++)
        if (spec_i64(store, "store", names[i], dst[i]) < 0)
            return -1;
    int64_t seg_book_updates, seg_trades;
    if (spec_i64(store, "store", "counter_book_updates", &seg_book_updates) < 0 ||
        spec_i64(store, "store", "counter_trades", &seg_trades) < 0)
        return -1;
    L->seg_book_updates = (Py_ssize_t)seg_book_updates;
    L->seg_trades = (Py_ssize_t)seg_trades;
    if (L->depth < 0 || L->depth > L->capacity) {
        PyErr_SetString(PyExc_ValueError, "fast lane: depth must be within the segment's book capacity");
        return -1;
    }
    if (PyObject_GetBuffer(shm, &L->shm, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(meta, &L->meta, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&L->shm);
        return -1;
    }
    L->open = 1;
    if (L->seg_book_updates < 0 || L->seg_book_updates + 8 > L->shm.len || L->seg_trades < 0 ||
        L->seg_trades + 8 > L->shm.len || (L->seg_book_updates | L->seg_trades) % 8 ||
        L->meta.len % (LANE_META_WORDS * 8)) {
        lane_release(L);
        PyErr_SetString(PyExc_ValueError, "fast lane: counter offsets outside the segment");
        return -1;
    }
    L->adapter = Py_NewRef(adapter);
    L->on_frame_func = Py_NewRef(func);
    L->routes = Py_NewRef(routes);
    L->live = Py_NewRef(live);
    L->verdict = Py_NewRef(verdict);
    L->target_of = Py_NewRef(target_of);
    L->shm_obj = Py_NewRef(shm);
    L->meta_obj = Py_NewRef(meta);
    if (L->exchange == LANE_BINANCE) {
        L->depth_kind = Py_NewRef(PyTuple_GET_ITEM(kinds, 0));
        L->trade_kind = Py_NewRef(PyTuple_GET_ITEM(kinds, 1));
    }
    return (L->targets = PyDict_New()) == NULL ? -1 : 0;
}

static PyMethodDef Lane_methods[] = {
    {"on_frame", (PyCFunction)(void (*)(void))Lane_on_frame, METH_FASTCALL,
     "on_frame(conn, data, recv_ns): the adapter's on_frame, with routine frames handled in C."},
    {"forget", (PyCFunction)Lane_forget, METH_NOARGS, "Drop every cached symbol target (slots changed)."},
    {"close", (PyCFunction)Lane_close, METH_NOARGS, "Release the segment; every frame goes to the adapter after."},
    {"stats", (PyCFunction)Lane_stats, METH_NOARGS, "{'handled': n, 'declined': n} frames so far."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lane_members[] = {
    {"last_handled", T_INT, offsetof(Lane, last_handled), READONLY,
     "1 when the newest frame was handled by the lane, 0 when it went to the adapter."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdengine._speedups.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The feed's fast lane (see mdengine/feed/fastlane.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_clear,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
};
