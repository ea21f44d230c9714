/*
 * api_tls.h - startup checks of the TLS certificate and key (GnuTLS) so a
 * missing, unreadable, expired, not-yet-valid or mismatched pair stops
 * stemedb-api with one clear line instead of a failed handshake later.
 */
#ifndef API_TLS_H
#define API_TLS_H

#include <stddef.h>

/*
 * Check cert_path and key_path and load both as PEM text (*out_cert and
 * *out_key are malloc'd, NUL-terminated; the caller frees them).  Returns 0,
 * or -1 with one actionable line in msg.
 */
int api_tls_load(const char *cert_path, const char *key_path, char **out_cert,
                 char **out_key, char *msg, size_t cap);

#endif
