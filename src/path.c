/*
 * path.c - reversible escaping of concept path components into file names
 * (path.h; docs/format.md, "Escaping").  Pure byte manipulation: no I/O,
 * no allocation, no UTF-8 validation (model.c checks paths first).
 * Invariant: an escaped name is never "", ".", "..", never starts with '@'
 * or '.', never contains '/' or NUL, and unescape is its exact inverse.
 */
#include <string.h>

#include "path.h"

#define NAME_MAX_BYTES 255

static const char HEX[] = "0123456789ABCDEF";

/* Bytes kept as they are anywhere in a name ('.' is kept when not leading). */
static bool byte_is_plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '_' || c == '-' || c >= 0x80;
}

static bool byte_needs_escape(unsigned char c, size_t pos)
{
    if (c == '.')
        return pos == 0;
    return !byte_is_plain(c);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lowercase hex is not canonical */
}

bool sdb_path_is_reserved_top(const char *comp, size_t len)
{
    return len == 7 && memcmp(comp, "indexes", 7) == 0;
}

int sdb_path_escape_component(const char *comp, size_t len, bool top, char *out,
                              size_t cap)
{
    const unsigned char *in = (const unsigned char *)comp;
    bool force_first = top && sdb_path_is_reserved_top(comp, len);
    size_t o = 0;

    if (len == 0 || cap == 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        bool esc = byte_needs_escape(in[i], i) || (i == 0 && force_first);
        size_t need = esc ? 3 : 1;

        if (o + need > NAME_MAX_BYTES || o + need + 1 > cap)
            return -1;
        if (esc) {
            out[o++] = '%';
            out[o++] = HEX[in[i] >> 4];
            out[o++] = HEX[in[i] & 0x0F];
        } else {
            out[o++] = (char)in[i];
        }
    }
    out[o] = '\0';
    return (int)o;
}

/*
 * Decode one "%XX" at name[i]; *escaped_first records an unneeded escape of
 * byte 0, which is legal only when the whole name is a reserved word.
 */
static int unescape_byte(const char *name, size_t i, size_t pos,
                         bool *unneeded_first, unsigned char *out)
{
    int hi = hex_value(name[i + 1]);
    int lo = hi < 0 ? -1 : hex_value(name[i + 2]);
    unsigned char c;

    if (hi < 0 || lo < 0)
        return -1;
    c = (unsigned char)(hi << 4 | lo);
    if (!byte_needs_escape(c, pos)) {
        if (pos != 0)
            return -1;
        *unneeded_first = true;
    }
    *out = c;
    return 0;
}

int sdb_path_unescape_component(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    size_t i = 0;
    bool unneeded_first = false;

    if (name == NULL || name[0] == '\0' || strlen(name) > NAME_MAX_BYTES)
        return -1;
    while (name[i] != '\0') {
        unsigned char c = (unsigned char)name[i];

        if (o + 1 >= cap)
            return -1;
        if (c == '%') {
            if (unescape_byte(name, i, o, &unneeded_first, &c) < 0)
                return -1;
            i += 3;
        } else {
            if (byte_needs_escape(c, o))
                return -1;
            i++;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (unneeded_first && !sdb_path_is_reserved_top(out, o))
        return -1;
    return (int)o;
}
