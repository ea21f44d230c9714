/*
 * test_api_config.c - unit tests of stemedb-api's configuration parsing
 * (api_config.c): defaults, environment over defaults, flags over the
 * environment, invalid values, --help, empty optional paths, TLS checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../api_config.h"

static const char *env_names[] = {
    "STEMEDB_BIND_ADDR",
    "STEMEDB_DATA_DIR",
    "STEMEDB_WAL_DIR",
    "STEMEDB_TLS_ENABLED",
    "STEMEDB_TLS_CERT",
    "STEMEDB_TLS_KEY",
    "STEMEDB_METER_ENABLED",
    "STEMEDB_CONNECTION_TIMEOUT",
    "STEMEDB_RATE_LIMIT_WRITE_RPS",
};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(env_names) / sizeof(env_names[0]); i++)
        unsetenv(env_names[i]);
    return 0;
}

/* Parse a NULL-terminated list of arguments (copied: getopt wants char *). */
static int parse(struct api_config *cfg, int argc, const char *const *args)
{
    char *argv[16];
    int rc;

    assert_true(argc < 16);
    for (int i = 0; i < argc; i++)
        argv[i] = strdup(args[i]);
    argv[argc] = NULL;
    assert_int_equal(api_config_init(cfg), 0);
    rc = api_config_parse(cfg, argc, argv);
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    return rc;
}

static void test_config_defaults_match_the_documentation(void **state)
{
    struct api_config cfg;
    const char *argv[] = {"stemedb-api", NULL};
    (void)state;
    assert_int_equal(parse(&cfg, 1, argv), API_CONFIG_OK);
    assert_string_equal(cfg.bind_addr, "127.0.0.1:18180");
    assert_string_equal(cfg.dashboard_addr, "127.0.0.1:18188");
    assert_string_equal(cfg.data_dir, "data");
    assert_null(cfg.wal_dir);
    assert_false(cfg.tls_enabled);
    assert_true(cfg.meter_enabled);
    assert_int_equal(cfg.connection_timeout_s, 30);
    api_config_release(&cfg);
}

static void test_config_flag_overrides_environment(void **state)
{
    struct api_config cfg;
    const char *argv[] = {"stemedb-api", "--bind", "127.0.0.1:1", NULL};
    (void)state;
    setenv("STEMEDB_BIND_ADDR", "127.0.0.1:2", 1);
    setenv("STEMEDB_DATA_DIR", "/srv/stemedb", 1);
    setenv("STEMEDB_METER_ENABLED", "off", 1);
    assert_int_equal(parse(&cfg, 3, argv), API_CONFIG_OK);
    assert_string_equal(cfg.bind_addr, "127.0.0.1:1");
    assert_string_equal(cfg.data_dir, "/srv/stemedb");
    assert_false(cfg.meter_enabled);
    api_config_release(&cfg);
}

static void test_config_rejects_invalid_values(void **state)
{
    struct api_config cfg;
    const char *bad_flag[] = {"stemedb-api", "--connection-timeout=ten", NULL};
    const char *neg[] = {"stemedb-api", "--rate-limit-write-rps=-1", NULL};
    const char *none[] = {"stemedb-api", NULL};
    (void)state;
    assert_int_equal(parse(&cfg, 2, bad_flag), API_CONFIG_EXIT_USAGE);
    api_config_release(&cfg);
    assert_int_equal(parse(&cfg, 2, neg), API_CONFIG_EXIT_USAGE);
    api_config_release(&cfg);
    setenv("STEMEDB_TLS_ENABLED", "perhaps", 1);
    assert_int_equal(parse(&cfg, 1, none), API_CONFIG_EXIT_USAGE);
    api_config_release(&cfg);
}

static void test_config_tls_needs_cert_and_key(void **state)
{
    struct api_config cfg;
    const char *argv[] = {"stemedb-api", "--tls-enabled=true",
                          "--tls-cert=c.pem", NULL};
    const char *both[] = {"stemedb-api", "--tls-enabled=yes",
                          "--tls-cert=c.pem", "--tls-key=k.pem", NULL};
    (void)state;
    assert_int_equal(parse(&cfg, 3, argv), API_CONFIG_EXIT_USAGE);
    api_config_release(&cfg);
    assert_int_equal(parse(&cfg, 4, both), API_CONFIG_OK);
    assert_true(cfg.tls_enabled);
    api_config_release(&cfg);
}

static void test_config_empty_optional_path_means_unset(void **state)
{
    struct api_config cfg;
    const char *argv[] = {"stemedb-api", NULL};
    (void)state;
    setenv("STEMEDB_WAL_DIR", "", 1);
    setenv("STEMEDB_CONNECTION_TIMEOUT", "", 1);
    assert_int_equal(parse(&cfg, 1, argv), API_CONFIG_OK);
    assert_null(cfg.wal_dir);
    assert_int_equal(cfg.connection_timeout_s, 30);
    api_config_release(&cfg);
}

static void test_config_help_exits_zero(void **state)
{
    struct api_config cfg;
    const char *argv[] = {"stemedb-api", "--help", NULL};
    FILE *saved = stdout;
    (void)state;
    stdout = fopen("/dev/null", "w");
    assert_int_equal(parse(&cfg, 2, argv), API_CONFIG_EXIT_OK);
    fclose(stdout);
    stdout = saved;
    api_config_release(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config_defaults_match_the_documentation,
                               clear_env),
        cmocka_unit_test_setup(test_config_flag_overrides_environment,
                               clear_env),
        cmocka_unit_test_setup(test_config_rejects_invalid_values, clear_env),
        cmocka_unit_test_setup(test_config_tls_needs_cert_and_key, clear_env),
        cmocka_unit_test_setup(test_config_empty_optional_path_means_unset,
                               clear_env),
        cmocka_unit_test_setup(test_config_help_exits_zero, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
