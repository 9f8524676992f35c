/*
 * fuzz_volume.c - whole volume operations on hostile volumes in memory.
 * The input holds up to six parts separated by "\n--8<--\n": the live disk
 * v/vm-1-disk-0.qcow2, snapshots a and b (snap-a-..., snap-b-...), the
 * volume's journal, a leftover new overlay (.vm-1-disk-0.qcow2.new) and a
 * script; an empty part is a missing file. Script byte 0, if not zero,
 * cuts the power at that mutating call of the first operation (through the
 * fault layer over memfs), and the volume is recovered after; each further
 * byte is one operation: snapshot, rollback, delete, rename, list,
 * dependents, recover, or internal snapshot of the live disk.
 */
#include "common.h"

#include <stdio.h>

#define VOL "v/vm-1-disk-0.qcow2"

static const char *const names[] = {
    VOL, "v/snap-a-vm-1-disk-0.qcow2", "v/snap-b-vm-1-disk-0.qcow2", "v/.vm-1-disk-0.qcow2.journal",
    "v/.vm-1-disk-0.qcow2.new",
};
#define NFILES (sizeof(names) / sizeof(names[0]))

static const char *const snaps[] = {"a", "b", "c", "current"};

static void run_op(qc_ctx *ctx, uint8_t op, const qc_volume_opts *o)
{
    const char *s = snaps[(op >> 3) & 3], *t = snaps[(op >> 5) & 3];
    json_object *j = NULL;
    char *img = NULL, *file = NULL;
    switch (op & 7) {
    case 0:
        qc_volume_snapshot(ctx, VOL, s, o);
        break;
    case 1:
        qc_volume_rollback(ctx, VOL, s, o);
        break;
    case 2:
        qc_volume_delete_snapshot(ctx, &j, VOL, s, o);
        break;
    case 3:
        qc_volume_rename_snapshot(ctx, VOL, s, t, o);
        break;
    case 4:
        qc_volume_list(ctx, &j, VOL, o);
        break;
    case 5:
        qc_volume_find_dependent(ctx, &img, &file, VOL, o);
        break;
    case 6:
        qc_volume_recover(ctx, VOL, o);
        break;
    case 7:
        qc_snapshot_create(ctx, VOL, s);
        break;
    }
    if (getenv("FUZZ_VOLUME_DEBUG")) /* what each step did, when writing seeds */
        fprintf(stderr, "op %d %s %s: %s\n", op & 7, s, t, qc_ctx_error(ctx)->msg);
    json_object_put(j);
    free(img);
    free(file);
    qc_ctx_clear_error(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    static const char sep[] = "\n--8<--\n";
    memfs_reset();
    memfs_mkdir("v");
    memfs_mkdir("images");
    const uint8_t *script = NULL;
    size_t slen = 0, start = 0;
    for (size_t i = 0; i <= NFILES && start <= n; i++) {
        size_t end = n;
        for (size_t k = start; k + sizeof(sep) - 1 <= n; k++)
            if (!memcmp(d + k, sep, sizeof(sep) - 1)) {
                end = k;
                break;
            }
        if (i == NFILES) {
            script = d + start;
            slen = end - start;
        } else if (end > start) {
            memfs_add(names[i], d + start, end - start);
        }
        start = end + sizeof(sep) - 1;
    }
    qc_volume_opts o;
    qc_volume_opts_init(&o);
    o.lock_timeout_ms = 1;
    o.cluster_size = 16384; /* the smallest with extended L2: small overlays */
    o.preallocation = 0;
    o.images_dir = "images";
    qc_ctx *ctx = fuzz_ctx();
    qc_ctx_policy(ctx)->max_depth = 8;
    size_t i = 1;
    if (slen >= 2 && script[0]) {
        qc_fault *f = qc_fault_new_over(memfs_io(), NULL, QC_FAULT_CRASH, script[0], 0, 0);
        if (!f)
            abort();
        qc_ctx_set_fault(ctx, f);
        run_op(ctx, script[1], &o);
        qc_ctx_set_fault(ctx, NULL);
        qc_fault_free(f);
        qc_ctx_set_io(ctx, memfs_io(), NULL);
        qc_volume_recover(ctx, VOL, &o);
        qc_ctx_clear_error(ctx);
        i = 2;
    }
    for (size_t k = 0; i < slen && k < 4; i++, k++)
        run_op(ctx, script[i], &o);
    qc_ctx_free(ctx);
    return 0;
}
