/*
 * test_api_ratelimit.c - unit tests of the per-client, per-endpoint token
 * buckets (api_ratelimit.c): burst, Retry-After, isolation between clients
 * and endpoints, refill, disabled classes, bounded table under many clients.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "../api_ratelimit.h"

static struct sockaddr_in v4(const char *ip)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

#define SA(x) ((const struct sockaddr *)(const void *)&(x))

static void
test_ratelimit_allows_burst_then_refuses_with_retry_after(void **state)
{
    struct api_ratelimit *rl = api_ratelimit_new(0.5, 3, 0, 1);
    struct sockaddr_in a = v4("10.0.0.1");
    (void)state;
    assert_non_null(rl);
    for (int i = 0; i < 3; i++)
        assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    /* 0.5 tokens/s: the next token is about 2 s away */
    assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 2);
    api_ratelimit_free(rl);
}

static void test_ratelimit_separates_clients_and_endpoints(void **state)
{
    struct api_ratelimit *rl = api_ratelimit_new(1, 1, 1, 1);
    struct sockaddr_in a = v4("10.0.0.1"), b = v4("10.0.0.2");
    (void)state;
    assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    assert_int_not_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    assert_int_equal(api_ratelimit_take(rl, SA(b), 1, true), 0);
    assert_int_equal(api_ratelimit_take(rl, SA(a), 2, true), 0);
    assert_int_equal(api_ratelimit_take(rl, SA(a), 3, false), 0);
    api_ratelimit_free(rl);
}

static void test_ratelimit_refills_over_time(void **state)
{
    struct api_ratelimit *rl = api_ratelimit_new(20, 1, 0, 1);
    struct sockaddr_in a = v4("10.0.0.1");
    struct timespec ts = {0, 120 * 1000 * 1000};
    (void)state;
    assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 1);
    nanosleep(&ts, NULL);
    assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    api_ratelimit_free(rl);
}

static void test_ratelimit_zero_rps_disables_a_class(void **state)
{
    struct api_ratelimit *rl = api_ratelimit_new(0, 1, 1, 1);
    struct sockaddr_in a = v4("10.0.0.1");
    (void)state;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    assert_int_equal(api_ratelimit_take(rl, SA(a), 2, false), 0);
    assert_int_not_equal(api_ratelimit_take(rl, SA(a), 2, false), 0);
    api_ratelimit_free(rl);
}

static void test_ratelimit_stays_bounded_with_many_clients(void **state)
{
    struct api_ratelimit *rl = api_ratelimit_new(1, 1, 1, 1);
    struct sockaddr_in6 a;
    (void)state;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    /* far more clients than buckets: every new one still gets a bucket */
    for (uint32_t i = 0; i < 100000; i++) {
        memcpy(&a.sin6_addr.s6_addr[12], &i, 4);
        assert_int_equal(api_ratelimit_take(rl, SA(a), 1, true), 0);
    }
    assert_int_equal(api_ratelimit_take(rl, NULL, 1, true), 0);
    assert_int_not_equal(api_ratelimit_take(rl, NULL, 1, true), 0);
    api_ratelimit_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_ratelimit_allows_burst_then_refuses_with_retry_after),
        cmocka_unit_test(test_ratelimit_separates_clients_and_endpoints),
        cmocka_unit_test(test_ratelimit_refills_over_time),
        cmocka_unit_test(test_ratelimit_zero_rps_disables_a_class),
        cmocka_unit_test(test_ratelimit_stays_bounded_with_many_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
