/*
 * store.c - the directory layer store's names: volume FILE's snapshot NAME
 * is the file snap-NAME-FILE next to it, which is also the backing name
 * the images built on it record. This is the one place that spells it;
 * the volume operations (journal.c, volume.c, tree.c) and the Perl side
 * (PVE::Storage::Qcow2Chain::snapshot_file) ask here. The LVM store names
 * its logical volumes in PVE::Storage::Qcow2Chain::LVMStore.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_PREFIX "snap-"

char *qc_store_snap_entry(qc_ctx *ctx, const char *base, const char *name)
{
    size_t n = strlen(SNAP_PREFIX) + strlen(name) + 1 + strlen(base) + 1;
    char *e = ctx ? qc_malloc(ctx, n) : malloc(n);
    if (e)
        snprintf(e, n, SNAP_PREFIX "%s-%s", name, base);
    return e;
}

/* anchored on the volume's file name, so NAME may hold '-' */
bool qc_store_is_snap_entry(const char *base, const char *entry)
{
    size_t el = strlen(entry), bl = strlen(base), pl = strlen(SNAP_PREFIX);
    return el >= pl + 1 + bl + 1 && !strncmp(entry, SNAP_PREFIX, pl) && !strcmp(entry + el - bl, base) &&
           entry[el - bl - 1] == '-';
}

char *qc_volume_snapshot_path(const char *volume, const char *name)
{
    const char *slash = strrchr(volume, '/');
    size_t dlen = slash ? (size_t)(slash - volume) + 1 : 0;
    char *entry = qc_store_snap_entry(NULL, volume + dlen, name);
    if (!entry)
        return NULL;
    size_t n = dlen + strlen(entry) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%.*s%s", (int)dlen, volume, entry);
    free(entry);
    return p;
}
