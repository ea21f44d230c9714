/*
 * api_ratelimit.c - token buckets keyed by (client address, endpoint) in a
 * striped, fixed-size table (api_ratelimit.h).  Each stripe has its own
 * mutex and API_RL_WAYS buckets; a key hashes to one stripe and is found by
 * a linear scan of its ways.  Never allocates after api_ratelimit_new.
 */
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_ratelimit.h"

#define API_RL_STRIPES 128
#define API_RL_WAYS    32

struct bucket {
    uint8_t addr[16];
    int endpoint;
    bool used;
    double tokens;
    double last; /* monotonic seconds of the last refill */
};

struct stripe {
    pthread_mutex_t lock;
    struct bucket b[API_RL_WAYS]; /* protected by lock */
};

struct api_ratelimit {
    double rps[2]; /* [0] read, [1] write */
    double burst[2];
    struct stripe stripes[API_RL_STRIPES];
};

struct api_ratelimit *api_ratelimit_new(double write_rps, double write_burst,
                                        double read_rps, double read_burst)
{
    struct api_ratelimit *rl = calloc(1, sizeof(*rl));

    if (!rl)
        return NULL;
    rl->rps[0] = read_rps;
    rl->burst[0] = read_burst;
    rl->rps[1] = write_rps;
    rl->burst[1] = write_burst;
    for (size_t i = 0; i < API_RL_STRIPES; i++)
        pthread_mutex_init(&rl->stripes[i].lock, NULL);
    return rl;
}

void api_ratelimit_free(struct api_ratelimit *rl)
{
    if (!rl)
        return;
    for (size_t i = 0; i < API_RL_STRIPES; i++)
        pthread_mutex_destroy(&rl->stripes[i].lock);
    free(rl);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The client as 16 bytes (IPv4 as a v4-mapped IPv6 address). */
static void client_key(const struct sockaddr *sa, uint8_t out[16])
{
    memset(out, 0, 16);
    if (sa && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in =
            (const struct sockaddr_in *)(const void *)sa;
        out[10] = 0xff;
        out[11] = 0xff;
        memcpy(out + 12, &in->sin_addr, 4);
    } else if (sa && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 =
            (const struct sockaddr_in6 *)(const void *)sa;
        memcpy(out, &in6->sin6_addr, 16);
    }
}

/* FNV-1a over the key: only spreads keys over stripes, not security. */
static size_t stripe_of(const uint8_t addr[16], int endpoint)
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 16777619u;
    h = (h ^ (uint32_t)endpoint) * 16777619u;
    return h % API_RL_STRIPES;
}

/* The bucket for the key in st, reusing a free or the least recent one. */
static struct bucket *find_bucket(struct stripe *st, const uint8_t addr[16],
                                  int endpoint, double burst, double now)
{
    struct bucket *victim = &st->b[0];

    for (size_t i = 0; i < API_RL_WAYS; i++) {
        struct bucket *b = &st->b[i];
        if (b->used && b->endpoint == endpoint &&
            memcmp(b->addr, addr, 16) == 0)
            return b;
        if (!b->used || (victim->used && b->last < victim->last))
            victim = b;
    }
    memcpy(victim->addr, addr, 16);
    victim->endpoint = endpoint;
    victim->used = true;
    victim->tokens = burst;
    victim->last = now;
    return victim;
}

unsigned api_ratelimit_take(struct api_ratelimit *rl,
                            const struct sockaddr *client, int endpoint,
                            bool is_write)
{
    int cls = is_write ? 1 : 0;
    double rps = rl->rps[cls];
    double burst = rl->burst[cls];
    uint8_t addr[16];
    struct stripe *st;
    struct bucket *b;
    unsigned wait = 0;
    double now;

    if (rps <= 0)
        return 0;
    client_key(client, addr);
    st = &rl->stripes[stripe_of(addr, endpoint)];
    now = now_seconds();
    pthread_mutex_lock(&st->lock);
    b = find_bucket(st, addr, endpoint, burst, now);
    b->tokens += (now - b->last) * rps;
    if (b->tokens > burst)
        b->tokens = burst;
    b->last = now;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        double secs = ceil((1.0 - b->tokens) / rps);
        wait = secs < 1 ? 1 : (unsigned)secs;
    }
    pthread_mutex_unlock(&st->lock);
    return wait;
}
