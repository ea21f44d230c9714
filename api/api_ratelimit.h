/*
 * api_ratelimit.h - per-client, per-endpoint token buckets (DESIGN.md
 * section 3: 429 with Retry-After).  A client is its IP address (IPv4 and
 * IPv6; the port is ignored).  Buckets live in a fixed-size striped table,
 * so memory stays bounded however many addresses appear: when a stripe is
 * full the least recently used bucket is reused.
 */
#ifndef API_RATELIMIT_H
#define API_RATELIMIT_H

#include <stdbool.h>
#include <sys/socket.h>

struct api_ratelimit;

/*
 * New limiter: rps tokens per second up to burst, separately for write and
 * read endpoints.  rps 0 disables that class.  NULL on out of memory.
 * Free with api_ratelimit_free.
 */
struct api_ratelimit *api_ratelimit_new(double write_rps, double write_burst,
                                        double read_rps, double read_burst);
void api_ratelimit_free(struct api_ratelimit *rl);

/*
 * Take one token for (client, endpoint).  Returns 0 when the request may
 * proceed, otherwise the number of seconds (>= 1) after which a token will
 * be available, for Retry-After.  Thread-safe.  client may be NULL (all
 * such requests share one bucket per endpoint).
 */
unsigned api_ratelimit_take(struct api_ratelimit *rl,
                            const struct sockaddr *client, int endpoint,
                            bool is_write);

#endif
