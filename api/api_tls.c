/*
 * api_tls.c - validates the TLS pair with GnuTLS before libmicrohttpd gets
 * it (api_tls.h): file presence and permissions, PEM parsing, validity
 * dates (gnutls_x509_crt_get_expiration_time / _activation_time) and that
 * the key belongs to the certificate (gnutls_certificate_set_x509_key_file).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "api_tls.h"

#define API_TLS_MAX_PEM (1024 * 1024)

/* Read a whole PEM file; -errno on failure. */
static int read_pem(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;
    int rc = 0;

    *out = NULL;
    if (!f)
        return -errno;
    buf = malloc(API_TLS_MAX_PEM + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto close_file;
    }
    n = fread(buf, 1, API_TLS_MAX_PEM + 1, f);
    if (ferror(f) || n > API_TLS_MAX_PEM) {
        rc = ferror(f) ? -EIO : -EFBIG;
        free(buf);
        goto close_file;
    }
    buf[n] = '\0';
    *out = buf;
close_file:
    fclose(f);
    return rc;
}

static void utc(time_t t, char *out, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Parse the first certificate and check its validity period. */
static int check_dates(const char *path, const char *pem, char *msg, size_t cap)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t d = {(unsigned char *)(uintptr_t)pem, (unsigned)strlen(pem)};
    time_t now = time(NULL), from, until;
    char when[32];
    int rc = -1;

    if (gnutls_x509_crt_init(&crt) < 0) {
        snprintf(msg, cap, "TLS: out of memory");
        return -1;
    }
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) < 0) {
        snprintf(msg, cap,
                 "TLS certificate %s is not a PEM X.509 certificate "
                 "(STEMEDB_TLS_CERT)",
                 path);
        goto free_crt;
    }
    from = gnutls_x509_crt_get_activation_time(crt);
    until = gnutls_x509_crt_get_expiration_time(crt);
    if (until != (time_t)-1 && until < now) {
        utc(until, when, sizeof(when));
        snprintf(msg, cap,
                 "TLS certificate %s has expired (not valid after %s); "
                 "renew it or point STEMEDB_TLS_CERT at a current one",
                 path, when);
        goto free_crt;
    }
    if (from != (time_t)-1 && from > now) {
        utc(from, when, sizeof(when));
        snprintf(msg, cap,
                 "TLS certificate %s is not valid yet (not before %s); "
                 "check the clock or the certificate",
                 path, when);
        goto free_crt;
    }
    rc = 0;
free_crt:
    gnutls_x509_crt_deinit(crt);
    return rc;
}

/* Whether key_path holds the private key of cert_path. */
static int check_pair(const char *cert_path, const char *key_path, char *msg,
                      size_t cap)
{
    gnutls_certificate_credentials_t cred;
    int rc;

    if (gnutls_certificate_allocate_credentials(&cred) < 0) {
        snprintf(msg, cap, "TLS: out of memory");
        return -1;
    }
    rc = gnutls_certificate_set_x509_key_file(cred, cert_path, key_path,
                                              GNUTLS_X509_FMT_PEM);
    gnutls_certificate_free_credentials(cred);
    if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH) {
        snprintf(msg, cap,
                 "TLS key %s does not match certificate %s (key values "
                 "mismatch); use the key the certificate was issued for",
                 key_path, cert_path);
        return -1;
    }
    if (rc < 0) {
        snprintf(msg, cap, "TLS key %s or certificate %s cannot be loaded: %s",
                 key_path, cert_path, gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

static void file_failure(const char *what, const char *var, const char *path,
                         int rc, char *msg, size_t cap)
{
    if (rc == -ENOENT)
        snprintf(msg, cap, "TLS %s file %s: No such file or directory (%s)",
                 what, path, var);
    else if (rc == -EACCES)
        snprintf(msg, cap,
                 "TLS %s file %s: permission denied; make it readable by "
                 "the server's user (%s)",
                 what, path, var);
    else
        snprintf(msg, cap, "TLS %s file %s cannot be read: %s (%s)", what, path,
                 strerror(-rc), var);
}

int api_tls_load(const char *cert_path, const char *key_path, char **out_cert,
                 char **out_key, char *msg, size_t cap)
{
    int rc;

    *out_cert = NULL;
    *out_key = NULL;
    rc = read_pem(cert_path, out_cert);
    if (rc != 0) {
        file_failure("certificate", "STEMEDB_TLS_CERT", cert_path, rc, msg,
                     cap);
        goto fail;
    }
    rc = read_pem(key_path, out_key);
    if (rc != 0) {
        file_failure("key", "STEMEDB_TLS_KEY", key_path, rc, msg, cap);
        goto fail;
    }
    if (check_dates(cert_path, *out_cert, msg, cap) != 0 ||
        check_pair(cert_path, key_path, msg, cap) != 0)
        goto fail;
    return 0;
fail:
    free(*out_cert);
    free(*out_key);
    *out_cert = NULL;
    *out_key = NULL;
    return -1;
}
