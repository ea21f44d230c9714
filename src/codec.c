/*
 * codec.c - records <-> msgpack and JSON values <-> msgpack (codec.h;
 * docs/format.md, "Records").  All keys are msgpack str, in this order:
 *   assertion:  {type:"assertion", id:str24, lsn:uint, timestamp:int (us),
 *                concept_path:str, predicate:str, value:any,
 *                confidence:float64, authority_tier:str, [source:str],
 *                [derived_from:[str24...] (non-empty)]}
 *   retraction: {type:"retraction", id, lsn, timestamp,
 *                target:{id:str24 | concept_path:str, subtree:bool;
 *                        [predicate:str]}, reason:str, cascade:bool,
 *                retracted:[uint...]}
 * Encodings are canonical (msgpack-c's smallest forms, float64 always); the
 * decoder re-encodes and rejects anything else, so one record has one byte
 * form.  Decoding trusts nothing: a bounded pre-scan caps every declared
 * length by the bytes present before msgpack-c allocates anything.
 * Value depth: the value is level 1, a container's elements are one level
 * deeper, and elements may go no deeper than SDB_MAX_VALUE_DEPTH, so at
 * most 31 containers nest; with the record map that is msgpack-c's stack
 * limit (MSGPACK_EMBED_STACK_SIZE, 32).  No I/O here.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

#define CORRUPT(err, field, ...)                                               \
    sdb_error_set((err), SDB_ECORRUPT, (field), __VA_ARGS__)

/* Open msgpack containers msgpack-c can hold (its MSGPACK_EMBED_STACK_SIZE). */
#define SCAN_MAX_OPEN 32

/* ---- JSON values ---- */

static int clamp_depth(int depth)
{
    return depth < 1 ? 1 : depth;
}

static int pk_rc(int msgpack_rc)
{
    return msgpack_rc == 0 ? 0 : SDB_ENOMEM;
}

static int pack_container(msgpack_packer *pk, const json_t *v, int depth)
{
    json_t *obj = (json_t *)v; /* jansson iterators are not const */
    const char *key;
    size_t klen;
    json_t *child;
    int rc;

    if (json_is_array(v)) {
        rc = pk_rc(msgpack_pack_array(pk, json_array_size(v)));
        for (size_t i = 0; rc == 0 && i < json_array_size(v); i++)
            rc = sdb_value_pack(pk, json_array_get(v, i), depth + 1);
        return rc;
    }
    rc = pk_rc(msgpack_pack_map(pk, json_object_size(v)));
    json_object_keylen_foreach(obj, key, klen, child)
    {
        if (rc == 0)
            rc = pk_rc(msgpack_pack_str_with_body(pk, key, klen));
        if (rc == 0)
            rc = sdb_value_pack(pk, child, depth + 1);
    }
    return rc;
}

int sdb_value_pack(msgpack_packer *pk, const json_t *v, int depth)
{
    depth = clamp_depth(depth);
    if (v == NULL || depth > SDB_MAX_VALUE_DEPTH)
        return SDB_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        if (depth >= SDB_MAX_VALUE_DEPTH)
            return SDB_EINVAL;
        return pack_container(pk, v, depth);
    case JSON_STRING:
        return pk_rc(msgpack_pack_str_with_body(pk, json_string_value(v),
                                                json_string_length(v)));
    case JSON_INTEGER:
        return pk_rc(msgpack_pack_int64(pk, json_integer_value(v)));
    case JSON_REAL:
        return pk_rc(msgpack_pack_double(pk, json_real_value(v)));
    case JSON_TRUE:
        return pk_rc(msgpack_pack_true(pk));
    case JSON_FALSE:
        return pk_rc(msgpack_pack_false(pk));
    case JSON_NULL:
        return pk_rc(msgpack_pack_nil(pk));
    }
    return SDB_EINVAL;
}

/* Header bytes msgpack-c writes for a str of len, or a container of n. */
static int64_t str_head(size_t len)
{
    return len < 32 ? 1 : len < 256 ? 2 : len < 65536 ? 3 : 5;
}

static int64_t container_head(size_t n)
{
    return n < 16 ? 1 : n < 65536 ? 3 : 5;
}

static int64_t int_size(json_int_t i)
{
    if (i >= 0)
        return i < 128                    ? 1
               : i < 256                  ? 2
               : i < 65536                ? 3
               : i <= INT64_C(0xFFFFFFFF) ? 5
                                          : 9;
    return i >= -32         ? 1
           : i >= -128      ? 2
           : i >= -32768    ? 3
           : i >= INT32_MIN ? 5
                            : 9;
}

static int64_t value_size(const json_t *v, int depth);

static int64_t container_size(const json_t *v, int depth)
{
    json_t *obj = (json_t *)v;
    const char *key;
    size_t klen;
    json_t *child;
    int64_t total, part;

    if (json_is_array(v)) {
        total = container_head(json_array_size(v));
        for (size_t i = 0; i < json_array_size(v); i++) {
            part = value_size(json_array_get(v, i), depth + 1);
            if (part < 0)
                return part;
            total += part;
        }
        return total;
    }
    total = container_head(json_object_size(v));
    json_object_keylen_foreach(obj, key, klen, child)
    {
        part = value_size(child, depth + 1);
        if (part < 0)
            return part;
        total += str_head(klen) + (int64_t)klen + part;
    }
    return total;
}

static int64_t value_size(const json_t *v, int depth)
{
    if (v == NULL)
        return SDB_EINVAL;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
    case JSON_ARRAY:
        return depth >= SDB_MAX_VALUE_DEPTH ? SDB_EINVAL
                                            : container_size(v, depth);
    case JSON_STRING:
        return str_head(json_string_length(v)) + (int64_t)json_string_length(v);
    case JSON_INTEGER:
        return int_size(json_integer_value(v));
    case JSON_REAL:
        return 9;
    default:
        return 1;
    }
}

int64_t sdb_value_packed_size(const json_t *v)
{
    return value_size(v, 1);
}

/* msgpack-c may leave the pointer of an empty str NULL; jansson wants "". */
static const char *str_ptr(const msgpack_object *o)
{
    return o->via.str.size == 0 ? "" : o->via.str.ptr;
}

static json_t *unpack_map(const msgpack_object_map *m, int depth)
{
    json_t *obj = json_object();

    for (uint32_t i = 0; obj != NULL && i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        json_t *child;

        if (k->type != MSGPACK_OBJECT_STR ||
            json_object_getn(obj, str_ptr(k), k->via.str.size) != NULL) {
            json_decref(obj); /* not a string, or a duplicate key */
            return NULL;
        }
        child = sdb_value_unpack(&m->ptr[i].val, depth + 1);
        if (child == NULL ||
            json_object_setn_new(obj, str_ptr(k), k->via.str.size, child)) {
            json_decref(obj); /* setn_new frees child on failure */
            return NULL;
        }
    }
    return obj;
}

static json_t *unpack_array(const msgpack_object_array *a, int depth)
{
    json_t *arr = json_array();

    for (uint32_t i = 0; arr != NULL && i < a->size; i++) {
        json_t *child = sdb_value_unpack(&a->ptr[i], depth + 1);

        if (child == NULL || json_array_append_new(arr, child) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

json_t *sdb_value_unpack(const msgpack_object *o, int depth)
{
    depth = clamp_depth(depth);
    if (o == NULL || depth > SDB_MAX_VALUE_DEPTH)
        return NULL;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 > INT64_MAX ? NULL
                                      : json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64); /* NULL for NaN and infinities */
    case MSGPACK_OBJECT_STR:
        return json_stringn(str_ptr(o), o->via.str.size); /* checks UTF-8 */
    case MSGPACK_OBJECT_ARRAY:
        return depth >= SDB_MAX_VALUE_DEPTH
                   ? NULL
                   : unpack_array(&o->via.array, depth);
    case MSGPACK_OBJECT_MAP:
        return depth >= SDB_MAX_VALUE_DEPTH ? NULL
                                            : unpack_map(&o->via.map, depth);
    default:
        return NULL; /* bin and ext have no JSON form */
    }
}

/* ---- packing records ---- */

static int pack_key(msgpack_packer *pk, const char *key)
{
    return msgpack_pack_str_with_body(pk, key, strlen(key));
}

static int pack_kstr(msgpack_packer *pk, const char *key, const char *s)
{
    return pack_key(pk, key) | msgpack_pack_str_with_body(pk, s, strlen(s));
}

static int pack_head(msgpack_packer *pk, const char *type, size_t nkeys,
                     struct sdb_id id, int64_t ts_us)
{
    char idbuf[SDB_ID_LEN + 1];

    sdb_id_format(id, idbuf);
    return msgpack_pack_map(pk, nkeys) | pack_kstr(pk, "type", type) |
           pack_kstr(pk, "id", idbuf) | pack_key(pk, "lsn") |
           msgpack_pack_uint64(pk, id.lsn) | pack_key(pk, "timestamp") |
           msgpack_pack_int64(pk, ts_us);
}

static int pack_derived(msgpack_packer *pk, const struct sdb_assertion *a)
{
    char idbuf[SDB_ID_LEN + 1];
    int bad =
        pack_key(pk, "derived_from") | msgpack_pack_array(pk, a->n_derived);

    for (size_t i = 0; i < a->n_derived; i++) {
        sdb_id_format(a->derived_from[i], idbuf);
        bad |= msgpack_pack_str_with_body(pk, idbuf, SDB_ID_LEN);
    }
    return bad;
}

static int pack_assertion(msgpack_packer *pk, const struct sdb_assertion *a)
{
    const char *tier = sdb_tier_name(a->tier);
    size_t nkeys = 9 + (a->source != NULL) + (a->n_derived > 0);
    int bad, rc;

    if (a->concept_path == NULL || a->predicate == NULL || tier == NULL ||
        (a->n_derived > 0 && a->derived_from == NULL))
        return SDB_EINVAL;
    bad = pack_head(pk, "assertion", nkeys, a->id, a->ts_us) |
          pack_kstr(pk, "concept_path", a->concept_path) |
          pack_kstr(pk, "predicate", a->predicate) | pack_key(pk, "value");
    if (a->value == NULL)
        bad |= msgpack_pack_nil(pk);
    rc = a->value == NULL ? 0 : sdb_value_pack(pk, a->value, 1);
    bad |= pack_key(pk, "confidence") | msgpack_pack_double(pk, a->confidence);
    bad |= pack_kstr(pk, "authority_tier", tier);
    if (a->source != NULL)
        bad |= pack_kstr(pk, "source", a->source);
    if (a->n_derived > 0)
        bad |= pack_derived(pk, a);
    return rc != 0 ? rc : bad ? SDB_ENOMEM : 0;
}

static int pack_target(msgpack_packer *pk, const struct sdb_retraction *r)
{
    size_t n = (r->by_id ? 1 : 2) + (r->predicate != NULL);
    int bad = pack_key(pk, "target") | msgpack_pack_map(pk, n);

    if (r->by_id) {
        char idbuf[SDB_ID_LEN + 1];

        sdb_id_format(r->target_id, idbuf);
        bad |= pack_kstr(pk, "id", idbuf);
    } else {
        bad |= pack_kstr(pk, "concept_path", r->concept_path) |
               pack_key(pk, "subtree");
        bad |= r->scope == SDB_SCOPE_SUBTREE ? msgpack_pack_true(pk)
                                             : msgpack_pack_false(pk);
    }
    if (r->predicate != NULL)
        bad |= pack_kstr(pk, "predicate", r->predicate);
    return bad;
}

static int pack_retraction(msgpack_packer *pk, const struct sdb_retraction *r)
{
    int bad;

    if (r->reason == NULL || (!r->by_id && r->concept_path == NULL) ||
        (r->n_retracted > 0 && r->retracted == NULL))
        return SDB_EINVAL;
    bad = pack_head(pk, "retraction", 8, r->id, r->ts_us) | pack_target(pk, r) |
          pack_kstr(pk, "reason", r->reason) | pack_key(pk, "cascade");
    bad |= r->cascade ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
    bad |= pack_key(pk, "retracted") | msgpack_pack_array(pk, r->n_retracted);
    for (size_t i = 0; i < r->n_retracted; i++)
        bad |= msgpack_pack_uint64(pk, r->retracted[i]);
    return bad ? SDB_ENOMEM : 0;
}

int sdb_codec_pack_assertion(msgpack_sbuffer *sb, const struct sdb_assertion *a)
{
    msgpack_packer pk;
    size_t start = sb->size;
    int rc;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    rc = pack_assertion(&pk, a);
    if (rc != 0)
        sb->size = start; /* no partial record */
    return rc;
}

int sdb_codec_pack_retraction(msgpack_sbuffer *sb,
                              const struct sdb_retraction *r)
{
    msgpack_packer pk;
    size_t start = sb->size;
    int rc;

    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    rc = pack_retraction(&pk, r);
    if (rc != 0)
        sb->size = start;
    return rc;
}

void sdb_record_release(struct sdb_record *rec)
{
    if (rec == NULL)
        return;
    sdb_assertion_release(&rec->a);
    sdb_retraction_release(&rec->r);
    rec->type = 0;
}

/* ---- bounded pre-scan ---- */

static uint64_t read_be(const uint8_t *p, int n)
{
    uint64_t v = 0;

    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

struct item {
    size_t head;   /* header bytes */
    uint64_t body; /* payload bytes (str, numbers) */
    uint64_t kids; /* child items (2 per map entry) */
    bool container;
};

/* Sized header (str8..32, array16/32, map16/32): n length bytes. */
static int sized_head(const uint8_t *p, size_t avail, int n, int kind,
                      struct item *it)
{
    uint64_t v;

    it->head = (size_t)n + 1;
    if (avail < it->head)
        return 0; /* the caller reports the truncation */
    v = read_be(p + 1, n);
    it->container = kind != 0;
    if (kind == 0)
        it->body = v;
    else
        it->kids = kind == 2 ? 2 * v : v;
    return 0;
}

/* Decode the item header at p (0 = str, 1 = array, 2 = map kinds). */
static int item_head(const uint8_t *p, size_t avail, struct item *it)
{
    /* payload bytes of float32, float64, uint8..64, int8..64 (0xca..0xd3) */
    static const uint8_t FIXED[] = {4, 8, 1, 2, 4, 8, 1, 2, 4, 8};
    uint8_t b = p[0];

    memset(it, 0, sizeof *it);
    it->head = 1;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 0;
    if ((b & 0xf0) == 0x80 || (b & 0xf0) == 0x90) {
        it->container = true;
        it->kids = (b & 0x0fu) * ((b & 0xf0) == 0x80 ? 2u : 1u);
        return 0;
    }
    if ((b & 0xe0) == 0xa0) {
        it->body = b & 0x1fu;
        return 0;
    }
    if (b >= 0xca && b <= 0xd3) {
        it->body = FIXED[b - 0xca];
        return 0;
    }
    switch (b) {
    case 0xd9:
    case 0xda:
    case 0xdb:
        return sized_head(p, avail, 1 << (b - 0xd9), 0, it);
    case 0xdc:
    case 0xdd:
        return sized_head(p, avail, b == 0xdc ? 2 : 4, 1, it);
    case 0xde:
    case 0xdf:
        return sized_head(p, avail, b == 0xde ? 2 : 4, 2, it);
    default:
        return -1; /* 0xc1, bin, ext, fixext */
    }
}

/*
 * Walk the first msgpack object of buf without allocating: every declared
 * length must fit in the bytes left, nesting must stay within msgpack-c's
 * stack, and bin/ext never appear.  *out_len gets the object's size.
 */
static int scan_object(const uint8_t *p, size_t len, size_t *out_len,
                       sdb_error *err)
{
    uint64_t left[SCAN_MAX_OPEN + 1];
    struct item it;
    size_t off = 0;
    int top = 0;

    left[0] = 1;
    while (top >= 0) {
        if (left[top] == 0) {
            top--;
            continue;
        }
        left[top]--;
        if (off >= len)
            return CORRUPT(err, "", "record is truncated");
        if (item_head(p + off, len - off, &it) < 0)
            return CORRUPT(err, "",
                           "bad or unsupported msgpack type at "
                           "byte %zu",
                           off);
        if (it.head > len - off || it.body > len - off - it.head)
            return CORRUPT(err, "", "record is truncated");
        off += it.head + (size_t)it.body;
        if (it.container && top >= SCAN_MAX_OPEN)
            return CORRUPT(err, "", "nesting is too deep at byte %zu", off);
        if (it.kids > len - off)
            return CORRUPT(err, "", "record is truncated");
        if (it.kids > 0)
            left[++top] = it.kids;
    }
    *out_len = off;
    return 0;
}

/* ---- decoding records ---- */

struct dec {
    struct sdb_record *rec;
    unsigned flags; /* SDB_UNPACK_* */
    struct sdb_id id;
    uint64_t lsn;
    int64_t ts_us;
    bool has_subtree;
};

typedef int (*dec_fn)(const msgpack_object *v, const char *field, struct dec *d,
                      sdb_error *err);

struct dec_rule {
    const char *name;
    dec_fn fn;
    bool required;
};

static bool key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);

    return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

static void field_join(char *buf, size_t cap, const char *where,
                       const char *key)
{
    snprintf(buf, cap, "%s%s%s", where, where[0] ? "." : "", key);
}

/* An unknown key, quoted when it is short printable ASCII. */
static int unknown_key(const msgpack_object *k, const char *where,
                       sdb_error *err)
{
    bool printable = k->via.str.size <= 40;

    for (uint32_t i = 0; printable && i < k->via.str.size; i++)
        printable = k->via.str.ptr[i] >= 0x20 && k->via.str.ptr[i] < 0x7f;
    if (!printable)
        return CORRUPT(err, where, "unknown key");
    return CORRUPT(err, where, "unknown key \"%.*s\"", (int)k->via.str.size,
                   k->via.str.ptr);
}

/*
 * Decode a map by rules: keys must be strings, known, and unique; every
 * required key must be present.  where is "" or the enclosing key.
 */
static int dec_map(const msgpack_object *o, const char *where,
                   const struct dec_rule *rules, size_t n, struct dec *d,
                   sdb_error *err)
{
    unsigned seen = 0;
    char field[64];
    const char *fname;
    size_t j;
    int rc = 0;

    if (o->type != MSGPACK_OBJECT_MAP)
        return CORRUPT(err, where, "must be a map");
    for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];

        if (kv->key.type != MSGPACK_OBJECT_STR)
            return CORRUPT(err, where, "has a key that is not a string");
        for (j = 0; j < n && !key_is(&kv->key, rules[j].name); j++)
            ;
        if (j == n)
            return unknown_key(&kv->key, where, err);
        /* joined names only below the top level: this is the hot path */
        fname = rules[j].name;
        if (where[0]) {
            field_join(field, sizeof field, where, rules[j].name);
            fname = field;
        }
        if (seen & (1u << j))
            return CORRUPT(err, fname, "appears twice");
        seen |= 1u << j;
        rc = rules[j].fn(&kv->val, fname, d, err);
    }
    for (j = 0; rc == 0 && j < n; j++) {
        if (rules[j].required && !(seen & (1u << j))) {
            field_join(field, sizeof field, where, rules[j].name);
            rc = CORRUPT(err, field, "is missing");
        }
    }
    return rc;
}

/* Model checks say SDB_EINVAL; in stored data that is corruption. */
static int as_corrupt(int rc, sdb_error *err)
{
    if (rc == SDB_EINVAL) {
        if (err != NULL)
            err->code = SDB_ECORRUPT;
        return SDB_ECORRUPT;
    }
    return rc;
}

static int get_str(const msgpack_object *v, const char *field, const char **s,
                   size_t *len, sdb_error *err)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return CORRUPT(err, field, "must be a string");
    if (!sdb_utf8_valid(str_ptr(v), v->via.str.size))
        return CORRUPT(err, field, "is not valid UTF-8");
    *s = str_ptr(v);
    *len = v->via.str.size;
    return 0;
}

static int copy_str(char **dst, const char *s, size_t len, const char *field,
                    sdb_error *err)
{
    char *p = malloc(len + 1);

    if (p == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    memcpy(p, s, len);
    p[len] = '\0';
    free(*dst);
    *dst = p;
    return 0;
}

/*
 * A string checked by check (a model.h validator) and copied to *dst.
 * Trusted bytes (SDB_UNPACK_TRUSTED) were checked when they were written
 * and have just passed their checksum: only the type is checked.
 */
static int
get_checked(const struct dec *d, const msgpack_object *v, const char *field,
            int (*check)(const char *, size_t, const char *, sdb_error *),
            char **dst, sdb_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int rc;

    if (d->flags & SDB_UNPACK_TRUSTED) {
        if (v->type != MSGPACK_OBJECT_STR)
            return CORRUPT(err, field, "must be a string");
        return copy_str(dst, str_ptr(v), v->via.str.size, field, err);
    }
    rc = get_str(v, field, &s, &len, err);
    if (rc == 0)
        rc = as_corrupt(check(s, len, field, err), err);
    if (rc == 0)
        rc = copy_str(dst, s, len, field, err);
    return rc;
}

static int get_id(const msgpack_object *v, const char *field,
                  struct sdb_id *out, sdb_error *err)
{
    char buf[SDB_ID_LEN + 1];

    if (v->type != MSGPACK_OBJECT_STR || v->via.str.size != SDB_ID_LEN)
        return CORRUPT(err, field, "must be a 24-digit id");
    memcpy(buf, v->via.str.ptr, SDB_ID_LEN);
    buf[SDB_ID_LEN] = '\0';
    if (sdb_id_parse(buf, out) != 0)
        return CORRUPT(err, field, "must be a 24-digit id");
    return 0;
}

/* A positive integer that fits int64 (LSNs). */
static int get_lsn(const msgpack_object *v, const char *field, uint64_t *out,
                   sdb_error *err)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 == 0 ||
        v->via.u64 > INT64_MAX)
        return CORRUPT(err, field, "must be an integer in 1..2^63-1");
    *out = v->via.u64;
    return 0;
}

static int get_bool(const msgpack_object *v, const char *field, bool *out,
                    sdb_error *err)
{
    if (v->type != MSGPACK_OBJECT_BOOLEAN)
        return CORRUPT(err, field, "must be a boolean");
    *out = v->via.boolean;
    return 0;
}

static int d_type(const msgpack_object *v, const char *field, struct dec *d,
                  sdb_error *err)
{
    const char *want =
        d->rec->type == SDB_REC_ASSERTION ? "assertion" : "retraction";

    if (v->type != MSGPACK_OBJECT_STR || !key_is(v, want))
        return CORRUPT(err, field, "must be \"%s\"", want);
    return 0;
}

static int d_id(const msgpack_object *v, const char *field, struct dec *d,
                sdb_error *err)
{
    return get_id(v, field, &d->id, err);
}

static int d_lsn(const msgpack_object *v, const char *field, struct dec *d,
                 sdb_error *err)
{
    return get_lsn(v, field, &d->lsn, err);
}

static int d_timestamp(const msgpack_object *v, const char *field,
                       struct dec *d, sdb_error *err)
{
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d->ts_us = v->via.i64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
             v->via.u64 <= INT64_MAX)
        d->ts_us = (int64_t)v->via.u64;
    else
        return CORRUPT(err, field, "must be a 64-bit signed integer");
    return 0;
}

static int d_concept_path(const msgpack_object *v, const char *field,
                          struct dec *d, sdb_error *err)
{
    return get_checked(d, v, field, sdb_concept_path_check,
                       &d->rec->a.concept_path, err);
}

static int d_predicate(const msgpack_object *v, const char *field,
                       struct dec *d, sdb_error *err)
{
    return get_checked(d, v, field, sdb_predicate_check, &d->rec->a.predicate,
                       err);
}

static int d_value(const msgpack_object *v, const char *field, struct dec *d,
                   sdb_error *err)
{
    struct sdb_assertion *a = &d->rec->a;

    if (d->flags & SDB_UNPACK_NO_VALUE)
        return 0;
    json_decref(a->value);
    a->value = sdb_value_unpack(v, 1);
    if (a->value == NULL)
        return CORRUPT(err, field, "is not a representable JSON value");
    if (sdb_value_packed_size(a->value) > SDB_MAX_VALUE_BYTES)
        return CORRUPT(err, field, "exceeds %d bytes", SDB_MAX_VALUE_BYTES);
    return 0;
}

static int d_confidence(const msgpack_object *v, const char *field,
                        struct dec *d, sdb_error *err)
{
    if (v->type != MSGPACK_OBJECT_FLOAT64 || !isfinite(v->via.f64) ||
        v->via.f64 < 0.0 || v->via.f64 > 1.0)
        return CORRUPT(err, field, "must be a float64 in [0, 1]");
    d->rec->a.confidence = v->via.f64;
    return 0;
}

static int d_tier(const msgpack_object *v, const char *field, struct dec *d,
                  sdb_error *err)
{
    char buf[16];
    int tier = -1;

    if (v->type == MSGPACK_OBJECT_STR && v->via.str.size < sizeof buf) {
        memcpy(buf, str_ptr(v), v->via.str.size);
        buf[v->via.str.size] = '\0';
        tier = sdb_tier_parse(buf);
    }
    if (tier < 0)
        return CORRUPT(err, field, "is not an authority tier");
    d->rec->a.tier = tier;
    return 0;
}

static int d_source(const msgpack_object *v, const char *field, struct dec *d,
                    sdb_error *err)
{
    return get_checked(d, v, field, sdb_concept_path_check, &d->rec->a.source,
                       err);
}

static int d_derived_from(const msgpack_object *v, const char *field,
                          struct dec *d, sdb_error *err)
{
    struct sdb_assertion *a = &d->rec->a;
    int rc = 0;

    if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0 ||
        v->via.array.size > SDB_MAX_DERIVED)
        return CORRUPT(err, field, "must be an array of 1..%d ids",
                       SDB_MAX_DERIVED);
    a->derived_from = calloc(v->via.array.size, sizeof *a->derived_from);
    if (a->derived_from == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    a->n_derived = v->via.array.size;
    for (uint32_t i = 0; rc == 0 && i < v->via.array.size; i++)
        rc = get_id(&v->via.array.ptr[i], field, &a->derived_from[i], err);
    return rc;
}

static int t_id(const msgpack_object *v, const char *field, struct dec *d,
                sdb_error *err)
{
    d->rec->r.by_id = true;
    return get_id(v, field, &d->rec->r.target_id, err);
}

static int t_concept_path(const msgpack_object *v, const char *field,
                          struct dec *d, sdb_error *err)
{
    return get_checked(d, v, field, sdb_concept_path_check,
                       &d->rec->r.concept_path, err);
}

static int t_subtree(const msgpack_object *v, const char *field, struct dec *d,
                     sdb_error *err)
{
    bool subtree = false;
    int rc = get_bool(v, field, &subtree, err);

    d->has_subtree = true;
    d->rec->r.scope = subtree ? SDB_SCOPE_SUBTREE : SDB_SCOPE_EXACT;
    return rc;
}

static int t_predicate(const msgpack_object *v, const char *field,
                       struct dec *d, sdb_error *err)
{
    return get_checked(d, v, field, sdb_predicate_check, &d->rec->r.predicate,
                       err);
}

static const struct dec_rule TARGET_RULES[] = {
    {"id", t_id, false},
    {"concept_path", t_concept_path, false},
    {"subtree", t_subtree, false},
    {"predicate", t_predicate, false},
};

static int d_target(const msgpack_object *v, const char *field, struct dec *d,
                    sdb_error *err)
{
    struct sdb_retraction *r = &d->rec->r;
    int rc = dec_map(v, field, TARGET_RULES,
                     sizeof TARGET_RULES / sizeof TARGET_RULES[0], d, err);

    if (rc == 0 && r->by_id == (r->concept_path != NULL))
        rc = CORRUPT(err, field, "must name exactly one of id, concept_path");
    if (rc == 0 && r->by_id == d->has_subtree)
        rc = CORRUPT(err, field, "subtree goes with concept_path only");
    return rc;
}

static int d_reason(const msgpack_object *v, const char *field, struct dec *d,
                    sdb_error *err)
{
    return get_checked(d, v, field, sdb_reason_check, &d->rec->r.reason, err);
}

static int d_cascade(const msgpack_object *v, const char *field, struct dec *d,
                     sdb_error *err)
{
    return get_bool(v, field, &d->rec->r.cascade, err);
}

static int d_retracted(const msgpack_object *v, const char *field,
                       struct dec *d, sdb_error *err)
{
    struct sdb_retraction *r = &d->rec->r;
    uint32_t n = v->via.array.size;
    int rc = 0;

    if (v->type != MSGPACK_OBJECT_ARRAY)
        return CORRUPT(err, field, "must be an array of LSNs");
    if (n == 0)
        return 0;
    r->retracted = calloc(n, sizeof *r->retracted); /* n <= record bytes */
    if (r->retracted == NULL)
        return sdb_error_set(err, SDB_ENOMEM, field, "out of memory");
    r->n_retracted = n;
    for (uint32_t i = 0; rc == 0 && i < n; i++)
        rc = get_lsn(&v->via.array.ptr[i], field, &r->retracted[i], err);
    return rc;
}

static const struct dec_rule ASSERTION_RULES[] = {
    {"type", d_type, true},
    {"id", d_id, true},
    {"lsn", d_lsn, true},
    {"timestamp", d_timestamp, true},
    {"concept_path", d_concept_path, true},
    {"predicate", d_predicate, true},
    {"value", d_value, true},
    {"confidence", d_confidence, true},
    {"authority_tier", d_tier, true},
    {"source", d_source, false},
    {"derived_from", d_derived_from, false},
};

static const struct dec_rule RETRACTION_RULES[] = {
    {"type", d_type, true},       {"id", d_id, true},
    {"lsn", d_lsn, true},         {"timestamp", d_timestamp, true},
    {"target", d_target, true},   {"reason", d_reason, true},
    {"cascade", d_cascade, true}, {"retracted", d_retracted, true},
};

/* The record type named by the map's "type" key, or 0. */
static int record_type(const msgpack_object *o)
{
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];

        if (kv->key.type != MSGPACK_OBJECT_STR || !key_is(&kv->key, "type") ||
            kv->val.type != MSGPACK_OBJECT_STR)
            continue;
        if (key_is(&kv->val, "assertion"))
            return SDB_REC_ASSERTION;
        if (key_is(&kv->val, "retraction"))
            return SDB_REC_RETRACTION;
    }
    return 0;
}

static int decode_record(const msgpack_object *o, struct sdb_record *rec,
                         unsigned flags, sdb_error *err)
{
    struct dec d = {.rec = rec, .flags = flags};
    int rc;

    if (o->type != MSGPACK_OBJECT_MAP)
        return CORRUPT(err, "", "record is not a map");
    rec->type = record_type(o);
    if (rec->type == SDB_REC_ASSERTION)
        rc = dec_map(o, "", ASSERTION_RULES,
                     sizeof ASSERTION_RULES / sizeof ASSERTION_RULES[0], &d,
                     err);
    else if (rec->type == SDB_REC_RETRACTION)
        rc = dec_map(o, "", RETRACTION_RULES,
                     sizeof RETRACTION_RULES / sizeof RETRACTION_RULES[0], &d,
                     err);
    else
        rc = CORRUPT(err, "type", "is missing or unknown");
    if (rc == 0 && d.id.lsn != d.lsn)
        rc = CORRUPT(err, "id", "does not carry the record's lsn");
    if (rc == 0 && rec->type == SDB_REC_ASSERTION)
        rec->a.id = d.id, rec->a.ts_us = d.ts_us;
    if (rc == 0 && rec->type == SDB_REC_RETRACTION)
        rec->r.id = d.id, rec->r.ts_us = d.ts_us;
    return rc;
}

/* One record, one byte form: re-encode and compare. */
static int check_canonical(const void *buf, size_t len,
                           const struct sdb_record *rec, sdb_error *err)
{
    msgpack_sbuffer sb;
    int rc;

    msgpack_sbuffer_init(&sb);
    rc = rec->type == SDB_REC_ASSERTION
             ? sdb_codec_pack_assertion(&sb, &rec->a)
             : sdb_codec_pack_retraction(&sb, &rec->r);
    if (rc == 0 && (sb.size != len || memcmp(sb.data, buf, len) != 0))
        rc = CORRUPT(err, "", "record is not in canonical form");
    else if (rc != 0 && rc != SDB_ENOMEM)
        rc = CORRUPT(err, "", "record cannot be re-encoded");
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/*
 * One msgpack zone per thread, cleared after each record, so decoding does
 * not allocate and free a zone per record (msgpack_unpack_next does).
 */
static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static bool zone_key_ok;

static void zone_free(void *z)
{
    msgpack_zone_free(z);
}

static void zone_key_init(void)
{
    zone_key_ok = pthread_key_create(&zone_key, zone_free) == 0;
}

static msgpack_zone *thread_zone(void)
{
    msgpack_zone *z;

    pthread_once(&zone_once, zone_key_init);
    if (!zone_key_ok)
        return NULL;
    z = pthread_getspecific(zone_key);
    if (z == NULL) {
        z = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        if (z != NULL && pthread_setspecific(zone_key, z) != 0) {
            msgpack_zone_free(z);
            z = NULL;
        }
    }
    return z;
}

int sdb_codec_unpack(const void *buf, size_t len, size_t *used,
                     struct sdb_record *out, sdb_error *err)
{
    return sdb_codec_unpack_ex(buf, len, used, out, err, 0);
}

int sdb_codec_unpack_ex(const void *buf, size_t len, size_t *used,
                        struct sdb_record *out, sdb_error *err, unsigned flags)
{
    msgpack_zone *zone;
    msgpack_object obj;
    msgpack_unpack_return ur;
    size_t n = 0, off = 0;
    int rc;

    memset(out, 0, sizeof *out);
    if (used != NULL)
        *used = 0;
    if (buf == NULL)
        return CORRUPT(err, "", "record is truncated");
    rc = scan_object(buf, len, &n, err);
    if (rc != 0)
        return rc;
    zone = thread_zone();
    if (zone == NULL)
        return sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    ur = msgpack_unpack(buf, n, &off, zone, &obj);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        rc = sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    else if (ur != MSGPACK_UNPACK_SUCCESS || off != n)
        rc = CORRUPT(err, "", "record is not valid msgpack");
    if (rc == 0)
        rc = decode_record(&obj, out, flags, err);
    if (rc == 0 && !(flags & SDB_UNPACK_TRUSTED))
        rc = check_canonical(buf, n, out, err);
    msgpack_zone_clear(zone);
    if (rc != 0)
        goto release;
    if (used != NULL)
        *used = n;
    return 0;

release:
    sdb_record_release(out);
    return rc;
}

/* ---- the API's JSON form ---- */

static json_t *derived_to_json(const struct sdb_assertion *a)
{
    json_t *arr = json_array();
    char idbuf[SDB_ID_LEN + 1];

    for (size_t i = 0; arr != NULL && i < a->n_derived; i++) {
        sdb_id_format(a->derived_from[i], idbuf);
        if (json_array_append_new(arr, json_string(idbuf)) != 0) {
            json_decref(arr);
            arr = NULL;
        }
    }
    return arr;
}

json_t *sdb_assertion_to_json(const struct sdb_assertion *a)
{
    char idbuf[SDB_ID_LEN + 1], ts[32];
    json_t *o = json_object();
    int bad;

    if (o == NULL)
        return NULL;
    sdb_id_format(a->id, idbuf);
    sdb_time_format(a->ts_us, ts);
    bad = json_object_set_new(o, "id", json_string(idbuf)) |
          json_object_set_new(o, "concept_path", json_string(a->concept_path)) |
          json_object_set_new(o, "predicate", json_string(a->predicate)) |
          json_object_set_new(o, "value",
                              a->value ? json_incref(a->value) : json_null()) |
          json_object_set_new(o, "confidence", json_real(a->confidence)) |
          json_object_set_new(o, "authority_tier",
                              json_string(sdb_tier_name(a->tier))) |
          json_object_set_new(
              o, "source", a->source ? json_string(a->source) : json_null()) |
          json_object_set_new(o, "derived_from", derived_to_json(a)) |
          json_object_set_new(o, "timestamp", json_string(ts)) |
          json_object_set_new(o, "lsn", json_integer((json_int_t)a->id.lsn));
    if (bad) {
        json_decref(o);
        o = NULL;
    }
    return o;
}
