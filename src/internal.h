/*
 * internal.h - structures and helpers shared by the core's source files.
 * Not installed; nothing here is part of the API.
 */
#ifndef QC_INTERNAL_H
#define QC_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* OFD locks, SEEK_DATA, renameat2, copy_file_range */
#endif

#include "qcow2chain.h"

#include <limits.h>
#include <stdarg.h>

#define QC_MAGIC 0x514649fbu

/* Header extension magics. */
#define QC_EXT_END 0x00000000u
#define QC_EXT_BACKING_FMT 0xe2792acau
#define QC_EXT_FEATURES 0x6803f857u
#define QC_EXT_BITMAPS 0x23852875u
#define QC_EXT_CRYPTO 0x0537be77u
#define QC_EXT_DATA_FILE 0x44415441u

/* Feature bits. */
#define QC_INCOMPAT_DIRTY (1ull << 0)
#define QC_INCOMPAT_CORRUPT (1ull << 1)
#define QC_INCOMPAT_DATA_FILE (1ull << 2)
#define QC_INCOMPAT_COMPRESSION (1ull << 3)
#define QC_INCOMPAT_EXTL2 (1ull << 4)
#define QC_INCOMPAT_KNOWN 0x1full
#define QC_COMPAT_LAZY (1ull << 0)
#define QC_AUTOCLEAR_BITMAPS (1ull << 0)
#define QC_AUTOCLEAR_DATA_RAW (1ull << 1)

/* Table entry bits. */
#define QC_OFLAG_COPIED (1ull << 63)
#define QC_OFLAG_COMPRESSED (1ull << 62)
#define QC_OFLAG_ZERO 1ull
#define QC_OFFSET_MASK 0x00fffffffffffe00ull /* bits 9-55 */
#define QC_RT_OFFSET_MASK 0xfffffffffffffe00ull

/* Limits, the same as QEMU's so that what it opens we open. */
#define QC_MAX_L1_BYTES (32u << 20)
#define QC_MAX_REFTABLE_BYTES (8u << 20)
#define QC_MAX_SNAPSHOTS 65536u
#define QC_MAX_SNAPSHOT_EXTRA 1024u
#define QC_MAX_SNAPSHOT_TABLE (64u << 20)
#define QC_MAX_BITMAPS 65535u
#define QC_MAX_BITMAP_DIR (64u << 20)
#define QC_MAX_BACKING_NAME 1023u
#define QC_MAX_VIRTUAL_SIZE (1ull << 61)

enum { QC_FMT_RAW = 1, QC_FMT_QCOW2 = 2 };

typedef struct qc_ext {
    uint32_t magic;
    uint32_t len;
    uint8_t *data;
} qc_ext;

/* Everything in cluster 0. Unknown fields and extensions are kept verbatim. */
typedef struct qc_header {
    uint32_t version;
    uint64_t backing_offset;
    uint32_t backing_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_offset;
    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompat;
    uint64_t compat;
    uint64_t autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;
    uint8_t *extra;        /* header bytes past the fields we know */
    uint32_t extra_len;
    char *backing_fmt;     /* NULL when not recorded */
    char *data_file;       /* external data file name, NULL if none */
    qc_ext crypto;         /* kept verbatim */
    qc_ext features;       /* feature name table, verbatim */
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_size;
    uint64_t bitmap_dir_offset;
    qc_ext *unknown;       /* unknown extensions, in file order */
    size_t n_unknown;
    char *backing_name;    /* NULL when none */
} qc_header;

typedef struct qc_snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_ns;
    uint64_t vm_state_size;
    uint64_t disk_size;  /* virtual size when taken (or the image size) */
    bool has_icount;
    uint64_t icount;
    uint32_t extra_len;
    uint8_t *extra;
} qc_snapshot;

typedef struct qc_bitmap {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t type;
    uint8_t granularity_bits;
    char *name;
} qc_bitmap;

/* A small LRU cache of cluster-sized metadata tables (L2 or refcount). */
typedef struct qc_cached {
    uint64_t off;   /* host offset of the table; 0 = slot empty */
    uint64_t used;  /* LRU stamp */
    bool dirty;
    uint8_t *data;
} qc_cached;

typedef struct qc_cache {
    size_t table_size;
    size_t budget;      /* bytes it may use, once allocated */
    unsigned cap;
    unsigned last;      /* slot of the last hit (checked first) */
    uint64_t tick;
    qc_cached *slots;
    /* What the tables are and what they need on disk first (set at open). */
    int kind;                  /* QC_META_L2 or QC_META_REFBLOCK, for the overlap check */
    struct qc_cache *depends;  /* made durable before any table of this cache is written */
    uint64_t **parent;         /* the in-memory table pointing at these tables (or NULL) */
    const uint64_t *parent_off; /* where that table is in the file */
    uint64_t parent_lo, parent_hi; /* its entries to write once the tables are durable */
} qc_cache;

/* Kinds of (sub)cluster, as read from an L2 entry. */
enum {
    QC_SC_UNALLOC = 0,   /* read from the backing */
    QC_SC_UNALLOC_ALLOC, /* extended L2: cluster has a host offset, subcluster not allocated */
    QC_SC_ZERO,          /* reads as zeros, no host cluster */
    QC_SC_ZERO_ALLOC,    /* reads as zeros, host cluster kept */
    QC_SC_NORMAL,        /* data at a host offset */
    QC_SC_COMPRESSED,    /* compressed data, host = the descriptor */
};

struct qc_image {
    qc_ctx *ctx;
    char *filename;       /* as given, or as combined from the overlay's name */
    int fd;
    int fmt;
    unsigned flags;
    uint64_t size;        /* virtual size */
    uint64_t file_size;
    dev_t dev;
    ino_t ino;
    struct stat st;       /* as when opened */
    bool blockdev;        /* a block device: file_size is its fixed capacity */
    int lock_mode;        /* which QEMU lock bytes we hold */

    /* qcow2 */
    qc_header hdr;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    bool ext_l2;
    uint32_t l2_bits;          /* log2 entries per L2 table */
    uint32_t l2_entry_size;    /* 8 or 16 */
    uint32_t sc_bits;          /* log2 of the (sub)cluster size */
    uint64_t *l1;              /* host-endian copy */
    uint32_t l1_size;
    uint64_t *reftable;        /* host-endian copy */
    uint64_t rt_entries;
    uint32_t refcount_bits;
    uint32_t rb_bits;          /* log2 entries per refcount block */
    qc_cache l2c;
    qc_cache rbc;
    qc_snapshot *snaps;
    uint32_t nsnaps;
    uint64_t snap_table_bytes;
    qc_bitmap *bitmaps;
    uint32_t nbitmaps;
    int prealloc;              /* -1 unknown, 0 no, 1 metadata preallocation */
    uint8_t *zbuf;             /* last decompressed cluster */
    uint64_t zbuf_desc;        /* its descriptor, 0 = none */
    int data_fd;               /* external data file, or fd */

    /* write state */
    bool write_ready;          /* prepared for writing (see write.c) */
    bool unsynced;             /* written since the last fsync */
    uint64_t unhinted;         /* bytes copied in since the last writeback hint */
    uint64_t free_hint;        /* first cluster that may be free */
    struct qc_free { uint64_t off, bytes; } *frees; /* deferred refcount decrements */
    size_t nfree, free_cap;
    uint64_t l1_dirty_lo, l1_dirty_hi; /* L1 entries to write at flush (reftable: rbc.parent_lo/hi) */
    uint64_t *meta;            /* sorted clusters of L2 tables and refcount blocks (overlap.c) */
    size_t meta_n, meta_cap;
    bool meta_valid;
    struct qc_shadow *shadow;  /* a shadow update in progress (shadow.c) */

    /* chain */
    qc_image *backing;
    char *backing_full;        /* resolved backing name */
};

struct qc_ctx {
    qc_error err;
    const qc_io *io;
    void *io_user;
    qc_fault *fault;
    qc_policy pol;
    char **dirs;
    size_t ndirs;
    char *foreign_prefix;      /* qc_ctx_foreign_backing */
    struct qc_held *held;      /* files this operation holds (users.c) */
    size_t nheld;
    size_t cache_bytes;
    qc_progress_fn progress;
    void *progress_user;
    uint64_t rate_limit;
    uint64_t copy_step;        /* bytes a long copy writes between writeback hints */
    uint64_t copied;           /* data bytes long copies wrote (qc_copied) */
    const qc_alloc *alloc;     /* NULL: malloc and realloc */
    void *alloc_user;
};

/* ---- error.c ---- */
int qc_fail(qc_ctx *ctx, int code, int sys_errno, const char *path,
            const char *op, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Map an errno to our code (ENOSPC -> NOSPC, ENOENT -> NOTFOUND, ...). */
int qc_errno_code(int e);
/* "name" with control characters escaped, for one-line messages. */
const char *qc_printable(const char *s, char *buf, size_t n);
/*
 * Cleanups after a failure must not replace its error (they may fail too):
 * keep the error, clean up, restore. Restores when r < 0; returns r.
 */
void qc_err_keep(const qc_ctx *ctx, qc_error *kept);
int qc_err_restore(qc_ctx *ctx, const qc_error *kept, int r);

/* ---- util.c ---- */
static inline uint16_t qc_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t qc_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t qc_be64(const uint8_t *p) { return (uint64_t)qc_be32(p) << 32 | qc_be32(p + 4); }
static inline void qc_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void qc_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void qc_put64(uint8_t *p, uint64_t v) { qc_put32(p, (uint32_t)(v >> 32)); qc_put32(p + 4, (uint32_t)v); }
static inline uint64_t qc_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t qc_max(uint64_t a, uint64_t b) { return a > b ? a : b; }
static inline uint64_t qc_align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }
/* a + b > limit, without overflow. */
static inline bool qc_past(uint64_t a, uint64_t b, uint64_t limit) { return a > limit || b > limit - a; }

void *qc_malloc(qc_ctx *ctx, size_t n);
void *qc_calloc(qc_ctx *ctx, size_t n, size_t m);
void *qc_realloc(qc_ctx *ctx, void *p, size_t n); /* p stays valid when this fails */
char *qc_strdup(qc_ctx *ctx, const char *s);
char *qc_strndup(qc_ctx *ctx, const char *s, size_t n);
/* Join the directory of base with rel (QEMU's rule); absolute rel is kept. */
char *qc_path_combine(qc_ctx *ctx, const char *base, const char *rel);
/* The last component of path (its file name). */
const char *qc_path_file(const char *path);
/* "proto:" prefix before any '/'. */
bool qc_path_has_protocol(const char *name);
bool qc_buf_is_zero(const void *buf, size_t n);

/* ---- io.c ---- */
int qc_sys_open(qc_ctx *ctx, const char *path, int flags, mode_t mode);
/* The POSIX open_beneath without openat2 (for the C tests); -errno on failure. */
int qc_open_beneath_walk(const char *dir, const char *rel, int flags, mode_t mode);
void qc_sys_close(qc_ctx *ctx, int fd);
/* Full read; bytes past EOF read as zeros. */
int qc_pread_full(qc_ctx *ctx, int fd, const char *path, void *buf, size_t n,
                  uint64_t off);
/* Full read that fails if the range is not entirely inside the file. */
int qc_pread_exact(qc_ctx *ctx, int fd, const char *path, void *buf, size_t n,
                   uint64_t off, const char *what);
int qc_pwrite_full(qc_ctx *ctx, int fd, const char *path, const void *buf,
                   size_t n, uint64_t off);
int qc_sys_fsync(qc_ctx *ctx, int fd, const char *path);
int qc_sys_fstat(qc_ctx *ctx, int fd, const char *path, struct stat *st);
/* Bytes of the file, or of the block device (BLKGETSIZE64); *blockdev may be NULL. */
int qc_sys_size(qc_ctx *ctx, int fd, const char *path, uint64_t *size, bool *blockdev);
/* BLKDISCARD a block device range; -errno (harmless: space only). */
int qc_sys_discard(qc_ctx *ctx, int fd, uint64_t off, uint64_t len);
/* Each entry of dir but "." and "..": fn's first non-zero return, 0 at the
 * end, or the error (recorded) when dir cannot be listed. */
typedef int (*qc_dirent_fn)(void *arg, const char *name, unsigned char type);
int qc_sys_listdir(qc_ctx *ctx, const char *dir, qc_dirent_fn fn, void *arg);
/* Real path of path (malloc'd); NULL with *err the errno, or 0 when out of memory (recorded). */
char *qc_sys_realpath(qc_ctx *ctx, const char *path, int *err);
/* Is the entry path of listdir type type a symlink (lstat when type is DT_UNKNOWN)? */
bool qc_sys_is_symlink(qc_ctx *ctx, const char *path, unsigned char type);

/* ---- users.c ---- */
struct qc_held { /* a file held (hold.c) */
    int fd;
    dev_t dev;
    ino_t ino;
};
/* The POSIX users op: one pass over /proc/PID/fd, skipping ourselves. */
int qc_users_posix(void *u, const struct stat *files, size_t n, qc_user *found);
/* QC_ERR_LOCKED naming the file, process and command if another process has one of them open. */
int qc_users_check(qc_ctx *ctx, const struct stat *files, const char *const *names, size_t n);
/* Does this operation hold the file (hold.c)? */
bool qc_held(const qc_ctx *ctx, dev_t dev, ino_t ino);

/* ---- lock.c ---- */
enum { QC_LOCK_NONE = 0, QC_LOCK_SHARED, QC_LOCK_READ, QC_LOCK_WRITE };
/*
 * Take QEMU's lock bytes for mode (replacing what img held); undo on
 * conflict. A file the operation holds (users.c) takes none: the hold is
 * the stronger lock. The write lock then also checks for other processes
 * that have the file open without locks.
 */
int qc_lock_apply(qc_image *img, int mode);
void qc_lock_release(qc_image *img);
/* The same on a bare descriptor (name for messages). */
int qc_lock_fd(qc_ctx *ctx, int fd, const char *name, int mode);
void qc_unlock_fd(qc_ctx *ctx, int fd);

/* ---- hold.c ---- */
/*
 * Hold the n files until qc_hold_release: QEMU's write lock first, then one
 * users check for all of them. Files that do not exist or are held already
 * are skipped. Holds nest: note ctx->nheld before, release down to it.
 */
int qc_hold(qc_ctx *ctx, const char *const *paths, size_t n);
void qc_hold_release(qc_ctx *ctx, size_t keep);

/* ---- confine.c ---- */
/* qc_image_open_one: a backing file, opened beneath the allowed directories */
#define QC_OPEN_CONFINED (1u << 30)
/*
 * Open an image file (or a data file) without blocking, only a regular
 * file or a block device; confined: beneath the allowed directories (if
 * any), in one step. Returns the fd; *st as fstat gave it.
 */
int qc_open_image_file(qc_ctx *ctx, const char *path, int oflags, bool confined, struct stat *st);
/* The allowed directory holding the real path real, and real's part below it (*rel); NULL if none. */
const char *qc_allowed_root(qc_ctx *ctx, const char *real, const char **rel);

/* ---- header.c ---- */
/*
 * Parse cluster 0 from buf (len bytes: all of cluster 0, or a prefix).
 * Returns 1 if a prefix was too short to decide: call again with it all.
 */
int qc_header_parse(qc_ctx *ctx, qc_header *h, const uint8_t *buf, size_t len,
                    uint64_t file_size, const char *path);
void qc_header_clear(qc_header *h);
/*
 * Write h as cluster 0 into buf (cs bytes), in QEMU's order: header,
 * unknown header fields, backing format, data file, crypto, feature table,
 * bitmaps, unknown extensions, end marker, backing name. Sets
 * h->backing_offset/size. QC_ERR_NOSPC if it does not fit.
 */
int qc_header_serialize(qc_ctx *ctx, qc_header *h, uint8_t *buf, size_t cs, const char *path);
/* Name of feature (type, bit) from the feature table, or NULL. */
const char *qc_header_feature_name(const qc_header *h, int type, int bit, char *buf, size_t n);

/* ---- compress.c ---- */
int qc_inflate(qc_ctx *ctx, int type, const uint8_t *in, size_t in_len,
               uint8_t *out, size_t out_len, const char *path);

/* ---- tables.c ---- */
/* Read the L1 and refcount tables if not yet in memory. */
int qc_image_load_tables(qc_image *img);
/* 0 if img may grow to end bytes; on a block device past its capacity, a
 * one-line QC_ERR_NOSPC naming the device and the bytes missing. */
int qc_image_room(qc_image *img, uint64_t end);
/* Write n host-endian table entries big-endian at off. */
int qc_write_u64s(qc_image *img, const uint64_t *t, uint64_t n, uint64_t off);
/* Rewrite cluster 0 from img->hdr in one write. */
int qc_header_write(qc_image *img);
/* fsync img if anything was written since the last one. */
int qc_img_sync(qc_image *img);

/* ---- overlap.c ---- */
/* Refuse writes that would land on metadata of a corrupt image. */
/* what is being written: data, an L2 table, a refcount block, entries of the L1 or refcount table */
enum { QC_META_DATA, QC_META_L2, QC_META_REFBLOCK, QC_META_TABLE };
int qc_overlap_check(qc_image *img, uint64_t off, uint64_t len, int self);
/* Before dropping a data reference to [off, off+len): refuse when it names metadata. */
int qc_overlap_free(qc_image *img, uint64_t off, uint64_t len);
/* Freed space that is no live metadata (hole punches and truncation check this). */
bool qc_overlap_may_release(qc_image *img, uint64_t off, uint64_t len);
int qc_overlap_fixed(qc_image *img);
void qc_meta_added(qc_image *img, uint64_t off, int kind);
void qc_meta_changed(qc_image *img);

/* ---- cache.c ---- */
int qc_cache_init(qc_ctx *ctx, qc_cache *c, size_t table_size, size_t bytes);
void qc_cache_free(qc_cache *c);
/* Table at host offset off; loads it if missing (through qc_pread_exact). */
int qc_cache_get(qc_image *img, qc_cache *c, uint64_t off, uint8_t **data, const char *what);
void qc_cache_forget(qc_cache *c, uint64_t off);
/* The cached table at off, or NULL (nothing is loaded). */
uint8_t *qc_cache_peek(qc_cache *c, uint64_t off);
/* The table at from becomes a dirty table at to, in the same buffer (from is read first if missing; it must be clean). */
int qc_cache_move(qc_image *img, qc_cache *c, uint64_t from, uint64_t to, const char *what);
/* Write one dirty table (what it depends on made durable first). */
int qc_cache_writeback(qc_image *img, qc_cache *c, qc_cached *s);
/* Write every dirty table of the cache (its dependency first), then the dirty entries of its parent table. */
int qc_cache_flush(qc_image *img, qc_cache *c);
/* qc_cache_flush, then fsync: all the cache holds is on disk. */
int qc_cache_durable(qc_image *img, qc_cache *c);
/* Write entries [lo, hi) of the in-memory table t (at off in the file), refused over other metadata. */
int qc_write_entries(qc_image *img, const uint64_t *t, uint64_t lo, uint64_t hi, uint64_t off);
/* Mark the table whose buffer is data as modified. */
void qc_cache_mark_dirty(qc_cache *c, const uint8_t *data);
/* A slot for a new table at off: zero-filled, dirty, not read from disk. */
int qc_cache_new(qc_image *img, qc_cache *c, uint64_t off, uint8_t **data);

/* ---- refcount.c ---- */
int qc_refcount_get(qc_image *img, uint64_t cluster, uint64_t *rc);
/* The refcount block of range rti (NULL: none, all counts 0); valid until the next use of the refcount cache. */
int qc_refcount_block(qc_image *img, uint64_t rti, const uint8_t **rb);
/* Refcount i of a block (inline: walks read one per cluster). */
static inline uint64_t qc_rb_get(const qc_image *img, const uint8_t *rb, uint64_t i)
{
    switch (img->refcount_bits) {
    case 1: return rb[i / 8] >> (i % 8) & 1;
    case 2: return rb[i / 4] >> (2 * (i % 4)) & 3;
    case 4: return rb[i / 2] >> (4 * (i % 2)) & 15;
    case 8: return rb[i];
    case 16: return qc_be16(rb + 2 * i);
    case 32: return qc_be32(rb + 4 * i);
    default: return qc_be64(rb + 8 * i);
    }
}
/* Store refcount v at index i of a block of bits-wide entries. */
void qc_rb_put(unsigned bits, uint8_t *rb, uint64_t i, uint64_t v);
uint64_t qc_refcount_max(const qc_image *img);
/* Add delta to a cluster's refcount (creating blocks/growing the table). */
int qc_refcount_add(qc_image *img, uint64_t cluster, int64_t delta);
/* The same for clusters [first, first+n), one block at a time (each checked before it changes). */
int qc_refcount_add_run(qc_image *img, uint64_t first, uint64_t n, int64_t delta);
/* n contiguous new clusters with refcount 1; host = byte offset. */
int qc_alloc_clusters(qc_image *img, uint64_t n, uint64_t *host);
/* Drop one reference to every cluster touched by [off, off+bytes) at the next flush. */
int qc_free_later(qc_image *img, uint64_t off, uint64_t bytes);
int qc_apply_frees(qc_image *img);
/* First run of n free clusters from the allocation hint (cluster index). */
int qc_find_free(qc_image *img, uint64_t n, uint64_t *start);
/* Give the space of free clusters c[0..n) (indexes; sorted here) back to the host. */
void qc_release(qc_image *img, uint64_t *c, size_t n);
/* Its shadow mode (shadow.c): copy block rti before it changes; a new block; growth; old-view use. */
int qc_shadow_cow(qc_image *img, uint64_t rti);
void qc_shadow_mark(qc_image *img, uint64_t rti);
int qc_shadow_grow(qc_image *img, uint64_t min_entries);
int qc_shadow_used(qc_image *img, uint64_t cluster, uint64_t *rc);

/* ---- flush.c ---- */
/* a long copy wrote n data bytes to img: counted, writeback hinted every copy_step */
void qc_copied(qc_image *img, uint64_t n);
/* Everything durable in order: refcounts, L2, L1, then deferred frees. */
int qc_flush(qc_image *img);
void qc_l1_dirty(qc_image *img, uint64_t i);

/* ---- shadow.c: metadata updates that appear in one header write ---- */
/*
 * Between begin and commit nothing the committed image uses is written:
 * refcount blocks are copied before they change, new clusters are free in
 * both the committed and the new structure. Commit writes the new refcount
 * table and switches the header (L1, refcount table, snapshot table, size)
 * in one write. Abort forgets everything (the file is as before).
 */
typedef struct qc_switch {
    uint64_t l1_offset;        /* 0 = keep */
    uint32_t l1_size;
    bool snapshots;            /* set nb_snapshots and snapshots_offset */
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t size;             /* 0 = keep */
} qc_switch;
/* The state of a shadow update; refcount.c's updates consult it (their shadow mode). */
struct qc_shadow {
    uint64_t *old_rt;      /* the committed refcount table */
    uint64_t old_entries;
    uint8_t *cow;          /* per entry of the new table: its block is new */
    uint64_t cow_len;
};
int qc_shadow_begin(qc_image *img);
int qc_shadow_commit(qc_image *img, const qc_switch *sw);
void qc_shadow_abort(qc_image *img);

/* ---- cluster.c ---- */
/*
 * Classify guest bytes [off, off+max) of one layer: the kind at off and how
 * many bytes from off share it (contiguous host offsets for data).
 * host: host offset of off (NORMAL, ZERO_ALLOC, UNALLOC_ALLOC) or the
 * compressed descriptor. off must be < the image size.
 */
int qc_extent(qc_image *img, uint64_t off, uint64_t max, uint64_t *len,
              int *kind, uint64_t *host);
/* Decompress the cluster described by desc into img->zbuf. */
int qc_read_compressed(qc_image *img, uint64_t desc);
/* Entry i of L2 table l2, and its subcluster bitmap (0 without extended L2). */
void qc_l2_entry(const qc_image *img, const uint8_t *l2, uint64_t i, uint64_t *e, uint64_t *bm);
/* Host bytes (whole 512-byte sectors) the compressed cluster of L2 entry e occupies. */
void qc_compressed_range(const qc_image *img, uint64_t e, uint64_t *off, uint64_t *len);
/*
 * Kind and host cluster of subcluster sc in L2 entry (e, bitmap); for a
 * compressed cluster host is the descriptor. Returns NULL, or why the
 * entry is invalid.
 */
const char *qc_classify(const qc_image *img, uint64_t e, uint64_t bm, unsigned sc,
                        int *kind, uint64_t *host);

/* ---- image.c ---- */
int qc_image_open_one(qc_ctx *ctx, qc_image **out, const char *path, int fmt,
                      unsigned flags);
void qc_image_free_one(qc_image *img);
int qc_format_from_name(qc_ctx *ctx, const char *fmt, const char *path);
const char *qc_format_name(int fmt);

/* ---- chain.c ---- */
/* Where img's backing file is, if the policy allows its name (json:, protocol, absolute, directories). */
int qc_backing_path(qc_image *img, char **full);
/* 0 when img has no backing file or the policy allows its name. */
int qc_backing_allowed(qc_image *img);
/* qc_image_open, with the backing layer that is the file rw (if any) opened read-write. */
int qc_chain_open(qc_ctx *ctx, qc_image **out, const char *path, const char *fmt,
                  unsigned flags, const struct stat *rw);

/* ---- status.c ---- */
/* Block status of one layer as the QEMU block layer reports it (for map). */
enum { QC_BS_DATA = 1, QC_BS_ZERO = 2, QC_BS_OFFSET = 4, QC_BS_ALLOCATED = 8 };
int qc_layer_status(qc_image *img, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map);
/*
 * The same, but data clusters over holes of the host file are always
 * ZERO (never written, or preallocated): what copies and their cost
 * estimates use, whatever QEMU's preallocation heuristic says.
 */
int qc_layer_status_holes(qc_image *img, uint64_t off, uint64_t max, uint64_t *len, int *flags, uint64_t *map);
/* Descend from top until a layer has data or zeros (qemu-img map's walk). */
int qc_chain_status(qc_image *top, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map, unsigned *depth, qc_image **layer);

/* ---- copy.c ---- */
/* Progress and rate limit of a long copy: done of total bytes. */
typedef struct qc_meter {
    uint64_t total, done;
    double start;
} qc_meter;
void qc_meter_start(qc_ctx *ctx, qc_meter *m, uint64_t total);
/* Account n more bytes: report progress, sleep for the rate limit, honour cancel. */
int qc_meter_add(qc_ctx *ctx, qc_meter *m, uint64_t n, const char *path);
/*
 * Status of [off, off+max) of the chain from top down to (not including)
 * stop: the first layer that has data or zeros there. *layer = NULL when
 * no layer above stop decides the range (it reads from stop).
 */
int qc_status_above(qc_image *top, qc_image *stop, uint64_t off, uint64_t max, uint64_t *len,
                    int *flags, uint64_t *map, qc_image **layer);

/* ---- write.c ---- */
int qc_write_prepare(qc_image *img);
/* Drop L2 entry e's reference to its host cluster(s) at the next flush; refused when it names metadata. */
int qc_unref_entry(qc_image *img, uint64_t e);
/* Write n guest clusters from cstart with src_fd's bytes at src_off (tmp: a bounce buffer). */
int qc_write_clusters_copy(qc_image *img, uint64_t cstart, uint64_t n, int src_fd, const char *src_name,
                           uint64_t src_off, uint8_t *tmp, size_t tmpsz);

/* ---- refwalk.c ---- */
/* Rebuild refcounts from the metadata (repair of dirty/leaky images). */
int qc_rebuild_refcounts(qc_image *img);
typedef struct qc_check_result {
    uint64_t leaks, corruptions, leaks_fixed, corruptions_fixed, check_errors;
    uint64_t allocated, fragmented, compressed, end;
} qc_check_result;
/* One walk: count, then compare with the stored refcounts; fix per repair mode (QC_REPAIR_*). */
int qc_check_pass(qc_image *img, int repair, qc_check_result *res, json_object *messages);

/* ---- create.c ---- */
/* qc_create straight into path (the caller's temporary file, which must not
 * exist); the file is synced, the directory is not. */
int qc_create_direct(qc_ctx *ctx, const char *path, const qc_create_opts *o);
/* The format options of o (version, cluster and refcount sizes, extended L2, compression) are valid. */
int qc_create_check_format(qc_ctx *ctx, const char *path, const qc_create_opts *o);
int qc_sync_dir(qc_ctx *ctx, const char *path);
/* Rename tmp to path without replacing anything, then sync the directory. */
int qc_commit_temp(qc_ctx *ctx, const char *tmp, const char *path);

/* ---- commit.c ---- */
/* Drop all clusters of img (reads from its backing afterwards). */
int qc_make_empty(qc_image *img);

/* ---- mergecost.c ---- */
/*
 * Data bytes removing snapshot x with its one child would copy, each way,
 * from the tables: commit (the child's data into x), stream (x's data
 * where the child has none). Zero and never-written clusters count nothing.
 */
int qc_merge_costs(qc_ctx *ctx, const char *x, const char *child, uint64_t *commit, uint64_t *stream);

/* ---- info.c ---- */
int qc_info_one(qc_image *img, json_object **out);
/* The "snapshots" array of qemu-img info (the internal snapshot table). */
json_object *qc_snapshots_json(const qc_image *img);

/* ---- snapshot.c: the internal snapshot table ---- */
/* Index of the snapshot with this ID, else this name (qemu-img's lookup); -1 if none. */
int qc_snapshot_find(const qc_image *img, const char *id_or_name);
/* qc_snapshot_create with the date it was taken (seconds; < 0: now). */
int qc_snapshot_create_dated(qc_ctx *ctx, const char *path, const char *name, int64_t date_sec);
/* The snapshot's L1 table (host-endian), checked; caller frees. */
int qc_snapshot_l1(qc_image *img, const qc_snapshot *s, uint64_t **l1);

/* ---- split.c ---- */
/* Snapshot snap (NULL: the live disk) of src into the new file tmp (must not
 * exist), on backing (showing base; base NULL: src's own backing). */
int qc_split_to(qc_image *src, const char *snap, const char *base, const char *tmp, const char *backing,
                const char *backing_fmt, json_object **stats);

/* ---- store.c: the directory store's names ---- */
/* "snap-NAME-BASE": snapshot NAME of the volume file BASE (ctx NULL: plain malloc). */
char *qc_store_snap_entry(qc_ctx *ctx, const char *base, const char *name);
/* Is entry such a name, NAME non-empty? */
bool qc_store_is_snap_entry(const char *base, const char *entry);

/* ---- journal.c ---- */
typedef struct qc_volume {
    qc_ctx *ctx;
    char *path;         /* the volume file, as given */
    char *dir;          /* its directory */
    char *base;         /* its file name */
    char *lock_path;    /* DIR/.BASE.lock */
    char *journal_path; /* DIR/.BASE.journal */
    int lock_fd;
    bool journaled;     /* this operation wrote the journal */
    char recovered[96]; /* "op snap" of an interrupted operation just completed */
} qc_volume;
/* Take the volume's lock, waiting up to timeout_ms; QC_ERR_BUSY after that. */
int qc_volume_open(qc_ctx *ctx, qc_volume *v, const char *path, unsigned timeout_ms);
void qc_volume_close(qc_volume *v);
/* "snap-NAME-BASE" (the snapshot file's name, also its backing name). */
char *qc_volume_snap_name(qc_volume *v, const char *name);
/* Is this directory entry "snap-NAME-BASE" with a non-empty NAME? */
bool qc_volume_is_snap_entry(const qc_volume *v, const char *entry);
/* DIR/entry */
char *qc_volume_file(qc_volume *v, const char *entry);
int qc_journal_write(qc_volume *v, json_object *j);
/* Remove a journal left half-written (its operation never started). */
int qc_journal_drop_tmp(qc_volume *v);
/* *out = NULL when there is no journal. */
int qc_journal_read(qc_volume *v, json_object **out);
int qc_journal_clear(qc_volume *v);

/* ---- dependents.c ---- */
typedef struct qc_fid {
    dev_t dev;
    ino_t ino;
} qc_fid;
/*
 * *image = the path of the first image built on one of the files targets
 * (targets[*which]), other than the targets and those in skip, among the
 * files of vol_dir, then of images_dir (optional) and its subdirectories;
 * NULL when there is none. Reads two header fields of each regular file;
 * takes no lock; never blocks on an open.
 */
int qc_find_dependent(qc_ctx *ctx, char **image, size_t *which, const char *vol_dir, const char *images_dir,
                      const qc_fid *targets, size_t ntargets, const qc_fid *skip, size_t nskip);
/* The backing name in a regular file's qcow2 header into name; false if none, not qcow2 or
 * unreadable. No allocation: running out of memory cannot pass for "no backing file". */
#define QC_PEEK_MAX 1024
bool qc_peek_backing(qc_ctx *ctx, const char *path, char name[QC_PEEK_MAX]);

/* ---- tree.c ---- */
enum { QC_VN_CURRENT = 0, QC_VN_SNAPSHOT, QC_VN_EXTERNAL, QC_VN_STRAY };
typedef struct qc_vnode {
    char *name;        /* "current", the snapshot name, NULL for external */
    char *path;
    char *backing;     /* backing name as stored */
    char *backing_fmt;
    int kind;
    int fmt;
    int parent;        /* index, -1 = none */
    bool live;         /* on current's chain */
    bool missing_backing;
    uint64_t size, actual;
    int64_t date;               /* when taken (qc_snap_date) */
    dev_t dev;
    ino_t ino;
    char *error;       /* why a stray file could not be read */
    int member;        /* while scanning: 1 this volume's, -1 not, 0 undecided */
} qc_vnode;
typedef struct qc_vtree {
    qc_vnode *n;       /* n[0] is current */
    size_t count;
} qc_vtree;
/* A snapshot's date: when it was taken (an xattr set then, kept by the inode
 * through renames), else its file's mtime. Setting it is best effort. */
int64_t qc_snap_date(qc_ctx *ctx, const char *path, int64_t mtime);
void qc_snap_set_date(qc_ctx *ctx, const char *path, int64_t sec);
/* Record a new snapshot file as volume BASE's (an xattr; best effort). */
void qc_snap_set_volume(qc_ctx *ctx, const char *path, const char *base);
int qc_vtree_scan(qc_volume *v, qc_vtree *t);
void qc_vtree_free(qc_vtree *t);
/* Index of current or snapshot NAME, -1 if none. */
int qc_vtree_find(const qc_vtree *t, const char *name);
json_object *qc_vtree_json(const qc_vtree *t, const char *volume);

/* ---- bridge_finish.c ---- */
/* Finish an interrupted conversion between internal and external snapshots. */
int qc_bridge_finish(qc_volume *v, json_object *j);

/* ---- volume.c ---- */
/* Lock the volume and complete or undo an interrupted operation. */
int qc_volume_begin(qc_ctx *ctx, qc_volume *v, const char *volume, const qc_volume_opts *o);

#endif
