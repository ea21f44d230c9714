/*
 * io_sim.h - test backends for the I/O seam (io.h).
 *
 * A simulator wraps the POSIX backend.  It can
 *  - fail the Nth call (1-based, counted per operation) of an operation with
 *    an errno, once or for every call from then on;
 *  - "crash" after N mutating calls: from then on every call fails with EIO
 *    and nothing more reaches the disk (the process stays up so the test can
 *    close the db);
 *  - then turn the files on disk into a state a power loss could have left:
 *    each write not yet covered by an fsync/fdatasync of its file is kept,
 *    dropped (old bytes and size restored) or garbled (random bytes), and
 *    each create, mkdir, rename or unlink whose parent directory was never
 *    fsync'd afterwards is reverted.
 * Everything is driven by a seed so a failing case can be replayed.
 */
#ifndef SDB_IO_SIM_H
#define SDB_IO_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "io.h"

typedef struct sdb_iosim sdb_iosim;

enum sdb_iosim_mode {
    SDB_IOSIM_KEEP = 1 << 0,   /* unsynced writes may survive */
    SDB_IOSIM_DROP = 1 << 1,   /* unsynced writes may vanish */
    SDB_IOSIM_GARBLE = 1 << 2, /* unsynced writes may turn to garbage */
    SDB_IOSIM_ALL = 7
};

sdb_iosim *sdb_iosim_new(uint64_t seed);
void sdb_iosim_free(sdb_iosim *sim);
/* The table to pass in sdb_options.io; valid until sdb_iosim_free. */
const sdb_io *sdb_iosim_io(sdb_iosim *sim);

/* Fail call number nth (1-based) of op with -err; forever: also all later. */
void sdb_iosim_fail(sdb_iosim *sim, enum sdb_io_op op, uint64_t nth,
                    bool forever, int err);
/* Number of calls of op so far. */
uint64_t sdb_iosim_calls(sdb_iosim *sim, enum sdb_io_op op);
/* Total mutating calls so far (pwrite, fsync, fdatasync, ftruncate,
 * fallocate, rename, unlink, mkdir, creating opens). */
uint64_t sdb_iosim_mutations(sdb_iosim *sim);
/* After n more mutating calls, crash: every later call fails with -EIO. */
void sdb_iosim_crash_after(sdb_iosim *sim, uint64_t n);
bool sdb_iosim_crashed(sdb_iosim *sim);
/*
 * Apply power loss to the files this simulator touched, using mode (a mask
 * of sdb_iosim_mode) and the seed.  Call after the db using it is closed.
 * Returns 0 or -errno.
 */
int sdb_iosim_power_loss(sdb_iosim *sim, unsigned mode);

#endif
