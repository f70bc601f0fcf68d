/* mdengine._speedups: the feed's per-frame book work in C, on the same Python containers as book.py.
 *
 * Optional: setup.py builds it when a C compiler is there, and mdengine/book.py falls back to its pure-Python
 * code (same results, tested side by side) when it is missing or MDENGINE_NO_SPEEDUPS=1. Every function
 * mirrors one in book.py, whose docstrings are the specification:
 *
 *   side_update(keys, qty, raw, is_bid, levels, watch) -> bool      BookSide.update
 *   side_replace(levels, sign) -> (keys, qty, raw)                  BookSide.replace
 *   pack_top(dst, offset, bid_keys, bid_qty, ask_keys, ask_qty, n)  LocalBook.pack_top (flat_top, packed)
 *   checksum(bid_raw, ask_raw, depth) -> int                        LocalBook.checksum
 *   latch_publish(shm, staging, offsets, length, header...) -> ns   SegmentWriter._write_latched (store)
 *   ring_append(shm, offsets, mask, trades) -> int                  SegmentWriter.append_trades (store)
 *   record_columns(batch) -> (kinds, urls, stamps, lens, blob)      record_writer.encode_batch's columns
 *   tap_queue(maxlen) -> TapQueue (.tap, .take, len)                recorder._TapQueue
 *   depth_snapshot(body) -> (last_id, E, bid side, ask side) | None book.parse_depth_snapshot (Binance REST)
 *   limits() -> (PRICE_MAX, QTY_MAX)                               mdengine.limits, as read at load
 *
 * A side is three aligned lists, best level first: keys (floats, ascending: -price for bids, price for asks),
 * quantities (floats) and "price:qty" strings exactly as received (what OKX's and Bitget's checksums cover).
 * Levels are sequences whose first two items are the price and quantity (str, or anything float() takes).
 * Errors are the ones the Python code raises (ValueError, TypeError, IndexError), so the adapters' handling of
 * bad input is the same on both paths. Only latch_publish and ring_append write shared memory, with the
 * protocols of docs/layout.md, store for store as the Python writer does it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "_scan.h"

/* The layout numbers this module (latch_store, ring_store, write_top) and the lane (_lane.h) are written for
   (mdengine/store/layout.py); the Lane refuses to start unless store["layout"] says the same, and the module
   exports them as LAYOUT (tests/test_fastlane.py checks them against layout.py). */
#define LANE_BOOK_HEADER_LENGTH 64
#define LANE_LEVEL_LENGTH 32
#define LANE_TRADE_RECORD_LENGTH 64
#define LANE_META_WORDS 8
#define LANE_BOOK_HEADER_STRUCT "<qqqqIIIIqq"
#define LANE_TRADE_STRUCT "<qqddqbB6xq8x"
#define LANE_META_FIELDS "published version update_id exch_ts_ns recv_ts_ns n_bids n_asks flags"

#if !PY_LITTLE_ENDIAN
#error "the store's layout is little-endian, and this module writes it with native stores"
#endif

/* float(o), as the Python code does it. A plain decimal ("60000.5", "0.00120") is parsed in place; a few
   more ASCII forms ("1e-3") by PyOS_string_to_double; anything else (whitespace, underscores, "inf", non-str)
   by float()'s own code, so the results and errors are float()'s. */
static int
as_double(PyObject *o, double *out)
{
    if (PyFloat_CheckExact(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 0;
    }
    if (PyUnicode_CheckExact(o) && PyUnicode_IS_COMPACT_ASCII(o)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        const char *p = (const char *)PyUnicode_1BYTE_DATA(o);
        if (plain_decimal(p, n, out))
            return 0;
        int plain = n > 0 && n < 64;
        for (Py_ssize_t i = 0; plain && i < n; i++) {
            char c = p[i];
            plain = (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+';
        }
        if (plain) {
            char *end;
            double v = PyOS_string_to_double(p, &end, NULL);
            if (end == p + n && !(v == -1.0 && PyErr_Occurred())) {
                *out = v;
                return 0;
            }
            PyErr_Clear();  /* not a whole number after all ("1e", "--1"): let float() say so */
        }
    }
    PyObject *f = PyUnicode_Check(o) ? PyFloat_FromString(o) : PyNumber_Float(o);
    if (f == NULL)
        return -1;
    *out = PyFloat_AS_DOUBLE(f);
    Py_DECREF(f);
    return 0;
}

/* a level's price and quantity as doubles, refused unless they obey mdengine.limits' rule (NaN fails it too) */
static int
level_numbers(PyObject *px, PyObject *qs, double *p, double *q)
{
    if (as_double(qs, q) < 0 || as_double(px, p) < 0)
        return -1;
    if (!sane_numbers(*p, *q)) {
        PyErr_Format(PyExc_ValueError, "a book level of %R at %R is not a valid price and quantity", qs, px);
        return -1;
    }
    return 0;
}

/* new references to lv[0] and lv[1] */
static int
level_items(PyObject *lv, PyObject **px, PyObject **qty)
{
    if (PyList_CheckExact(lv) || PyTuple_CheckExact(lv)) {
        if (PySequence_Fast_GET_SIZE(lv) < 2) {
            PyErr_Format(PyExc_IndexError, "a book level needs a price and a quantity, got %R", lv);
            return -1;
        }
        *px = Py_NewRef(PySequence_Fast_GET_ITEM(lv, 0));
        *qty = Py_NewRef(PySequence_Fast_GET_ITEM(lv, 1));
        return 0;
    }
    *px = PySequence_GetItem(lv, 0);
    if (*px == NULL)
        return -1;
    *qty = PySequence_GetItem(lv, 1);
    if (*qty == NULL) {
        Py_CLEAR(*px);
        return -1;
    }
    return 0;
}

/* px + ":" + qty, as book.py keeps it (TypeError unless both are str) */
static PyObject *
raw_string(PyObject *px, PyObject *qty)
{
    if (!PyUnicode_Check(px) || !PyUnicode_Check(qty)) {
        PyErr_Format(PyExc_TypeError, "can only keep str prices and quantities, got %.50s and %.50s",
                     Py_TYPE(px)->tp_name, Py_TYPE(qty)->tp_name);
        return NULL;
    }
    if (PyUnicode_IS_ASCII(px) && PyUnicode_IS_ASCII(qty)) {
        Py_ssize_t a = PyUnicode_GET_LENGTH(px), b = PyUnicode_GET_LENGTH(qty);
        PyObject *s = PyUnicode_New(a + 1 + b, 127);
        if (s == NULL)
            return NULL;
        Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
        memcpy(d, PyUnicode_1BYTE_DATA(px), a);
        d[a] = ':';
        memcpy(d + a + 1, PyUnicode_1BYTE_DATA(qty), b);
        return s;
    }
    PyObject *head = PyUnicode_FromFormat("%U:", px);
    if (head == NULL)
        return NULL;
    PyObject *s = PyUnicode_Concat(head, qty);
    Py_DECREF(head);
    return s;
}

/* a scanned level's "px:qty", its wire string as book.py keeps it (ASCII: scan_decimal accepted both) */
static PyObject *
level_raw(const level_t *lv)
{
    PyObject *s = PyUnicode_New(lv->px.n + 1 + lv->qty.n, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    memcpy(d, lv->px.s, lv->px.n);
    d[lv->px.n] = ':';
    memcpy(d + lv->px.n + 1, lv->qty.s, lv->qty.n);
    return s;
}


/* bisect_left over a list of floats */
static Py_ssize_t
bisect_keys(PyObject *keys, double k)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    PyObject **items = ((PyListObject *)keys)->ob_item;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) >> 1;
        PyObject *v = items[mid];
        if (!PyFloat_Check(v)) {
            PyErr_Format(PyExc_TypeError, "book keys must be floats, found %.50s", Py_TYPE(v)->tp_name);
            return -1;
        }
        if (PyFloat_AS_DOUBLE(v) < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* three lists of one length (raw may be NULL: not needed) */
static int
check_side(PyObject *keys, PyObject *qty, PyObject *raw)
{
    if (!PyList_Check(keys) || !PyList_Check(qty) || (raw != NULL && !PyList_Check(raw))) {
        PyErr_SetString(PyExc_TypeError, "a book side is three lists: keys, quantities, wire strings");
        return -1;
    }
    if (PyList_GET_SIZE(keys) != PyList_GET_SIZE(qty) || (raw != NULL && PyList_GET_SIZE(raw) != PyList_GET_SIZE(keys))) {
        PyErr_SetString(PyExc_ValueError, "a book side's keys, quantities and strings differ in length");
        return -1;
    }
    return 0;
}

/* one level change at key k to quantity q (0 removes it), `s` its wire string (unused when q is 0);
   *touched set when it is at or above `limit` */
static int
place_level(PyObject *keys, PyObject *qtys, PyObject *raws, double k, double q, PyObject *s, double limit,
            int *touched)
{
    PyObject *kobj = NULL, *qobj = NULL;
    int rc = -1;
    Py_ssize_t i = bisect_keys(keys, k);
    if (i < 0)
        goto done;
    int found = 0;
    if (i < PyList_GET_SIZE(keys)) {
        PyObject *at = PyList_GET_ITEM(keys, i);
        if (!PyFloat_Check(at)) {
            PyErr_SetString(PyExc_TypeError, "book keys must be floats");
            goto done;
        }
        found = PyFloat_AS_DOUBLE(at) == k;
    }
    if (q == 0.0) {
        if (found) {
            if (PyList_SetSlice(keys, i, i + 1, NULL) < 0 || PyList_SetSlice(qtys, i, i + 1, NULL) < 0 ||
                PyList_SetSlice(raws, i, i + 1, NULL) < 0)
                goto done;
            if (k <= limit)
                *touched = 1;
        }
        rc = 0;
        goto done;
    }
    if ((qobj = PyFloat_FromDouble(q)) == NULL)
        goto done;
    if (found) {
        if (PyList_SetItem(qtys, i, Py_NewRef(qobj)) < 0 || PyList_SetItem(raws, i, Py_NewRef(s)) < 0)
            goto done;
    }
    else if ((kobj = PyFloat_FromDouble(k)) == NULL || PyList_Insert(keys, i, kobj) < 0 ||
             PyList_Insert(qtys, i, qobj) < 0 || PyList_Insert(raws, i, s) < 0)
        goto done;
    if (k <= limit)
        *touched = 1;
    rc = 0;
done:
    Py_XDECREF(kobj);
    Py_XDECREF(qobj);
    return rc;
}

/* one level change given as a Python level ([price, qty, ...]) */
static int
apply_level(PyObject *keys, PyObject *qtys, PyObject *raws, int bid, PyObject *lv, double limit, int *touched)
{
    PyObject *px, *qs, *s = NULL;
    int rc = -1;
    double q, p;
    if (level_items(lv, &px, &qs) < 0)
        return -1;
    if (level_numbers(px, qs, &p, &q) == 0 && (q == 0.0 || (s = raw_string(px, qs)) != NULL))
        rc = place_level(keys, qtys, raws, bid ? -p : p, q, s, limit, touched);
    Py_XDECREF(s);
    Py_DECREF(px);
    Py_DECREF(qs);
    return rc;
}

static PyObject *
side_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "side_update(keys, qty, raw, is_bid, levels, watch)");
        return NULL;
    }
    PyObject *keys = args[0], *qtys = args[1], *raws = args[2], *levels = args[4];
    if (check_side(keys, qtys, raws) < 0)
        return NULL;
    int bid = PyObject_IsTrue(args[3]);
    Py_ssize_t watch = PyLong_AsSsize_t(args[5]);
    if (bid < 0 || (watch == -1 && PyErr_Occurred()))
        return NULL;
    /* a change beyond the watch-th best key cannot move the top `watch` levels (see BookSide.update) */
    double limit = INFINITY;
    if (watch > 0 && watch <= PyList_GET_SIZE(keys)) {
        PyObject *v = PyList_GET_ITEM(keys, watch - 1);
        if (!PyFloat_Check(v)) {
            PyErr_SetString(PyExc_TypeError, "book keys must be floats");
            return NULL;
        }
        limit = PyFloat_AS_DOUBLE(v);
    }
    int touched = 0;
    PyObject *it = PyObject_GetIter(levels), *lv;
    if (it == NULL)
        return NULL;
    while ((lv = PyIter_Next(it)) != NULL) {
        int r = apply_level(keys, qtys, raws, bid, lv, limit, &touched);
        Py_DECREF(lv);
        if (r < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(touched);
}

/* a snapshot level: sorted by key, then by arrival, so a price sent twice keeps its last quantity */
typedef struct {
    double key, qty;
    Py_ssize_t order;
    PyObject *raw;
} snap_level;

static int
snap_cmp(const void *a, const void *b)
{
    const snap_level *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static PyObject *
side_replace(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "side_replace(levels, sign)");
        return NULL;
    }
    double sign = PyFloat_AsDouble(args[1]);
    if (sign == -1.0 && PyErr_Occurred())
        return NULL;
    /* a tuple of its own: float() of a level may run Python code (a __float__), which could change a list */
    PyObject *seq = PySequence_Tuple(args[0]);
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq), m = 0;
    PyObject *keys = NULL, *qtys = NULL, *raws = NULL, *out = NULL;
    snap_level *lv = PyMem_Malloc((n ? n : 1) * sizeof(snap_level));
    if (lv == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *px, *qs;
        double q, p;
        if (level_items(PyTuple_GET_ITEM(seq, i), &px, &qs) < 0)
            goto done;
        /* a zero quantity is skipped before its price is read, as book.py does */
        int ok = as_double(qs, &q) == 0;
        if (ok && q != 0.0) {
            ok = level_numbers(px, qs, &p, &q) == 0 && (lv[m].raw = raw_string(px, qs)) != NULL;
            if (ok) {
                lv[m].key = sign < 0 ? -p : p;
                lv[m].qty = q;
                lv[m].order = i;
                m++;
            }
        }
        Py_DECREF(px);
        Py_DECREF(qs);
        if (!ok)
            goto done;
    }
    qsort(lv, m, sizeof(snap_level), snap_cmp);
    Py_ssize_t uniq = 0;
    for (Py_ssize_t i = 0; i < m; i++)
        uniq += i == 0 || lv[i].key != lv[i - 1].key;
    if ((keys = PyList_New(uniq)) == NULL || (qtys = PyList_New(uniq)) == NULL || (raws = PyList_New(uniq)) == NULL)
        goto done;
    for (Py_ssize_t i = 0, j = 0; i < m; j++) {
        Py_ssize_t last = i;  /* the run of one price: key as first sent (as a dict keeps it), the rest as last */
        while (last + 1 < m && lv[last + 1].key == lv[i].key)
            last++;
        PyObject *k = PyFloat_FromDouble(lv[i].key), *q = PyFloat_FromDouble(lv[last].qty);
        if (k == NULL || q == NULL) {
            Py_XDECREF(k);
            Py_XDECREF(q);
            goto done;
        }
        PyList_SET_ITEM(keys, j, k);
        PyList_SET_ITEM(qtys, j, q);
        PyList_SET_ITEM(raws, j, Py_NewRef(lv[last].raw));
        i = last + 1;
    }
    out = PyTuple_Pack(3, keys, qtys, raws);
done:
    if (lv != NULL)
        for (Py_ssize_t i = 0; i < m; i++)
            Py_DECREF(lv[i].raw);
    PyMem_Free(lv);
    Py_DECREF(seq);
    Py_XDECREF(keys);
    Py_XDECREF(qtys);
    Py_XDECREF(raws);
    return out;
}

/* the side's i-th (price, qty) as doubles; price = -key for bids */
static int
side_level(PyObject *keys, PyObject *qtys, Py_ssize_t i, int bid, double *px, double *qty)
{
    PyObject *k = PyList_GET_ITEM(keys, i), *q = PyList_GET_ITEM(qtys, i);
    if (!PyFloat_Check(k) || !PyFloat_Check(q)) {
        PyErr_SetString(PyExc_TypeError, "book keys and quantities must be floats");
        return -1;
    }
    *px = bid ? -PyFloat_AS_DOUBLE(k) : PyFloat_AS_DOUBLE(k);
    *qty = PyFloat_AS_DOUBLE(q);
    return 0;
}

/* The best n levels per side in the store's level layout at d, `room` bytes: [bid_px, bid_qty, ask_px, ask_qty]
   little-endian doubles a row, NaN/0 where a side has no level. Sets *nb, *na; -1 with an exception set when
   the rows do not fit or a side holds something other than floats. */
static int
write_top(unsigned char *d, Py_ssize_t room, PyObject *bk, PyObject *bq, PyObject *ak, PyObject *aq, Py_ssize_t n,
          Py_ssize_t *nb, Py_ssize_t *na)
{
    Py_ssize_t b = PyList_GET_SIZE(bk), a = PyList_GET_SIZE(ak);
    b = b < n ? b : n;
    a = a < n ? a : n;
    Py_ssize_t rows = b > a ? b : a;
    if (rows * LANE_LEVEL_LENGTH > room) {
        PyErr_Format(PyExc_ValueError, "pack_top: %zd levels do not fit %zd bytes", rows, room);
        return -1;
    }
    for (Py_ssize_t i = 0; i < rows; i++, d += LANE_LEVEL_LENGTH) {
        double row[4] = {NAN, 0.0, NAN, 0.0};
        if ((i < b && side_level(bk, bq, i, 1, &row[0], &row[1]) < 0) ||
            (i < a && side_level(ak, aq, i, 0, &row[2], &row[3]) < 0))
            return -1;
        memcpy(d, row, LANE_LEVEL_LENGTH);
    }
    *nb = b;
    *na = a;
    return 0;
}

static PyObject *
pack_top(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "pack_top(dst, offset, bid_keys, bid_qty, ask_keys, ask_qty, n)");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]), n = PyLong_AsSsize_t(args[6]);
    if ((offset == -1 || n == -1) && PyErr_Occurred())
        return NULL;
    if (check_side(args[2], args[3], NULL) < 0 || check_side(args[4], args[5], NULL) < 0)
        return NULL;
    if (n < 0 || offset < 0) {
        PyErr_SetString(PyExc_ValueError, "pack_top: negative offset or depth");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t nb, na;
    if (offset > view.len) {
        PyErr_Format(PyExc_ValueError, "pack_top: offset %zd is past %zd bytes", offset, view.len);
    }
    else if (write_top((unsigned char *)view.buf + offset, view.len - offset, args[2], args[3], args[4], args[5], n,
                       &nb, &na) == 0)
        out = Py_BuildValue("(nn)", nb, na);
    PyBuffer_Release(&view);
    return out;
}

/* CRC-32 (IEEE 802.3, as zlib.crc32 and crcmod's "crc-32"), eight bytes a step ("slicing-by-8") */
static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int j = 0; j < 8; j++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (uint32_t i = 0; i < 256; i++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t
crc_update(uint32_t c, const unsigned char *p, Py_ssize_t n)
{
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
            crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

/* crc of the UTF-8 bytes of one "price:qty" string (and the ":" before it unless first) */
static int
crc_raw(uint32_t *c, int *first, PyObject *s)
{
    Py_ssize_t len;
    const char *b = PyUnicode_Check(s) ? PyUnicode_AsUTF8AndSize(s, &len) : NULL;
    if (b == NULL) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_TypeError, "a level's wire string must be str, got %.50s", Py_TYPE(s)->tp_name);
        return -1;
    }
    if (!*first)
        *c = crc_update(*c, (const unsigned char *)":", 1);
    *first = 0;
    *c = crc_update(*c, (const unsigned char *)b, len);
    return 0;
}

/* LocalBook.checksum over the sides' lists of wire strings, as a signed 32-bit value in *out */
static int
crc_sides(PyObject *br, PyObject *ar, Py_ssize_t depth, int64_t *out)
{
    /* raw[:depth], as a Python slice */
    Py_ssize_t nb = PyList_GET_SIZE(br), na = PyList_GET_SIZE(ar);
    Py_ssize_t db = depth < 0 ? nb + depth : depth, da = depth < 0 ? na + depth : depth;
    nb = db < 0 ? 0 : nb < db ? nb : db;
    na = da < 0 ? 0 : na < da ? na : da;
    /* bid1:ask1:bid2:ask2:... then what is left of the longer side */
    uint32_t c = 0xFFFFFFFFu;
    int first = 1;
    Py_ssize_t both = nb < na ? nb : na;
    for (Py_ssize_t i = 0; i < both; i++) {
        if (crc_raw(&c, &first, PyList_GET_ITEM(br, i)) < 0 || crc_raw(&c, &first, PyList_GET_ITEM(ar, i)) < 0)
            return -1;
    }
    for (Py_ssize_t i = both; i < nb; i++)
        if (crc_raw(&c, &first, PyList_GET_ITEM(br, i)) < 0)
            return -1;
    for (Py_ssize_t i = both; i < na; i++)
        if (crc_raw(&c, &first, PyList_GET_ITEM(ar, i)) < 0)
            return -1;
    c ^= 0xFFFFFFFFu;
    *out = c >= 0x80000000u ? (int64_t)c - 0x100000000LL : (int64_t)c;
    return 0;
}

static PyObject *
checksum(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "checksum(bid_raw, ask_raw, depth)");
        return NULL;
    }
    PyObject *br = args[0], *ar = args[1];
    Py_ssize_t depth = PyLong_AsSsize_t(args[2]);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_Check(br) || !PyList_Check(ar)) {
        PyErr_SetString(PyExc_TypeError, "checksum takes the sides' lists of wire strings");
        return NULL;
    }
    int64_t c;
    return crc_sides(br, ar, depth, &c) < 0 ? NULL : PyLong_FromLongLong(c);
}

/* the n byte offsets of `t`, a tuple of n ints (fn names the caller in the error) */
static int
read_offsets(PyObject *t, Py_ssize_t *off, Py_ssize_t n, const char *fn)
{
    if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != n) {
        PyErr_Format(PyExc_TypeError, "%s: offsets is a tuple of %zd ints", fn, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        off[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(t, i));
        if (off[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

/* Stamp the header "<qqqqIIIIqq" (layout.BOOK_HEADER_STRUCT: update_id, exch_ts, recv_ts, publish time, n_bids,
 * n_asks, state, flags, generation, version) into the staging copy, then copy `length` bytes of it through the
 * two-copy latch at base + off[...] (see latch_publish for the offsets). Returns the publish time (ns). */
static int64_t
latch_store(unsigned char *base, const Py_ssize_t off[6], unsigned char *stage, Py_ssize_t length,
            const long long h[3], const uint32_t q4[4], int64_t generation, int64_t version)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t pub = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    int64_t q8[4] = {h[0], h[1], h[2], pub};
    int64_t tail[2] = {generation, version};
    memcpy(stage, q8, 32);
    memcpy(stage + 32, q4, 16);
    memcpy(stage + 48, tail, 16);
    int64_t *seq = (int64_t *)(base + off[0]);
    int64_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);
    __atomic_store_n(seq, s + 1, __ATOMIC_RELAXED);  /* odd: readers use copy 1 while copy 0 is rewritten */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(base + off[1], stage, length);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(seq, s + 2, __ATOMIC_RELAXED);  /* even: readers use copy 0 while copy 1 catches up */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(base + off[2], stage, length);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    int64_t *counter = (int64_t *)(base + off[3]);
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    if (h[2]) {
        __atomic_store_n((int64_t *)(base + off[4]), pub - h[2], __ATOMIC_RELAXED);
        __atomic_store_n((int64_t *)(base + off[5]), pub - h[2], __ATOMIC_RELAXED);
    }
    return pub;
}

/* SegmentWriter._write_latched: stamp the header into the staging copy, then the two-copy latch (docs/layout.md).
 * offsets = (seq, copy0, copy1, publish_counter, slot_last_latency, last_latency), byte offsets into shm of
 * 8-byte-aligned words (copies: of the slot's book copies). The stores happen in the Python writer's order;
 * the fences keep the compiler (and a weakly ordered CPU) from moving the copies across the counter stores. */
static PyObject *
latch_publish(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 13) {
        PyErr_SetString(PyExc_TypeError, "latch_publish(shm, staging, offsets, length, update_id, exch_ts_ns, "
                                         "recv_ts_ns, n_bids, n_asks, state, flags, generation, version)");
        return NULL;
    }
    Py_ssize_t off[6];
    if (read_offsets(args[2], off, 6, "latch_publish") < 0)
        return NULL;
    Py_ssize_t length = PyLong_AsSsize_t(args[3]);
    long long h[3];
    unsigned long u[4];
    for (int i = 0; i < 3; i++) {
        h[i] = PyLong_AsLongLong(args[4 + i]);
        if (h[i] == -1 && PyErr_Occurred())
            return NULL;
    }
    for (int i = 0; i < 4; i++) {
        u[i] = PyLong_AsUnsignedLong(args[7 + i]);
        if (u[i] == (unsigned long)-1 && PyErr_Occurred())
            return NULL;
        if (u[i] > 0xFFFFFFFFul) {
            PyErr_SetString(PyExc_OverflowError, "latch_publish: a uint32 header field is too large");
            return NULL;
        }
    }
    long long generation = PyLong_AsLongLong(args[11]), version = PyLong_AsLongLong(args[12]);
    if ((length == -1 || generation == -1 || version == -1) && PyErr_Occurred())
        return NULL;
    Py_buffer mem, stage;
    if (PyObject_GetBuffer(args[0], &mem, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &stage, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&mem);
        return NULL;
    }
    PyObject *out = NULL;
    if (length < LANE_BOOK_HEADER_LENGTH || length > stage.len || off[1] < 0 || off[2] < 0 || off[1] + length > mem.len ||
        off[2] + length > mem.len) {
        PyErr_Format(PyExc_ValueError, "latch_publish: %zd bytes do not fit the staging copy or the segment", length);
        goto done;
    }
    for (int i = 0; i < 6; i++) {
        if ((i != 1 && i != 2) && (off[i] < 0 || off[i] + 8 > mem.len || off[i] % 8)) {
            PyErr_Format(PyExc_ValueError, "latch_publish: word offset %zd is outside the segment", off[i]);
            goto done;
        }
    }
    uint32_t q4[4] = {(uint32_t)u[0], (uint32_t)u[1], (uint32_t)u[2], (uint32_t)u[3]};
    out = PyLong_FromLongLong(latch_store(mem.buf, off, stage.buf, length, h, q4, generation, version));
done:
    PyBuffer_Release(&stage);
    PyBuffer_Release(&mem);
    return out;
}

/* one trade record, "<qqddqbB6xq8x" (layout.TRADE_STRUCT): what the tuple says, before any store is made */
typedef struct {
    int64_t exch_ts, recv_ts;
    double price, qty;
    int64_t trade_id;
    int8_t side;
    uint8_t flags;
} trade_rec;

static int
read_trade(PyObject *trade, trade_rec *r)
{
    PyObject *t = PyTuple_Check(trade) ? Py_NewRef(trade) : PySequence_Tuple(trade);
    if (t == NULL)
        return -1;
    if (PyTuple_GET_SIZE(t) != 7) {
        PyErr_Format(PyExc_TypeError, "a trade has 7 fields, got %R", trade);
        Py_DECREF(t);
        return -1;
    }
    long side, flags;
    r->exch_ts = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 0));
    r->recv_ts = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 1));
    r->price = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 2));
    r->qty = PyFloat_AsDouble(PyTuple_GET_ITEM(t, 3));
    r->trade_id = PyLong_AsLongLong(PyTuple_GET_ITEM(t, 4));
    side = PyLong_AsLong(PyTuple_GET_ITEM(t, 5));
    flags = PyLong_AsLong(PyTuple_GET_ITEM(t, 6));
    Py_DECREF(t);
    if (PyErr_Occurred())
        return -1;
    if (side < -128 || side > 127 || flags < 0 || flags > 255) {
        PyErr_Format(PyExc_OverflowError, "trade side %ld or flags %ld out of range", side, flags);
        return -1;
    }
    r->side = (int8_t)side;
    r->flags = (uint8_t)flags;
    return 0;
}

/* The ring's stores for `n_write` records (the newest of a batch whose `skipped` oldest are never written): off =
 * (tail_intent, tail, first record, publish_counter); tail_intent first, then the records, then tail. */
static void
ring_store(unsigned char *base, const Py_ssize_t off[4], Py_ssize_t mask, const trade_rec *recs, Py_ssize_t n_write,
           Py_ssize_t skipped)
{
    int64_t *intent = (int64_t *)(base + off[0]), *tail = (int64_t *)(base + off[1]);
    int64_t n = __atomic_load_n(tail, __ATOMIC_RELAXED) + skipped;
    __atomic_store_n(intent, n + n_write, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (Py_ssize_t j = 0; j < n_write; j++) {
        int64_t idx = n + j;
        unsigned char rec[LANE_TRADE_RECORD_LENGTH] = {0};
        memcpy(rec, &recs[j].exch_ts, 8);
        memcpy(rec + 8, &recs[j].recv_ts, 8);
        memcpy(rec + 16, &recs[j].price, 8);
        memcpy(rec + 24, &recs[j].qty, 8);
        memcpy(rec + 32, &recs[j].trade_id, 8);
        memcpy(rec + 40, &recs[j].side, 1);
        memcpy(rec + 41, &recs[j].flags, 1);
        memcpy(rec + 48, &idx, 8);
        memcpy(base + off[2] + (idx & mask) * LANE_TRADE_RECORD_LENGTH, rec, LANE_TRADE_RECORD_LENGTH);
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(tail, n + n_write, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    int64_t *counter = (int64_t *)(base + off[3]);
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* SegmentWriter.append_trades: offsets = (tail_intent, tail, first record, publish_counter), byte offsets into
 * shm; mask = capacity - 1. tail_intent first, then the records, then tail (docs/layout.md, trade ring). A batch
 * larger than the ring writes its newest `capacity` trades and moves past the others (readers count them lost).
 * Every trade is read before the first store, so a bad one leaves the ring untouched. */
static PyObject *
ring_append(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "ring_append(shm, offsets, mask, trades)");
        return NULL;
    }
    Py_ssize_t off[4];
    if (read_offsets(args[1], off, 4, "ring_append") < 0)
        return NULL;
    Py_ssize_t mask = PyLong_AsSsize_t(args[2]);
    if (mask == -1 && PyErr_Occurred())
        return NULL;
    if (mask < 0 || (mask & (mask + 1))) {
        PyErr_SetString(PyExc_ValueError, "ring_append: mask must be a power of two minus one");
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(args[3]);  /* its own: reading a trade may run Python code (__index__) */
    if (seq == NULL)
        return NULL;
    Py_ssize_t m = PyTuple_GET_SIZE(seq), cap = mask + 1;
    Py_ssize_t skipped = m > cap ? m - cap : 0, n_write = m - skipped;
    trade_rec *recs = PyMem_Malloc((n_write ? n_write : 1) * sizeof(trade_rec));
    PyObject *out = NULL;
    Py_buffer mem;
    mem.obj = NULL;
    if (recs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < n_write; j++)
        if (read_trade(PyTuple_GET_ITEM(seq, skipped + j), &recs[j]) < 0)
            goto done;
    if (n_write == 0) {
        out = PyLong_FromLong(0);
        goto done;
    }
    if (PyObject_GetBuffer(args[0], &mem, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0)
        goto done;
    for (int i = 0; i < 4; i++) {
        if (off[i] < 0 || off[i] % 8 || off[i] + (i == 2 ? cap * LANE_TRADE_RECORD_LENGTH : 8) > mem.len) {
            PyErr_Format(PyExc_ValueError, "ring_append: offset %zd is outside the segment", off[i]);
            goto done;
        }
    }
    ring_store(mem.buf, off, mask, recs, n_write, skipped);
    out = PyLong_FromSsize_t(n_write);
done:
    if (mem.obj != NULL)
        PyBuffer_Release(&mem);
    PyMem_Free(recs);
    Py_DECREF(seq);
    return out;
}

/* n texts, items[0], items[stride], ...: ASCII str (copied as is) or bytes (already UTF-8), joined into one bytes
   object of `total` bytes */
static PyObject *
join_texts(PyObject *const *items, Py_ssize_t stride, Py_ssize_t n, Py_ssize_t total)
{
    PyObject *blob = PyBytes_FromStringAndSize(NULL, total);
    if (blob == NULL)
        return NULL;
    char *d = PyBytes_AS_STRING(blob);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *x = items[i * stride];
        if (PyUnicode_Check(x)) {
            memcpy(d, PyUnicode_1BYTE_DATA(x), PyUnicode_GET_LENGTH(x));
            d += PyUnicode_GET_LENGTH(x);
        }
        else {
            memcpy(d, PyBytes_AS_STRING(x), PyBytes_GET_SIZE(x));
            d += PyBytes_GET_SIZE(x);
        }
    }
    return blob;
}

/* The column-wise form of a recorder batch [(kind, url, data: str, ns: int), ...] (record_writer.encode_batch):
 * kinds and urls as tuples, the stamps and the texts' lengths (in code points) as native int64 arrays, and the
 * texts joined and UTF-8 encoded with "surrogatepass". TypeError, ValueError or OverflowError when the batch
 * has another shape (bytes or None data, a float stamp): the caller then marshals it as it is. */
static PyObject *
record_columns(PyObject *self, PyObject *arg)
{
    PyObject *batch = PySequence_Tuple(arg);
    if (batch == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(batch), total = 0;
    PyObject *kinds = PyTuple_New(n), *urls = PyTuple_New(n), *enc = PyTuple_New(n), *out = NULL;
    PyObject *stamps = PyBytes_FromStringAndSize(NULL, n * 8), *lens = PyBytes_FromStringAndSize(NULL, n * 8);
    PyObject *blob = NULL;
    if (kinds == NULL || urls == NULL || enc == NULL || stamps == NULL || lens == NULL)
        goto done;
    int64_t *st = (int64_t *)PyBytes_AS_STRING(stamps), *ln = (int64_t *)PyBytes_AS_STRING(lens);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyTuple_GET_ITEM(batch, i);
        if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 4) {
            PyErr_SetString(PyExc_ValueError, "a batch entry is (kind, url, data, ns)");
            goto done;
        }
        PyObject *data = PyTuple_GET_ITEM(e, 2);
        if (!PyUnicode_Check(data)) {
            PyErr_SetString(PyExc_TypeError, "column-wise batches carry str data only");
            goto done;
        }
        long long ns = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 3));
        if (ns == -1 && PyErr_Occurred())
            goto done;
        PyTuple_SET_ITEM(kinds, i, Py_NewRef(PyTuple_GET_ITEM(e, 0)));
        PyTuple_SET_ITEM(urls, i, Py_NewRef(PyTuple_GET_ITEM(e, 1)));
        st[i] = ns;
        ln[i] = PyUnicode_GET_LENGTH(data);
        if (PyUnicode_IS_ASCII(data)) {
            PyTuple_SET_ITEM(enc, i, Py_NewRef(data));
            total += PyUnicode_GET_LENGTH(data);
        }
        else {
            PyObject *b = PyUnicode_AsEncodedString(data, "utf-8", "surrogatepass");
            if (b == NULL)
                goto done;
            PyTuple_SET_ITEM(enc, i, b);
            total += PyBytes_GET_SIZE(b);
        }
    }
    if ((blob = join_texts(&PyTuple_GET_ITEM(enc, 0), 1, n, total)) == NULL)
        goto done;
    out = PyTuple_Pack(5, kinds, urls, stamps, lens, blob);
done:
    Py_DECREF(batch);
    Py_XDECREF(kinds);
    Py_XDECREF(urls);
    Py_XDECREF(enc);
    Py_XDECREF(stamps);
    Py_XDECREF(lens);
    Py_XDECREF(blob);
    return out;
}

#include <structmember.h>  /* T_LONGLONG, READONLY: TapQueue's members */

/* ---- The recorder's tap queue: recorder.Recorder.tap, the whole of recording that the feed thread runs.
 * A bounded FIFO of (kind, url, data, ns) entries, four references per slot of a ring that grows by doubling up
 * to `maxlen` (nothing is allocated for a queue that stays short). tap() never raises on its values: on a full
 * queue it evicts the oldest entry, counted in `overflow`; `tapped` counts every call. take(max, columns=True)
 * removes up to `max` of the oldest entries and returns them, when `columns` is true and every one is plain
 * (kind and url exact str, data str, ns an exact int within int64), as record_columns' 5-tuple, else as a list
 * of (kind, url, data, ns) tuples. The entries leave the ring before anything else is done with them, and an
 * evicted entry's references are released only once the ring is consistent again: a deallocation that runs
 * Python code (which may tap) always sees a valid queue. Should take() fail (no memory), what it removed is
 * counted in `overflow`, so every tapped entry stays accounted for. The recorder.py twin is _TapQueue. */
typedef struct {
    PyObject_HEAD
    PyObject **slot;  /* 4 references per entry: kind, url, data, ns */
    Py_ssize_t cap, maxlen, head, count;
    long long tapped, overflow;
} TapQueue;

static int
tq_grow(TapQueue *q)
{
    Py_ssize_t cap = q->cap ? (q->cap > q->maxlen / 2 ? q->maxlen : q->cap * 2)
                            : (q->maxlen < 1024 ? q->maxlen : 1024);
    if ((size_t)cap > PY_SSIZE_T_MAX / (4 * sizeof(PyObject *)))
        return -1;
    PyObject **s = PyMem_Malloc((size_t)cap * 4 * sizeof(PyObject *));
    if (s == NULL)
        return -1;
    Py_ssize_t first = q->cap - q->head < q->count ? q->cap - q->head : q->count;
    if (q->count) {
        memcpy(s, q->slot + 4 * q->head, (size_t)first * 4 * sizeof(PyObject *));
        memcpy(s + 4 * first, q->slot, (size_t)(q->count - first) * 4 * sizeof(PyObject *));
    }
    PyMem_Free(q->slot);
    q->slot = s;
    q->cap = cap;
    q->head = 0;
    return 0;
}

static PyObject *
TapQueue_tap(TapQueue *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "tap() takes 4 arguments (kind, url, data, ns), %zd given", nargs);
        return NULL;
    }
    PyObject *old[4] = {NULL, NULL, NULL, NULL};
    q->tapped++;
    if (q->count == q->cap && (q->cap == q->maxlen || tq_grow(q) < 0)) {
        if (q->cap == 0) {  /* not even the first slots could be allocated: this entry is the one dropped */
            q->overflow++;
            Py_RETURN_NONE;
        }
        memcpy(old, q->slot + 4 * q->head, sizeof(old));
        if (++q->head == q->cap)
            q->head = 0;
        q->count--;
        q->overflow++;
    }
    Py_ssize_t i = q->head + q->count;
    if (i >= q->cap)
        i -= q->cap;
    PyObject **s = q->slot + 4 * i;
    for (int k = 0; k < 4; k++)
        s[k] = Py_NewRef(args[k]);
    q->count++;
    if (old[0] != NULL) {
        for (int k = 0; k < 4; k++)
            Py_DECREF(old[k]);
    }
    Py_RETURN_NONE;
}

/* record_columns' parts of n plain entries (owned references in e, all consumed). */
static PyObject *
tq_columns(PyObject **e, Py_ssize_t n)
{
    Py_ssize_t total = 0;
    PyObject *kinds = PyTuple_New(n), *urls = PyTuple_New(n), *out = NULL, *blob = NULL;
    PyObject *stamps = PyBytes_FromStringAndSize(NULL, n * 8), *lens = PyBytes_FromStringAndSize(NULL, n * 8);
    if (kinds == NULL || urls == NULL || stamps == NULL || lens == NULL)
        goto done;
    int64_t *st = (int64_t *)PyBytes_AS_STRING(stamps), *ln = (int64_t *)PyBytes_AS_STRING(lens);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject **x = e + 4 * i;
        st[i] = PyLong_AsLongLong(x[3]);  /* checked by the caller: exact int within int64 */
        ln[i] = PyUnicode_GET_LENGTH(x[2]);
        if (PyUnicode_IS_ASCII(x[2])) {
            total += ln[i];
        }
        else {  /* replaced by its UTF-8 bytes; its length in code points is already in lens */
            PyObject *b = PyUnicode_AsEncodedString(x[2], "utf-8", "surrogatepass");
            if (b == NULL)
                goto done;
            Py_SETREF(x[2], b);
            total += PyBytes_GET_SIZE(b);
        }
    }
    if ((blob = join_texts(e + 2, 4, n, total)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {  /* the tuples take the kind and url references */
        PyTuple_SET_ITEM(kinds, i, e[4 * i]);
        PyTuple_SET_ITEM(urls, i, e[4 * i + 1]);
        e[4 * i] = e[4 * i + 1] = NULL;
    }
    out = PyTuple_Pack(5, kinds, urls, stamps, lens, blob);
done:
    for (Py_ssize_t i = 0; i < 4 * n; i++)
        Py_XDECREF(e[i]);
    Py_XDECREF(kinds);
    Py_XDECREF(urls);
    Py_XDECREF(stamps);
    Py_XDECREF(lens);
    Py_XDECREF(blob);
    return out;
}

/* n entries as a list of 4-tuples (owned references in e, all consumed). */
static PyObject *
tq_tuples(PyObject **e, Py_ssize_t n)
{
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; i < n && out != NULL; i++) {
        PyObject *t = PyTuple_New(4);
        if (t == NULL) {
            Py_CLEAR(out);
            break;
        }
        for (int k = 0; k < 4; k++) {
            PyTuple_SET_ITEM(t, k, e[4 * i + k]);
            e[4 * i + k] = NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    for (Py_ssize_t i = 0; i < 4 * n; i++)
        Py_XDECREF(e[i]);
    return out;
}

static PyObject *
TapQueue_take(TapQueue *q, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "take(max, columns=True)");
        return NULL;
    }
    Py_ssize_t max = PyLong_AsSsize_t(args[0]);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    int columns = nargs > 1 ? PyObject_IsTrue(args[1]) : 1;
    if (columns < 0)
        return NULL;
    Py_ssize_t n = max < 0 ? 0 : (max < q->count ? max : q->count);
    PyObject **e = PyMem_Malloc((size_t)(n ? n : 1) * 4 * sizeof(PyObject *));
    if (e == NULL)
        return PyErr_NoMemory();
    Py_ssize_t first = q->cap - q->head < n ? q->cap - q->head : n;
    if (n) {
        memcpy(e, q->slot + 4 * q->head, (size_t)first * 4 * sizeof(PyObject *));
        memcpy(e + 4 * first, q->slot, (size_t)(n - first) * 4 * sizeof(PyObject *));
    }
    q->head += n;
    if (q->head >= q->cap)
        q->head -= q->cap;
    q->count -= n;
    if (q->count == 0)
        q->head = 0;
    /* the ring is consistent again: from here on, Python code may run */
    for (Py_ssize_t i = 0; i < n && columns; i++) {
        PyObject **x = e + 4 * i;
        int overflow = 0;
        columns = PyUnicode_CheckExact(x[0]) && PyUnicode_CheckExact(x[1]) && PyUnicode_Check(x[2])
                  && PyLong_CheckExact(x[3]) && (PyLong_AsLongLongAndOverflow(x[3], &overflow), !overflow);
    }
    PyObject *out = columns ? tq_columns(e, n) : tq_tuples(e, n);
    PyMem_Free(e);
    if (out == NULL)
        q->overflow += n;
    return out;
}

static Py_ssize_t
TapQueue_len(TapQueue *q)
{
    return q->count;
}

static int
TapQueue_traverse(TapQueue *q, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < q->count; i++) {
        Py_ssize_t j = q->head + i;
        if (j >= q->cap)
            j -= q->cap;
        for (int k = 0; k < 4; k++)
            Py_VISIT(q->slot[4 * j + k]);
    }
    return 0;
}

static int
TapQueue_clear(TapQueue *q)
{
    PyObject **s = q->slot;
    Py_ssize_t head = q->head, count = q->count, cap = q->cap;
    q->slot = NULL;
    q->cap = q->head = q->count = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t j = head + i;
        if (j >= cap)
            j -= cap;
        for (int k = 0; k < 4; k++)
            Py_DECREF(s[4 * j + k]);
    }
    PyMem_Free(s);
    return 0;
}

static void
TapQueue_dealloc(TapQueue *q)
{
    PyObject_GC_UnTrack(q);
    TapQueue_clear(q);
    PyObject_GC_Del(q);
}

static PyMethodDef TapQueue_methods[] = {
    {"tap", (PyCFunction)(void (*)(void))TapQueue_tap, METH_FASTCALL,
     "tap(kind, url, data, ns): queue one entry; a full queue evicts (and counts) its oldest."},
    {"take", (PyCFunction)(void (*)(void))TapQueue_take, METH_FASTCALL,
     "take(max, columns=True): the oldest entries, as record_columns' parts or a list of tuples."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef TapQueue_members[] = {
    {"tapped", T_LONGLONG, offsetof(TapQueue, tapped), READONLY, "tap() calls"},
    {"overflow", T_LONGLONG, offsetof(TapQueue, overflow), READONLY, "entries evicted by a full queue"},
    {"maxlen", T_PYSSIZET, offsetof(TapQueue, maxlen), READONLY, "bound of the queue"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods TapQueue_as_sequence = {.sq_length = (lenfunc)TapQueue_len};

static PyTypeObject TapQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mdengine._speedups.TapQueue",
    .tp_basicsize = sizeof(TapQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The recorder's tap queue (see tap_queue).",
    .tp_dealloc = (destructor)TapQueue_dealloc,
    .tp_traverse = (traverseproc)TapQueue_traverse,
    .tp_clear = (inquiry)TapQueue_clear,
    .tp_methods = TapQueue_methods,
    .tp_members = TapQueue_members,
    .tp_as_sequence = &TapQueue_as_sequence,
};

/* tap_queue(maxlen) -> TapQueue: a new, empty queue holding at most maxlen entries (>= 1). */
static PyObject *
tap_queue(PyObject *self, PyObject *arg)
{
    Py_ssize_t maxlen = PyLong_AsSsize_t(arg);
    if (maxlen == -1 && PyErr_Occurred())
        return NULL;
    if (maxlen < 1) {
        PyErr_SetString(PyExc_ValueError, "tap_queue: maxlen must be >= 1");
        return NULL;
    }
    if (!(TapQueueType.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&TapQueueType) < 0)
        return NULL;
    TapQueue *q = PyObject_GC_New(TapQueue, &TapQueueType);
    if (q == NULL)
        return NULL;
    q->slot = NULL;
    q->cap = q->head = q->count = 0;
    q->maxlen = maxlen;
    q->tapped = q->overflow = 0;
    PyObject_GC_Track(q);
    return (PyObject *)q;
}

/* ---- REST depth snapshots: {"lastUpdateId":N,"bids":[["px","qty"],...],"asks":[...],"E":ms,...} read straight
 * into a book's sides. The body is accepted only when orjson would parse it to the same dict (strict JSON,
 * ASCII strings without escapes, known keys at most once) and its levels are plain decimals: then what it
 * returns is exactly what orjson.loads + side_replace give. Anything else returns None, and the caller takes
 * the Python path, which reports errors as before. */

/* (keys, qty, raw) of one side, as side_replace(levels, sign) builds it. Binance sends each side best first,
 * so the keys usually arrive strictly ascending: then they are taken in order, with no sort and no merge. */
static PyObject *
snap_side(const levels_t *in, int bid)
{
    Py_ssize_t n = in->n, m = 0;
    int sorted = 1;
    double prev = -INFINITY;
    snap_level *lv = PyMem_Malloc((n ? n : 1) * sizeof(snap_level));
    PyObject *keys = NULL, *qtys = NULL, *raws = NULL, *out = NULL;
    if (lv == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        if (in->v[i].q == 0.0)  /* skipped, as side_replace does */
            continue;
        double k = bid ? -in->v[i].p : in->v[i].p;
        sorted &= m == 0 || k > prev;
        prev = k;
        lv[m].key = k;
        lv[m].qty = in->v[i].q;
        lv[m].order = i;
        lv[m].raw = NULL;
        m++;
    }
    if (!sorted)
        qsort(lv, m, sizeof(snap_level), snap_cmp);
    Py_ssize_t uniq = 0;
    for (Py_ssize_t i = 0; i < m; i++)
        uniq += i == 0 || lv[i].key != lv[i - 1].key;
    if ((keys = PyList_New(uniq)) == NULL || (qtys = PyList_New(uniq)) == NULL || (raws = PyList_New(uniq)) == NULL)
        goto done;
    for (Py_ssize_t i = 0, j = 0; i < m; j++) {
        Py_ssize_t last = i;  /* a price sent twice: the key as first sent, quantity and string as last sent */
        while (last + 1 < m && lv[last + 1].key == lv[i].key)
            last++;
        PyObject *k = PyFloat_FromDouble(lv[i].key), *q = PyFloat_FromDouble(lv[last].qty);
        PyObject *s = level_raw(&in->v[lv[last].order]);
        if (k == NULL || q == NULL || s == NULL) {
            Py_XDECREF(k);
            Py_XDECREF(q);
            Py_XDECREF(s);
            goto done;
        }
        PyList_SET_ITEM(keys, j, k);
        PyList_SET_ITEM(qtys, j, q);
        PyList_SET_ITEM(raws, j, s);
        i = last + 1;
    }
    out = PyTuple_Pack(3, keys, qtys, raws);
done:
    PyMem_Free(lv);
    Py_XDECREF(keys);
    Py_XDECREF(qtys);
    Py_XDECREF(raws);
    return out;
}

/* the parsed levels, kept from call to call (the GIL serialises the calls; no Python code runs meanwhile) */
static levels_t snap_bids, snap_asks;

static PyObject *
depth_snapshot(PyObject *self, PyObject *body)
{
    const char *p;
    Py_ssize_t n;
    if (PyBytes_CheckExact(body)) {
        p = PyBytes_AS_STRING(body);
        n = PyBytes_GET_SIZE(body);
    }
    else if (PyUnicode_CheckExact(body) && PyUnicode_IS_COMPACT_ASCII(body)) {
        p = (const char *)PyUnicode_1BYTE_DATA(body);
        n = PyUnicode_GET_LENGTH(body);
    }
    else
        Py_RETURN_NONE;
    scan_t c = {p, p + n};
    span_t key;
    int64_t last = 0, ts = 0;
    int have_last = 0, have_ts = 0, have_bids = 0, have_asks = 0;
    if (!scan_byte(&c, '{'))
        Py_RETURN_NONE;
    int more = scan_obj_first(&c);
    while (more > 0) {
        if (!scan_str(&c, &key) || !scan_byte(&c, ':'))
            Py_RETURN_NONE;
        int ok;
        /* a known key twice: orjson keeps the last value; rare enough to leave to it */
        if (span_is(key, "bids"))
            ok = !have_bids++ && scan_levels(&c, &snap_bids);
        else if (span_is(key, "asks"))
            ok = !have_asks++ && scan_levels(&c, &snap_asks);
        else if (span_is(key, "lastUpdateId"))
            ok = !have_last++ && scan_i64(&c, &last);
        else if (span_is(key, "E"))  /* an "E" that is not an integer is left to the Python path */
            ok = !have_ts++ && scan_i64(&c, &ts);
        else
            ok = scan_skip(&c);
        if (!ok)  /* (a failed PyMem_Realloc too: the Python path then meets the same shortage) */
            Py_RETURN_NONE;
        more = scan_obj_next(&c);
    }
    if (more < 0 || !scan_done(&c) || !have_last || !have_bids || !have_asks)
        Py_RETURN_NONE;
    PyObject *b = snap_side(&snap_bids, 1);
    PyObject *a = b == NULL ? NULL : snap_side(&snap_asks, 0);
    PyObject *out = NULL;
    if (a != NULL) {
        PyObject *lu = PyLong_FromLongLong(last), *e = have_ts ? PyLong_FromLongLong(ts) : Py_NewRef(Py_None);
        if (lu != NULL && e != NULL)
            out = PyTuple_Pack(4, lu, e, b, a);
        Py_XDECREF(lu);
        Py_XDECREF(e);
    }
    Py_XDECREF(b);
    Py_XDECREF(a);
    return out;
}

#include "_lane.h"

/* mdengine.limits' bounds into the statics every number check here uses (see sane_numbers): no copy of the rule */
static int
load_limits(void)
{
    PyObject *mod = PyImport_ImportModule("mdengine.limits");
    if (mod == NULL)
        return -1;
    PyObject *p = PyObject_GetAttrString(mod, "PRICE_MAX"), *q = p ? PyObject_GetAttrString(mod, "QTY_MAX") : NULL;
    Py_DECREF(mod);
    double pv = p ? PyFloat_AsDouble(p) : -1.0, qv = q ? PyFloat_AsDouble(q) : -1.0;
    Py_XDECREF(p);
    Py_XDECREF(q);
    if (PyErr_Occurred())
        return -1;
    if (!(pv > 0.0) || !(qv > 0.0)) {
        PyErr_SetString(PyExc_ValueError, "mdengine.limits: PRICE_MAX and QTY_MAX must be positive numbers");
        return -1;
    }
    limits_price_max = pv;
    limits_qty_max = qv;
    return 0;
}

static PyObject *
limits(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(dd)", limits_price_max, limits_qty_max);
}

static PyMethodDef methods[] = {
    {"side_update", (PyCFunction)(void (*)(void))side_update, METH_FASTCALL, "BookSide.update in C."},
    {"side_replace", (PyCFunction)(void (*)(void))side_replace, METH_FASTCALL, "BookSide.replace in C."},
    {"pack_top", (PyCFunction)(void (*)(void))pack_top, METH_FASTCALL, "LocalBook.pack_top in C."},
    {"checksum", (PyCFunction)(void (*)(void))checksum, METH_FASTCALL, "LocalBook.checksum in C."},
    {"latch_publish", (PyCFunction)(void (*)(void))latch_publish, METH_FASTCALL,
     "SegmentWriter._write_latched in C."},
    {"ring_append", (PyCFunction)(void (*)(void))ring_append, METH_FASTCALL, "SegmentWriter.append_trades in C."},
    {"record_columns", record_columns, METH_O, "The column-wise parts of a recorder batch."},
    {"tap_queue", tap_queue, METH_O, "The recorder's tap queue (a bounded FIFO; tap in C)."},
    {"depth_snapshot", depth_snapshot, METH_O, "A REST depth snapshot body read into two book sides."},
    {"limits", limits, METH_NOARGS, "(PRICE_MAX, QTY_MAX) as read from mdengine.limits when the module loaded."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "mdengine._speedups",
    "The feed's per-frame book work in C (optional; book.py has the same in Python).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    crc_init();
    if (load_limits() < 0)
        return NULL;
    if ((str_on_frame = PyUnicode_InternFromString("on_frame")) == NULL || PyType_Ready(&LaneType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0)
        Py_CLEAR(m);
    /* the layout numbers this module is written for (tests/test_fastlane.py compares them with store/layout.py) */
    PyObject *layout = m == NULL ? NULL : Py_BuildValue(
        "{sisisisissssss}", "BOOK_HEADER_LENGTH", LANE_BOOK_HEADER_LENGTH, "LEVEL_LENGTH", LANE_LEVEL_LENGTH,
        "TRADE_RECORD_LENGTH", LANE_TRADE_RECORD_LENGTH, "META_WORDS", LANE_META_WORDS, "BOOK_HEADER_STRUCT",
        LANE_BOOK_HEADER_STRUCT, "TRADE_STRUCT", LANE_TRADE_STRUCT, "META_FIELDS", LANE_META_FIELDS);
    if (m != NULL && (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0)) {
        Py_XDECREF(layout);
        Py_CLEAR(m);
    }
    /* the sequencing rule kinds the lane implements (mdengine/exchanges/_sequencing.py's ChainKind) */
    PyObject *kinds = m == NULL ? NULL : Py_BuildValue("{sisi}", "NEXT_ID", CHAIN_NEXT_ID, "PREV_ID", CHAIN_PREV_ID);
    if (m != NULL && (kinds == NULL || PyModule_AddObject(m, "CHAIN_KINDS", kinds) < 0)) {
        Py_XDECREF(kinds);
        Py_CLEAR(m);
    }
    return m;
}
