/*
 * db.c - opening a data directory (LOCK, metadata, recovery), the writer
 * thread (group commit: one WAL write + fdatasync per batch, then apply to
 * segments, then acknowledge), checkpoints, the archiver thread and close.
 * States and lock order are in db_int.h; the write path and recovery are
 * described in docs/architecture.md.
 */
#define _GNU_SOURCE
#include "db_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "hash.h"
#include "jsonw.h"
#include "path.h"

#define GROUP_PAYLOAD_LIMIT (64u << 20)

enum wreq_kind { WREQ_ASSERT, WREQ_RETRACT, WREQ_CHECKPOINT, WREQ_SWITCH };

struct wreq {
    int kind;
    struct sdb_assertion *as; /* WREQ_ASSERT: owned array */
    size_t n;
    bool batch;              /* the request was {"assertions":[...]} */
    struct sdb_retraction r; /* WREQ_RETRACT */
    sdb_done_fn done;
    sdb_done_text_fn done_text; /* instead of done: the result as text */
    void *arg;
    /* outcome */
    int rc;
    sdb_error err;
    json_t *result;
    struct sdb_jsonw text; /* the result when done_text is set */
    uint64_t first_lsn;
    uint32_t *rec_len; /* bytes of each packed record, in payload order */
    struct wreq *next;
};

static const double fsync_bounds[SDB_FSYNC_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01,   0.025,   0.05,   0.1,   0.25,   1e300};

const double *sdb_fsync_bucket_bounds(size_t *n)
{
    *n = SDB_FSYNC_BUCKETS;
    return fsync_bounds;
}

void sdb_db_log(const struct sdb_db *db, sdb_log_level level, const char *fmt,
                ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    char msg[1024];
    va_list ap;

    if (level > db->opt.log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (db->opt.log)
        db->opt.log(db->opt.log_arg, level, msg);
    else
        fprintf(stderr, "stemedb: %s: %s\n", names[level], msg);
}

void sdb_options_init(sdb_options *opt, const char *data_dir)
{
    memset(opt, 0, sizeof(*opt));
    opt->data_dir = data_dir;
    opt->log_level = SDB_LOG_INFO;
}

const char *sdb_db_data_dir(const sdb_db *db)
{
    return db->data_dir;
}

const char *sdb_db_wal_dir(const sdb_db *db)
{
    return db->wal_dir;
}

const char *sdb_db_db_dir(const sdb_db *db)
{
    return db->db_dir;
}

static uint64_t next_rand(struct sdb_db *db)
{
    uint64_t z = (db->rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void go_read_only(struct sdb_db *db, int rc, const char *what)
{
    if (!atomic_exchange(&db->read_only, true)) {
        atomic_store(&db->read_only_errno, sdb_err_to_errno(rc));
        sdb_db_log(db, SDB_LOG_ERROR,
                   "%s failed: %s; the store is now read-only (writes get "
                   "503, reads go on); fix the cause and restart",
                   what, sdb_strerror(rc));
    }
}

/* ---------------------------------------------------------------- */
/* the writer thread                                                 */
/* ---------------------------------------------------------------- */

static void stamp(struct sdb_db *db, struct sdb_id *id, int64_t *ts)
{
    int64_t now = sdb_now_us();

    id->lsn = db->next_lsn++;
    id->salt = (uint32_t)next_rand(db);
    *ts = now > db->last_ts ? now : db->last_ts + 1;
    db->last_ts = *ts;
}

/* One record's {"id","timestamp","lsn"} as JSON text, appended to w. */
static void commit_text(struct sdb_jsonw *w, struct sdb_id id, int64_t ts)
{
    char sid[SDB_ID_LEN + 1];

    sdb_id_format(id, sid);
    sdb_jsonw_raw(w, "{\"id\":\"", 7);
    sdb_jsonw_raw(w, sid, SDB_ID_LEN);
    sdb_jsonw_raw(w, "\",\"timestamp\":", 14);
    sdb_jsonw_time(w, ts);
    sdb_jsonw_raw(w, ",\"lsn\":", 7);
    sdb_jsonw_int(w, (int64_t)id.lsn);
    sdb_jsonw_raw(w, "}", 1);
}

/*
 * Assign LSNs, index (invisible) and pack one assert request; its result
 * goes to w->text: {id,timestamp,lsn} for one assertion,
 * {"assertions":[...],"count":N,"lsn":first} for a batch.  The text is
 * what json_dumps(JSON_COMPACT) gives for that object, NUL-terminated.
 */
static int stage_assert(struct sdb_db *db, struct wreq *w, msgpack_sbuffer *sb)
{
    struct sdb_jsonw *t = &w->text;
    int rc = 0;

    w->rec_len = calloc(w->n, sizeof(*w->rec_len));
    if (!w->rec_len)
        return SDB_ENOMEM;
    sdb_jsonw_reserve(t, 96 * w->n + 64);
    if (w->batch)
        sdb_jsonw_raw(t, "{\"assertions\":[", 15);
    w->first_lsn = db->next_lsn;
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        struct sdb_assertion *a = &w->as[i];
        size_t before = sb->size;
        uint32_t cid, known = db->ix->n_concepts;

        stamp(db, &a->id, &a->ts_us);
        rc = sdb_index_concept(db->ix, a->concept_path, true, &cid);
        /* nodes this write created exist only once it is durable */
        for (uint32_t c = known; rc == 0 && c < db->ix->n_concepts; c++)
            db->ix->concepts[c]->since_lsn = a->id.lsn;
        if (rc == 0)
            rc = sdb_codec_pack_assertion(sb, a);
        w->rec_len[i] = (uint32_t)(sb->size - before);
        if (rc == 0)
            rc = sdb_index_add(db->ix, a, cid, NULL, NULL);
        if (rc == 0) {
            if (i)
                sdb_jsonw_raw(t, ",", 1);
            commit_text(t, a->id, a->ts_us);
        }
    }
    if (rc == 0 && w->batch) {
        sdb_jsonw_raw(t, "],\"count\":", 10);
        sdb_jsonw_int(t, (int64_t)w->n);
        sdb_jsonw_raw(t, ",\"lsn\":", 7);
        sdb_jsonw_int(t, (int64_t)w->first_lsn);
        sdb_jsonw_raw(t, "}", 1);
    }
    sdb_jsonw_raw(t, "", 1); /* the NUL the callbacks are promised */
    if (!t->oom)
        t->n--;
    return rc == 0 && t->oom ? SDB_ENOMEM : rc;
}

static json_t *retract_json(struct sdb_db *db, const struct sdb_retraction *r)
{
    json_t *ids = json_array(), *res;
    char sid[SDB_ID_LEN + 1], t[32];

    for (size_t i = 0; ids && i < r->n_retracted; i++) {
        int64_t pos = sdb_index_find(db->ix, r->retracted[i]);
        struct sdb_id id = {r->retracted[i],
                            pos >= 0 ? db->ix->entries[pos].salt : 0};

        sdb_id_format(id, sid);
        json_array_append_new(ids, json_string(sid));
    }
    sdb_id_format(r->id, sid);
    sdb_time_format(r->ts_us, t);
    res = json_pack("{s:I, s:o, s:s, s:s, s:I}", "retracted",
                    (json_int_t)r->n_retracted, "ids", ids, "id", sid,
                    "timestamp", t, "lsn", (json_int_t)r->id.lsn);
    return res;
}

static int stage_retract(struct sdb_db *db, struct wreq *w, msgpack_sbuffer *sb)
{
    struct sdb_retraction *r = &w->r;
    int rc = sdb_index_resolve(db->ix, r);

    if (rc == SDB_ENOTFOUND) {
        sdb_error_set(&w->err, rc, "id", "no assertion with this id");
        return rc;
    }
    if (rc < 0)
        return rc;
    w->rec_len = calloc(1, sizeof(*w->rec_len));
    if (!w->rec_len)
        return SDB_ENOMEM;
    w->first_lsn = db->next_lsn;
    stamp(db, &r->id, &r->ts_us);
    size_t before = sb->size;
    rc = sdb_codec_pack_retraction(sb, r);
    w->rec_len[0] = (uint32_t)(sb->size - before);
    if (rc == 0)
        rc = sdb_index_add_retraction(db->ix, r, NULL);
    if (rc == 0) {
        sdb_index_apply_retraction(db->ix, r->id.lsn, r->retracted,
                                   r->n_retracted);
        w->result = retract_json(db, r);
    }
    return rc;
}

/* Append one staged record to its concept's segment; record its place. */
static int apply_assertion(struct sdb_db *db, const struct sdb_assertion *a,
                           const void *rec, size_t len)
{
    int64_t pos = sdb_index_find(db->ix, a->id.lsn);
    struct sdb_entry *e;
    struct sdb_loc loc;
    int rc;

    if (pos < 0)
        return SDB_EINVAL;
    e = &db->ix->entries[pos];
    rc = sdb_segstore_append(db->ss, &db->ix->concepts[e->concept]->seg,
                             a->id.lsn, SDB_REC_ASSERTION, rec, len, &loc);
    if (rc < 0)
        return rc;
    e->segno = (uint16_t)loc.segno;
    e->off = loc.off;
    e->len = loc.len;
    e->hash = loc.hash;
    return 0;
}

static int apply_retraction(struct sdb_db *db, const struct sdb_retraction *r,
                            const void *rec, size_t len)
{
    int64_t pos = sdb_index_find_retraction(db->ix, r->id.lsn);
    struct sdb_rentry *re;
    struct sdb_loc loc;
    int rc;

    if (pos < 0)
        return SDB_EINVAL;
    re = &db->ix->retractions[pos];
    rc = sdb_segstore_append(db->ss, &db->ix->concepts[0]->seg, r->id.lsn,
                             SDB_REC_RETRACTION, rec, len, &loc);
    if (rc < 0)
        return rc;
    re->segno = loc.segno;
    re->off = loc.off;
    re->len = loc.len;
    re->hash = loc.hash;
    return 0;
}

/* Walk the packed payload in step with the requests and apply each record. */
static int apply_batch(struct sdb_db *db, struct wreq *list,
                       const char *payload, size_t len)
{
    size_t off = 0;
    int rc = 0;

    pthread_rwlock_wrlock(&db->ix_lock);
    for (struct wreq *w = list; rc == 0 && w; w = w->next) {
        size_t n = w->kind == WREQ_ASSERT ? w->n : 1;

        if (w->rc < 0 || (w->kind != WREQ_ASSERT && w->kind != WREQ_RETRACT))
            continue;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            size_t used = w->rec_len[i];

            if (used == 0 || used > len - off) {
                rc = SDB_EINVAL;
                break;
            }
            rc = w->kind == WREQ_ASSERT
                     ? apply_assertion(db, &w->as[i], payload + off, used)
                     : apply_retraction(db, &w->r, payload + off, used);
            off += used;
        }
    }
    if (rc == 0)
        rc = sdb_segstore_flush(db->ss); /* before the group is visible */
    pthread_rwlock_unlock(&db->ix_lock);
    return rc;
}

static void record_fsync(struct sdb_db *db, uint64_t ns, uint32_t records)
{
    double s = (double)ns / 1e9;

    pthread_mutex_lock(&db->stats_lock);
    db->st.fsync_count++;
    db->st.fsync_seconds_sum += s;
    for (int i = 0; i < SDB_FSYNC_BUCKETS; i++)
        if (s <= fsync_bounds[i])
            db->st.fsync_buckets[i]++;
    db->st.group_commits++;
    db->st.group_commit_records += records;
    if (records > db->st.group_commit_max)
        db->st.group_commit_max = records;
    pthread_mutex_unlock(&db->stats_lock);
}

static void fail_request(struct wreq *w, int rc, const char *msg)
{
    if (w->rc < 0)
        return;
    w->rc = rc;
    if (!w->err.code)
        sdb_error_set(&w->err, rc, "", "%s", msg);
    json_decref(w->result);
    w->result = NULL;
    sdb_jsonw_release(&w->text);
}

/* Stage requests until the payload limit; returns the first unstaged one. */
static struct wreq *stage_batch(struct sdb_db *db, struct wreq *list,
                                msgpack_sbuffer *sb)
{
    struct wreq *w = list, *prev = NULL;

    pthread_rwlock_wrlock(&db->ix_lock);
    for (; w && sb->size < GROUP_PAYLOAD_LIMIT; prev = w, w = w->next) {
        int rc;

        if (w->kind == WREQ_ASSERT)
            rc = stage_assert(db, w, sb);
        else if (w->kind == WREQ_RETRACT)
            rc = stage_retract(db, w, sb);
        else
            continue;
        if (rc == SDB_ENOTFOUND) {
            w->rc = rc;
        } else if (rc < 0) {
            /* the index is ahead of the log now: stop taking writes */
            fail_request(w, rc, "could not stage the write");
            go_read_only(db, rc, "staging a write");
        }
    }
    pthread_rwlock_unlock(&db->ix_lock);
    if (prev)
        prev->next = NULL;
    return w;
}

static void finish(struct sdb_db *db, struct wreq *list)
{
    while (list) {
        struct wreq *next = list->next;

        /* an assertion's result is text; sdb_assert's callers get it as
         * JSON (NULL when out of memory) */
        if (list->done && list->rc == 0 && !list->result && list->text.p)
            list->result = json_loadb(list->text.p, list->text.n, 0, NULL);
        if (list->done)
            list->done(list->arg, list->rc, list->rc == 0 ? list->result : NULL,
                       list->rc == 0 ? NULL : &list->err);
        else if (list->done_text)
            list->done_text(list->arg, list->rc,
                            list->rc == 0 ? list->text.p : NULL,
                            list->rc == 0 ? list->text.n : 0,
                            list->rc == 0 ? NULL : &list->err);
        json_decref(list->result);
        sdb_jsonw_release(&list->text);
        for (size_t i = 0; i < list->n; i++)
            sdb_assertion_release(&list->as[i]);
        free(list->as);
        free(list->rec_len);
        sdb_retraction_release(&list->r);
        free(list);
        list = next;
    }
    (void)db;
}

/* One group commit: stage, one WAL write + fdatasync, apply, publish. */
static void requeue_front(struct sdb_db *db, struct wreq *rest)
{
    struct wreq *tail = rest;

    while (tail->next)
        tail = tail->next;
    pthread_mutex_lock(&db->q_lock);
    tail->next = db->q_head;
    if (!db->q_head)
        db->q_tail = tail;
    db->q_head = rest;
    pthread_mutex_unlock(&db->q_lock);
}

static void commit_group(struct sdb_db *db, struct wreq *list)
{
    struct wreq *rest;
    msgpack_sbuffer sb;
    uint64_t first = db->next_lsn, ns = 0;
    int rc = 0;

    msgpack_sbuffer_init(&sb);
    if (atomic_load(&db->read_only)) {
        for (struct wreq *w = list; w; w = w->next)
            fail_request(w, SDB_EREADONLY,
                         "the store is read-only after an "
                         "I/O failure");
        goto done;
    }
    rest = stage_batch(db, list, &sb);
    if (rest)
        requeue_front(db, rest);
    if (db->next_lsn > first && !atomic_load(&db->read_only))
        rc = sdb_wal_append(db->wal, first, (uint32_t)(db->next_lsn - first),
                            sb.data, sb.size, &ns);
    if (rc < 0 || atomic_load(&db->read_only)) {
        if (rc < 0)
            go_read_only(db, rc, "WAL write/fdatasync");
        for (struct wreq *w = list; w; w = w->next)
            fail_request(w, SDB_EREADONLY,
                         "the write could not be made durable; the store is "
                         "read-only");
        goto done;
    }
    if (db->next_lsn == first)
        goto done;
    record_fsync(db, ns, (uint32_t)(db->next_lsn - first));
    db->wal_bytes_since_ckpt += sb.size + SDB_WAL_REC_HEADER;
    rc = apply_batch(db, list, sb.data, sb.size);
    if (rc < 0)
        go_read_only(db, rc, "applying a durable batch to segment files");
    else
        atomic_store(&db->visible_lsn, db->next_lsn - 1);
done:
    msgpack_sbuffer_destroy(&sb);
}

/* Take requests off the queue: all of them, or wait until a deadline. */
static struct wreq *take_queue(struct sdb_db *db, uint64_t wait_ms)
{
    struct wreq *list;
    struct timespec until;

    pthread_mutex_lock(&db->q_lock);
    if (!db->q_head && !db->stopping && wait_ms) {
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(wait_ms / 1000);
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&db->q_cond, &db->q_lock, &until);
    }
    list = db->q_head;
    db->q_head = db->q_tail = NULL;
    pthread_mutex_unlock(&db->q_lock);
    return list;
}

int sdb_db_checkpoint_now(struct sdb_db *db);
#define do_checkpoint sdb_db_checkpoint_now
static int do_switch(struct sdb_db *db);

void sdb_db_kick_archiver(struct sdb_db *db)
{
    pthread_mutex_lock(&db->arch_lock);
    db->arch_kick = true;
    pthread_cond_signal(&db->arch_cond);
    pthread_mutex_unlock(&db->arch_lock);
}

static void run_controls(struct sdb_db *db, struct wreq *list)
{
    for (struct wreq *w = list; w; w = w->next) {
        if (w->kind == WREQ_CHECKPOINT)
            w->rc = do_checkpoint(db);
        else if (w->kind == WREQ_SWITCH)
            w->rc = do_switch(db);
        if (w->rc < 0 && !w->err.code)
            sdb_error_set(&w->err, w->rc, "", "%s", sdb_strerror(w->rc));
    }
}

static void periodic(struct sdb_db *db)
{
    unsigned timeout = db->opt.wal_segment_timeout_ms;

    if (atomic_load(&db->read_only))
        return;
    if (sdb_wal_active_age_ms(db->wal) >= timeout)
        do_switch(db);
    if (atomic_load(&db->visible_lsn) > db->meta.checkpoint_lsn &&
        (sdb_mono_ms() - db->last_ckpt_ms >= db->opt.checkpoint_interval_ms ||
         db->wal_bytes_since_ckpt >= db->opt.checkpoint_wal_bytes))
        do_checkpoint(db);
}

void *sdb_db_writer_main(void *arg)
{
    struct sdb_db *db = arg;

    for (;;) {
        struct wreq *list = take_queue(db, 200);
        bool stop;

        if (list) {
            commit_group(db, list);
            run_controls(db, list);
            finish(db, list);
        }
        periodic(db);
        pthread_mutex_lock(&db->q_lock);
        stop = db->stopping && !db->q_head;
        pthread_mutex_unlock(&db->q_lock);
        if (stop)
            break;
    }
    return NULL;
}

void *sdb_db_archiver_main(void *arg)
{
    struct sdb_db *db = arg;
    bool stop = false;

    while (!stop) {
        pthread_mutex_lock(&db->arch_lock);
        while (!db->arch_kick && !db->arch_stop)
            pthread_cond_wait(&db->arch_cond, &db->arch_lock);
        db->arch_kick = false;
        stop = db->arch_stop;
        pthread_mutex_unlock(&db->arch_lock);
        sdb_wal_archive_pending(db->wal);
    }
    return NULL;
}

/* ---------------------------------------------------------------- */
/* checkpoints                                                       */
/* ---------------------------------------------------------------- */

static void fill_meta_counts(struct sdb_db *db, uint64_t lsn)
{
    db->meta.last_lsn = lsn;
    db->meta.checkpoint_lsn = lsn;
    db->meta.assertion_count = db->ix->n_entries;
    db->meta.retraction_count = db->ix->n_retractions;
    db->meta.concept_count = db->ix->n_concepts - 1;
}

/*
 * Make everything up to visible_lsn durable outside the WAL, then advance
 * checkpoint_lsn, then recycle the WAL below it.  Writer thread only.
 */
int sdb_db_checkpoint_now(struct sdb_db *db)
{
    uint64_t lsn = atomic_load(&db->visible_lsn);
    int rc;

    if (atomic_load(&db->read_only))
        return SDB_EREADONLY;
    rc = sdb_segstore_sync(db->ss);
    if (rc == 0)
        rc =
            sdb_index_save(db->ix, db->io, db->idx_dir, db->meta.store_id, lsn);
    if (rc == 0) {
        struct sdb_meta m;

        pthread_mutex_lock(&db->stats_lock); /* sdb_db_stats reads meta */
        fill_meta_counts(db, lsn);
        m = db->meta;
        pthread_mutex_unlock(&db->stats_lock);
        rc = sdb_meta_write(db->io, db->data_dir, &m);
    }
    if (rc < 0) {
        go_read_only(db, rc, "checkpoint");
        return rc;
    }
    rc = sdb_wal_recycle(db->wal, lsn);
    if (rc < 0)
        sdb_db_log(db, SDB_LOG_WARN, "WAL recycle failed: %s",
                   sdb_strerror(rc));
    db->wal_bytes_since_ckpt = 0;
    db->last_ckpt_ms = sdb_mono_ms();
    pthread_mutex_lock(&db->stats_lock);
    db->st.checkpoints++;
    db->st.last_checkpoint_unix = sdb_now_us() / 1000000;
    pthread_mutex_unlock(&db->stats_lock);
    return 0;
}

static int do_switch(struct sdb_db *db)
{
    int rc;

    if (atomic_load(&db->read_only))
        return SDB_EREADONLY;
    rc = sdb_wal_rotate(db->wal, db->next_lsn);
    if (rc < 0) {
        go_read_only(db, rc, "WAL segment switch");
        return rc;
    }
    sdb_db_kick_archiver(db);
    return 0;
}

/* ---------------------------------------------------------------- */
/* public write entry points                                         */
/* ---------------------------------------------------------------- */

static int enqueue(struct sdb_db *db, struct wreq *w)
{
    pthread_mutex_lock(&db->q_lock);
    if (db->stopping) {
        pthread_mutex_unlock(&db->q_lock);
        return SDB_ECLOSED;
    }
    if (db->q_tail)
        db->q_tail->next = w;
    else
        db->q_head = w;
    db->q_tail = w;
    pthread_cond_signal(&db->q_cond);
    pthread_mutex_unlock(&db->q_lock);
    return 0;
}

/* Every derived_from id must name an assertion that exists. */
static int check_derived(struct sdb_db *db, const struct sdb_assertion *as,
                         size_t n, bool batch, sdb_error *err)
{
    bool any = false;
    int rc = 0;

    for (size_t i = 0; i < n && !any; i++)
        any = as[i].n_derived > 0;
    if (!any) /* the common case takes no lock */
        return 0;
    pthread_rwlock_rdlock(&db->ix_lock);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        for (size_t j = 0; rc == 0 && j < as[i].n_derived; j++) {
            char field[96];

            if (sdb_index_find_id(db->ix, as[i].derived_from[j]) >= 0)
                continue;
            if (batch)
                snprintf(field, sizeof(field),
                         "assertions[%zu].derived_from[%zu]", i, j);
            else
                snprintf(field, sizeof(field), "derived_from[%zu]", j);
            rc = sdb_error_set(err, SDB_EINVAL, field,
                               "no assertion with this id");
        }
    }
    pthread_rwlock_unlock(&db->ix_lock);
    return rc;
}

static int refuse_if_read_only(struct sdb_db *db, sdb_error *err)
{
    if (!atomic_load(&db->read_only))
        return 0;
    return sdb_error_set(err, SDB_EREADONLY, "",
                         "the store is read-only after an I/O failure (%s); "
                         "writes are refused until it is restarted",
                         strerror(atomic_load(&db->read_only_errno)));
}

static int queue_assert(sdb_db *db, json_t *req, sdb_done_fn done,
                        sdb_done_text_fn done_text, void *arg, sdb_error *err)
{
    struct wreq *w;
    int rc;

    rc = refuse_if_read_only(db, err);
    if (rc < 0)
        return rc;
    w = calloc(1, sizeof(*w));
    if (!w)
        return sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    w->kind = WREQ_ASSERT;
    w->done = done;
    w->done_text = done_text;
    w->arg = arg;
    w->batch = json_is_object(req) && json_object_get(req, "assertions");
    rc = sdb_assert_request_parse(req, &w->as, &w->n, err);
    if (rc == 0)
        rc = check_derived(db, w->as, w->n, w->batch, err);
    if (rc == 0)
        rc = enqueue(db, w);
    if (rc == SDB_ECLOSED)
        sdb_error_set(err, rc, "", "the store is closing");
    if (rc < 0) {
        w->done = NULL;
        w->done_text = NULL;
        finish(db, w);
    }
    return rc;
}

int sdb_assert(sdb_db *db, json_t *req, sdb_done_fn done, void *arg,
               sdb_error *err)
{
    return queue_assert(db, req, done, NULL, arg, err);
}

int sdb_assert_text(sdb_db *db, json_t *req, sdb_done_text_fn done, void *arg,
                    sdb_error *err)
{
    return queue_assert(db, req, NULL, done, arg, err);
}

int sdb_retract(sdb_db *db, json_t *req, sdb_done_fn done, void *arg,
                sdb_error *err)
{
    struct wreq *w;
    int rc;

    rc = refuse_if_read_only(db, err);
    if (rc < 0)
        return rc;
    w = calloc(1, sizeof(*w));
    if (!w)
        return sdb_error_set(err, SDB_ENOMEM, "", "out of memory");
    w->kind = WREQ_RETRACT;
    w->done = done;
    w->arg = arg;
    rc = sdb_retract_request_parse(req, &w->r, err);
    if (rc == 0 && w->r.by_id) {
        pthread_rwlock_rdlock(&db->ix_lock);
        if (sdb_index_find_id(db->ix, w->r.target_id) < 0)
            rc = sdb_error_set(err, SDB_ENOTFOUND, "id",
                               "no assertion with this id");
        pthread_rwlock_unlock(&db->ix_lock);
    }
    if (rc == 0)
        rc = enqueue(db, w);
    if (rc == SDB_ECLOSED)
        sdb_error_set(err, rc, "", "the store is closing");
    if (rc < 0) {
        w->done = NULL;
        finish(db, w);
    }
    return rc;
}

struct waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    int rc;
    json_t *result;
    sdb_error err;
};

static void waiter_done(void *arg, int rc, json_t *result, const sdb_error *err)
{
    struct waiter *wt = arg;

    pthread_mutex_lock(&wt->lock);
    wt->rc = rc;
    wt->result = json_deep_copy(result); /* no refcount shared across threads */
    if (err)
        wt->err = *err;
    wt->done = true;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->lock);
}

typedef int (*submit_fn)(sdb_db *, json_t *, sdb_done_fn, void *, sdb_error *);

static int submit_and_wait(sdb_db *db, submit_fn fn, json_t *req, json_t **out,
                           sdb_error *err)
{
    struct waiter wt = {.lock = PTHREAD_MUTEX_INITIALIZER,
                        .cond = PTHREAD_COND_INITIALIZER};
    int rc = fn(db, req, waiter_done, &wt, err);

    if (out)
        *out = NULL;
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&wt.lock);
    while (!wt.done)
        pthread_cond_wait(&wt.cond, &wt.lock);
    pthread_mutex_unlock(&wt.lock);
    if (wt.rc < 0 && err)
        *err = wt.err;
    if (out)
        *out = wt.result;
    else
        json_decref(wt.result);
    return wt.rc;
}

int sdb_assert_sync(sdb_db *db, json_t *req, json_t **out, sdb_error *err)
{
    return submit_and_wait(db, sdb_assert, req, out, err);
}

int sdb_retract_sync(sdb_db *db, json_t *req, json_t **out, sdb_error *err)
{
    return submit_and_wait(db, sdb_retract, req, out, err);
}

static int control(sdb_db *db, int kind)
{
    struct wreq *w = calloc(1, sizeof(*w));
    struct waiter wt = {.lock = PTHREAD_MUTEX_INITIALIZER,
                        .cond = PTHREAD_COND_INITIALIZER};
    int rc;

    if (!w)
        return SDB_ENOMEM;
    w->kind = kind;
    w->done = waiter_done;
    w->arg = &wt;
    rc = enqueue(db, w);
    if (rc < 0) {
        free(w);
        return rc;
    }
    pthread_mutex_lock(&wt.lock);
    while (!wt.done)
        pthread_cond_wait(&wt.cond, &wt.lock);
    pthread_mutex_unlock(&wt.lock);
    json_decref(wt.result);
    return wt.rc;
}

int sdb_checkpoint(sdb_db *db)
{
    return control(db, WREQ_CHECKPOINT);
}

int sdb_wal_switch(sdb_db *db)
{
    return control(db, WREQ_SWITCH);
}

bool sdb_db_read_only(sdb_db *db, int *out_errno)
{
    if (out_errno)
        *out_errno = atomic_load(&db->read_only_errno);
    return atomic_load(&db->read_only);
}

void sdb_db_stats(sdb_db *db, sdb_stats *out)
{
    struct sdb_wal_stats ws = {0};

    pthread_mutex_lock(&db->stats_lock);
    *out = db->st;
    out->checkpoint_lsn = db->meta.checkpoint_lsn;
    out->restarts = db->meta.restarts;
    pthread_mutex_unlock(&db->stats_lock);
    out->read_only = atomic_load(&db->read_only);
    out->read_only_errno = atomic_load(&db->read_only_errno);
    out->last_lsn = atomic_load(&db->visible_lsn);
    pthread_rwlock_rdlock(&db->ix_lock);
    for (int64_t i = (int64_t)db->ix->n_entries - 1; i >= 0; i--) {
        if (db->ix->entries[i].lsn <= out->last_lsn) {
            out->assertion_count = (uint64_t)i + 1;
            break;
        }
    }
    out->retracted_count = db->ix->retracted_count;
    out->retraction_count = db->ix->n_retractions;
    out->concept_count = db->ix->n_concepts - 1;
    pthread_rwlock_unlock(&db->ix_lock);
    if (db->wal)
        sdb_wal_get_stats(db->wal, &ws);
    out->wal_segments = ws.segments;
    out->wal_bytes_written = ws.bytes_written;
    out->wal_segments_archived = ws.archived;
}
