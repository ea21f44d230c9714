/*
 * clock.h - the two clocks the engine reads: wall time in µs for record
 * timestamps (CLOCK_REALTIME) and a monotonic ms clock for intervals
 * (segment timeouts, checkpoint schedule).
 */
#ifndef SDB_CLOCK_H
#define SDB_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t sdb_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline uint64_t sdb_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#endif
