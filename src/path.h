/*
 * path.h - reversible escaping of concept path components into file names.
 *
 * Concept paths become directories below db/ (docs/format.md, "Escaping").
 * A component keeps the bytes [A-Za-z0-9_-], '.' when not leading, and every
 * byte >= 0x80 (valid UTF-8 was checked before); every other byte becomes
 * %XX (uppercase hex).  A top-level component equal to a reserved name
 * ("indexes") has its first byte escaped.  Internal files start with '@',
 * which an escaped component never does, so no concept name can collide
 * with an internal file.  Escaped components are at most 255 bytes.
 */
#ifndef SDB_PATH_H
#define SDB_PATH_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Escape one component (comp, len) into out (cap bytes, NUL-terminated).
 * top: the component is the first of its path.  Returns the escaped length,
 * or -1 if it does not fit in cap or in 255 bytes.
 */
int sdb_path_escape_component(const char *comp, size_t len, bool top, char *out,
                              size_t cap);

/*
 * Unescape one file name back into a component.  Returns its length, or -1
 * if name is not a valid escaped form (a '%' not followed by two uppercase
 * hex digits, a byte that should have been escaped, an escape that was not
 * needed, an internal '@' name).  Strict, so escape(unescape(x)) == x.
 */
int sdb_path_unescape_component(const char *name, char *out, size_t cap);

/* The reserved top-level names below db/. */
bool sdb_path_is_reserved_top(const char *comp, size_t len);

#endif
