/*
 * readcache.h - a bounded cache of read-only file descriptors for the read
 * path (queries), separate from the segment store's read-write slots so a
 * reader never opens, closes or syncs a file the writer has dirty, and
 * never waits behind the writer's lock.
 *
 * Keys are opaque 64-bit values (segment.c uses concept key << 32 | segno,
 * plus one; 0 is never a key).  The cache is split into shards, each with
 * its own mutex; no lock is ever held across open, close or pread.  A
 * descriptor is pinned between get and put, so eviction (CLOCK, unpinned
 * slots only) never closes a descriptor in use; when every slot of a shard
 * is pinned the caller gets a private descriptor that put closes.
 */
#ifndef SDB_READCACHE_H
#define SDB_READCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

struct sdb_readcache;

/* A pinned descriptor: fd (and map) valid until sdb_readcache_put. */
struct sdb_rcref {
    int fd;
    int shard; /* -1: private descriptor, closed by put */
    int slot;
    const unsigned char *map; /* the file mapped, or NULL */
    size_t map_len;           /* bytes of address space mapped */
    uint64_t known;           /* file size last seen (bytes safe to touch) */
    unsigned map_reads;       /* reads through this pin, counted by put */
    unsigned pread_reads;
};

struct sdb_readcache_stats {
    uint64_t hits, misses, evictions;
    uint64_t map_reads;   /* reads served from a mapping */
    uint64_t pread_reads; /* reads that went through pread */
    unsigned capacity, open, mapped;
};

/*
 * How many descriptors a cache may keep given the soft RLIMIT_NOFILE, after
 * reserved_fds other descriptors (the writer's cache, sockets): three
 * quarters of what is left, between 8 and 65536.
 */
unsigned sdb_readcache_capacity_for_rlimit(unsigned reserved_fds);

/* A new cache of capacity descriptors (at least 1) opened through io. */
int sdb_readcache_new(const sdb_io *io, unsigned capacity,
                      struct sdb_readcache **out);
/* Close every descriptor; nothing may be pinned. */
void sdb_readcache_free(struct sdb_readcache *rc);

/*
 * Pin the cached descriptor of key: 1 and *out filled on a hit, 0 on a
 * miss (then call sdb_readcache_open with the file's path).
 */
int sdb_readcache_lookup(struct sdb_readcache *rc, uint64_t key,
                         struct sdb_rcref *out);

/*
 * Open path O_RDONLY for key (outside any lock), cache it (evicting an
 * unpinned slot if needed) and pin it.  0 or -errno from open.
 */
int sdb_readcache_open(struct sdb_readcache *rc, uint64_t key, const char *path,
                       struct sdb_rcref *out);

/*
 * Map the files this cache opens from now on (when io->map exists): each
 * gets max(reserve, its size) bytes of address space, so a growing
 * append-only file stays covered; at most max_maps files are mapped at
 * once (the others are read with pread).  Call before the cache is shared.
 * Mapping installs a process-wide SIGBUS handler (see sdb_readcache_read).
 */
void sdb_readcache_enable_maps(struct sdb_readcache *rc, size_t reserve,
                               unsigned max_maps);

/*
 * Read exactly len bytes at off of ref's file: copied from its mapping when
 * it has one covering them (the file size is checked first, with an fstat
 * when the range is past the size last seen), else with pread.  0, -errno,
 * or SDB_ECORRUPT when the file is shorter than off + len, including a file
 * truncated under the mapping (the SIGBUS is caught, not fatal).
 */
int sdb_readcache_read(struct sdb_readcache *rc, struct sdb_rcref *ref,
                       void *buf, size_t len, uint64_t off);

/* Unpin; closes the descriptor if it was private or dropped meanwhile. */
void sdb_readcache_put(struct sdb_readcache *rc, struct sdb_rcref *ref);

/*
 * Forget every descriptor (files were truncated away or unlinked and may be
 * recreated): unpinned ones are closed now, pinned ones by their last put.
 */
void sdb_readcache_clear(struct sdb_readcache *rc);

void sdb_readcache_get_stats(struct sdb_readcache *rc,
                             struct sdb_readcache_stats *out);

#endif
