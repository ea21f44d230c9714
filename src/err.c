/*
 * err.c - the one error space (stemedb.h SDB_ERR_MAP): text, names, errno
 * and HTTP status for every code.  -errno codes map back to errno.
 */
#include <errno.h>
#include <string.h>

#include "stemedb/stemedb.h"

const char *sdb_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
#define SDB_ERR_TEXT(name, value, eno, http, text)                             \
    case SDB_E##name:                                                          \
        return text;
        SDB_ERR_MAP(SDB_ERR_TEXT)
#undef SDB_ERR_TEXT
    default:
        break;
    }
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "unknown error";
}

const char *sdb_err_name(int rc)
{
    switch (rc) {
    case 0:
        return "ok";
    case SDB_EINVAL:
        return "invalid_input";
    case SDB_ENOTFOUND:
        return "not_found";
    case SDB_ECORRUPT:
        return "corrupt";
    case SDB_EREADONLY:
        return "read_only";
    case SDB_ELOCKED:
        return "locked";
    case SDB_ENOMEM:
        return "out_of_memory";
    case SDB_ETOOBIG:
        return "too_large";
    case SDB_EVERSION:
        return "unsupported_version";
    case SDB_ECLOSED:
        return "closing";
    case SDB_EIO:
        return "io_error";
    case -ENOSPC:
        return "disk_full";
    default:
        return "io_error";
    }
}

int sdb_err_to_errno(int rc)
{
    switch (rc) {
    case 0:
        return 0;
#define SDB_ERR_ERRNO(name, value, eno, http, text)                            \
    case SDB_E##name:                                                          \
        return eno;
        SDB_ERR_MAP(SDB_ERR_ERRNO)
#undef SDB_ERR_ERRNO
    default:
        break;
    }
    return rc < 0 && rc > -4096 ? -rc : EIO;
}

int sdb_err_to_http(int rc)
{
    switch (rc) {
    case 0:
        return 200;
#define SDB_ERR_HTTP(name, value, eno, http, text)                             \
    case SDB_E##name:                                                          \
        return http;
        SDB_ERR_MAP(SDB_ERR_HTTP)
#undef SDB_ERR_HTTP
    default:
        break;
    }
    if (rc == -ENOSPC || rc == -EDQUOT || rc == -EROFS)
        return 503;
    return 500;
}
