/*
 * qcow2chain.h - the public API of the qcow2 chain core.
 *
 * Plain C11, no Perl. Every exported symbol starts with qc_.
 * Functions return 0 (or a count) on success and a negative QC_ERR_* code on
 * failure; the one-line message, saved errno, file and operation are then in
 * the context's error (qc_ctx_error). The core never prints and never exits.
 *
 * Ownership: objects returned through an out-parameter belong to the caller
 * and are released with the matching _free/_close function; json_object
 * results are released with json_object_put(). Strings passed in are copied.
 */
#ifndef QCOW2CHAIN_H
#define QCOW2CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <json-c/json.h>

#define QC_VERSION "0.1.0"

/* Error codes (negative return values). */
enum {
    QC_OK = 0,
    QC_ERR_IO = -1,          /* a system call failed; sys_errno says why */
    QC_ERR_INVALID = -2,     /* bad argument from the caller */
    QC_ERR_FORMAT = -3,      /* the image is malformed or corrupt */
    QC_ERR_UNSUPPORTED = -4, /* valid, but a feature we do not handle */
    QC_ERR_NOMEM = -5,
    QC_ERR_LOOP = -6,        /* backing chain loops or is too deep */
    QC_ERR_NOTFOUND = -7,    /* file or snapshot does not exist */
    QC_ERR_LOCKED = -8,      /* another process holds the image */
    QC_ERR_POLICY = -9,      /* refused by the safety policy */
    QC_ERR_NOSPC = -10,      /* no space on device or in the header */
    QC_ERR_EXISTS = -11,     /* target already exists */
    QC_ERR_BUSY = -12,       /* the volume is being changed by another process */
    QC_ERR_CANCELLED = -13,  /* the progress callback asked to stop */
};

/* Last error of a context. msg is one line without a trailing newline. */
typedef struct qc_error {
    int code;
    int sys_errno;
    char op[32];
    char path[4096];
    char msg[5120];
} qc_error;

typedef struct qc_ctx qc_ctx;
typedef struct qc_image qc_image;

/* Short name of an error code ("io", "format", ...). */
const char *qc_strerror(int code);

/* ---- context -------------------------------------------------------- */

qc_ctx *qc_ctx_new(void);
void qc_ctx_free(qc_ctx *ctx);
const qc_error *qc_ctx_error(const qc_ctx *ctx);
void qc_ctx_clear_error(qc_ctx *ctx);

/*
 * Safety policy applied to every open done through this context.
 * Defaults: max_depth 256, no format probing, no external data files,
 * no directory restriction, QEMU-compatible locking on.
 */
typedef struct qc_policy {
    unsigned max_depth;          /* deepest backing chain accepted */
    bool probe_backing_format;   /* guess a format the image does not record */
    bool allow_data_file;        /* open images with an external data file */
    bool allow_absolute_backing; /* absolute backing names (with dirs set) */
    bool force_share;            /* take only the shared "consistent read" lock */
    bool no_lock;                /* take no QEMU locks at all */
} qc_policy;

qc_policy *qc_ctx_policy(qc_ctx *ctx);
/* Backing files must resolve (after symlinks) inside one of these dirs. */
int qc_ctx_allow_dir(qc_ctx *ctx, const char *dir);
/*
 * With allowed dirs: a backing file in another directory than its overlay
 * must have a name starting with prefix (Proxmox: "base-", a template's
 * volume); anything else is an untrusted chain. NULL: no such rule.
 */
int qc_ctx_foreign_backing(qc_ctx *ctx, const char *prefix);
/* Bytes of metadata cache per open image (default 8 MiB, minimum 4 tables). */
void qc_ctx_set_cache_size(qc_ctx *ctx, size_t bytes);

/* Progress: done/total in bytes; return non-zero to cancel. */
typedef int (*qc_progress_fn)(void *user, uint64_t done, uint64_t total);
void qc_ctx_set_progress(qc_ctx *ctx, qc_progress_fn fn, void *user);
/* Limit copy operations to this many bytes per second (0 = unlimited). */
void qc_ctx_set_rate_limit(qc_ctx *ctx, uint64_t bytes_per_sec);
/* Bytes a long copy (commit, rebase) writes between writeback hints (0: the default, 32 MiB). */
void qc_ctx_set_copy_step(qc_ctx *ctx, uint64_t bytes);

/*
 * Allocation: every buffer the core allocates for a context comes from
 * these (NULL members: malloc, realloc), so a test can fail each in turn.
 * They must return memory that free(3) releases: the core and its callers
 * release it with free(). Wrap the system allocator (count, limit, fail),
 * do not replace it. json-c allocates its objects itself.
 */
typedef struct qc_alloc {
    void *(*malloc)(void *u, size_t n);
    void *(*realloc)(void *u, void *p, size_t n);
} qc_alloc;
void qc_ctx_set_alloc(qc_ctx *ctx, const qc_alloc *a, void *user); /* a stays owned by the caller */

/* ---- I/O seam ------------------------------------------------------- */

struct qc_user;

/*
 * Every system call the core makes goes through this table. Each returns
 * the syscall's result, or -errno on failure (never sets errno for us).
 */
typedef struct qc_io {
    int (*open)(void *u, const char *path, int flags, mode_t mode);
    int (*close)(void *u, int fd);
    ssize_t (*pread)(void *u, int fd, void *buf, size_t n, uint64_t off);
    ssize_t (*pwrite)(void *u, int fd, const void *buf, size_t n, uint64_t off);
    int (*fsync)(void *u, int fd);
    int (*ftruncate)(void *u, int fd, uint64_t len);
    int (*fstat)(void *u, int fd, struct stat *st);
    int (*stat)(void *u, const char *path, struct stat *st);
    /* flags: QC_RENAME_NOREPLACE */
    int (*rename)(void *u, const char *from, const char *to, unsigned flags);
    int (*unlink)(void *u, const char *path);
    ssize_t (*copy_range)(void *u, int in, uint64_t in_off, int out,
                          uint64_t out_off, size_t n);
    int (*lock)(void *u, int fd, int cmd, struct flock *fl);
    int64_t (*seek)(void *u, int fd, int64_t off, int whence);
    int (*fallocate)(void *u, int fd, int mode, uint64_t off, uint64_t len);
    int (*link)(void *u, const char *from, const char *to); /* fails if to exists */
    /* extended attributes (the snapshot date; -ENOTSUP is fine) */
    ssize_t (*getxattr)(void *u, const char *path, const char *name, void *buf, size_t n);
    int (*setxattr)(void *u, const char *path, const char *name, const void *buf, size_t n);
    /* start writing fd's dirty pages out now: a hint that keeps the disk
     * busy during long copies, not durability (that is fsync); may be NULL */
    int (*writeback)(void *u, int fd);
    /* ownership and mode of a file (a new overlay takes the old live file's) */
    int (*fchown)(void *u, int fd, uid_t uid, gid_t gid);
    int (*fchmod)(void *u, int fd, mode_t mode);
    /* another process with one of the n files (st_dev, st_ino) open: 1 and
     * *found filled, 0 when none (or it cannot be known); may be NULL */
    int (*users)(void *u, const struct stat *files, size_t n, struct qc_user *found);
    /* open rel inside directory dir without following any symlink and
     * without leaving dir (rel: plain names joined by '/'), in one step as
     * far as anyone swapping files can tell: openat2 RESOLVE_BENEATH, or
     * openat with O_NOFOLLOW from one directory to the next */
    int (*open_beneath)(void *u, const char *dir, const char *rel, int flags, mode_t mode);
    /* block devices (NULL: the size from lseek, no discard) */
    int (*devsize)(void *u, int fd, uint64_t *bytes);                /* BLKGETSIZE64 */
    int (*discard)(void *u, int fd, uint64_t off, uint64_t len);     /* BLKDISCARD */
    /* stat that does not follow a final symlink */
    int (*lstat)(void *u, const char *path, struct stat *st);
    /* fn(arg, name, type) for each entry of directory dir, "." and ".."
     * perhaps among them; type is a DT_* value, DT_UNKNOWN when the file
     * system does not say. Stops at fn's first non-zero return and returns
     * it; -errno when dir cannot be listed */
    int (*listdir)(void *u, const char *dir, int (*fn)(void *arg, const char *name, unsigned char type),
                   void *arg);
    /* the absolute path of path with every symlink, "." and ".." resolved,
     * into out (PATH_MAX bytes) */
    int (*realpath)(void *u, const char *path, char *out);
} qc_io;

/* A process that has a file open (files[file] of a users call). */
typedef struct qc_user {
    size_t file;
    int pid;
    char comm[64]; /* its command, as /proc/PID/comm */
} qc_user;

#define QC_RENAME_NOREPLACE 1u

/* The default POSIX table. */
const qc_io *qc_io_posix(void);
void qc_ctx_set_io(qc_ctx *ctx, const qc_io *io, void *user);

/*
 * Fault injection for tests, layered over an I/O table (POSIX by default).
 * Counts the mutating calls
 * (pwrite, fsync, ftruncate, rename, unlink, copy_range, fallocate, link,
 * fchown, fchmod, discard).
 * mode QC_FAULT_ERROR: call number nth fails with err, later calls succeed.
 * mode QC_FAULT_CRASH: call number nth and every later call fail with EIO,
 *   and writes not yet made durable by fsync are undone (all of them, or a
 *   seeded random subset when seed != 0) as a power cut would; so are
 *   directory changes (new files, link, unlink, rename) that no fsync of
 *   the directory holding the name made durable (all, or with a seed the
 *   newest of them from a random point on).
 * mode QC_FAULT_SHORT: every write and in-kernel copy does only part of
 *   what was asked (as a signal or a full pipe may make it); callers must
 *   loop.
 */
enum { QC_FAULT_NONE = 0, QC_FAULT_ERROR = 1, QC_FAULT_CRASH = 2, QC_FAULT_SHORT = 3 };
typedef struct qc_fault qc_fault;
qc_fault *qc_fault_new(int mode, uint64_t nth, int err, uint64_t seed);
/* The same over table lower (NULL: POSIX), called with lower_user. */
qc_fault *qc_fault_new_over(const qc_io *lower, void *lower_user, int mode, uint64_t nth, int err,
                            uint64_t seed);
void qc_fault_free(qc_fault *f);
/* Mutating calls seen so far; whether the fault fired. */
uint64_t qc_fault_count(const qc_fault *f);
bool qc_fault_fired(const qc_fault *f);
/* Writeback hints passed through (not counted as mutating calls). */
uint64_t qc_fault_writebacks(const qc_fault *f);
void qc_ctx_set_fault(qc_ctx *ctx, qc_fault *f); /* f stays owned by caller */

/* ---- images --------------------------------------------------------- */

enum {
    QC_OPEN_RDWR = 1u << 0,
    QC_OPEN_NO_BACKING = 1u << 1, /* do not open the backing chain */
    QC_OPEN_SHARE = 1u << 2,      /* read while others write (qemu-img -U) */
    QC_OPEN_NO_LOCK = 1u << 3,    /* header peeks: take no lock at all */
    QC_OPEN_NOFOLLOW = 1u << 4,   /* refuse a symlink as the top image */
};

/*
 * Open an image (fmt "qcow2", "raw", or NULL to detect) and, unless
 * QC_OPEN_NO_BACKING, its whole backing chain read-only.
 */
int qc_image_open(qc_ctx *ctx, qc_image **out, const char *path,
                  const char *fmt, unsigned flags);
/* Close an image and its backing chain. NULL is fine. */
void qc_image_close(qc_image *img);

uint64_t qc_image_size(const qc_image *img);
const char *qc_image_filename(const qc_image *img);
const char *qc_image_format(const qc_image *img);
qc_image *qc_image_backing(const qc_image *img);

/* Read guest data through the chain (zeros past a shorter backing). */
int qc_image_read(qc_image *img, void *buf, uint64_t off, size_t len);

/*
 * Guest writes to the top image (opened with QC_OPEN_RDWR), copying on
 * write from the backing chain and from internal snapshots. Metadata
 * reaches the disk in a crash-safe order at qc_image_flush (also run by
 * qc_image_close): until then a crash loses the writes, never the image.
 */
int qc_image_write(qc_image *img, const void *buf, uint64_t off, size_t len);
enum { QC_ZERO_UNMAP = 1u }; /* may release the clusters instead of keeping them */
int qc_image_write_zeroes(qc_image *img, uint64_t off, uint64_t len, unsigned flags);
/* Discard as QEMU does: whole clusters only; afterwards they read as zeros
 * (v3) or from the backing (v2 without backing: zeros). */
int qc_image_discard(qc_image *img, uint64_t off, uint64_t len);
int qc_image_flush(qc_image *img);
/* Grow the virtual size (never shrinks); the new area reads as zeros. */
int qc_image_grow(qc_image *img, uint64_t size);

/* ---- create ---------------------------------------------------------- */

typedef struct qc_create_opts {
    uint64_t size;            /* 0: the backing file's size */
    int version;              /* 2 (compat=0.10) or 3 (compat=1.1, default) */
    uint32_t cluster_size;    /* 512 .. 2 MiB, default 64 KiB */
    bool extended_l2;
    uint32_t refcount_bits;   /* 1 .. 64, default 16 */
    bool lazy_refcounts;
    int compression_type;     /* 0 zlib, 1 zstd */
    int preallocation;        /* 0 off, 1 metadata */
    const char *backing;      /* stored verbatim; relative to the new image */
    const char *backing_fmt;  /* required with backing */
    bool backing_unchecked;   /* do not open the backing file (size required): qemu-img create -u */
} qc_create_opts;

/* preallocation modes (create takes off and metadata; measure all four) */
enum { QC_PREALLOC_OFF = 0, QC_PREALLOC_METADATA, QC_PREALLOC_FALLOC, QC_PREALLOC_FULL };

/* Defaults as qemu-img create. */
void qc_create_opts_init(qc_create_opts *o);
/*
 * Create a qcow2 image atomically: written under a temporary name, synced,
 * renamed into place without replacing an existing file, directory synced.
 * On failure nothing is left behind.
 */
int qc_create(qc_ctx *ctx, const char *path, const qc_create_opts *o);

/* ---- measure ----------------------------------------------------------- */

typedef struct qc_measure_info {
    uint64_t required;        /* bytes the new image needs as written */
    uint64_t fully_allocated; /* bytes with every cluster allocated */
    uint64_t bitmaps;         /* persistent bitmaps it would carry */
    bool has_bitmaps;         /* qemu-img prints "bitmaps" only then */
} qc_measure_info;

enum { QC_MEASURE_LAYER = 1u }; /* the layer alone: its own clusters, without its backing */
/*
 * qemu-img measure -O OUT_FMT ("qcow2" default, or "raw") with the create
 * options o: of a new image of o->size when path is NULL, else of the copy
 * of path's guest view (the whole chain, or with QC_MEASURE_LAYER only
 * what path itself holds). o->backing set counts every cluster, as QEMU.
 */
int qc_measure(qc_ctx *ctx, qc_measure_info *out, const char *path, const char *fmt, const char *out_fmt,
               const qc_create_opts *o, unsigned flags);

/* ---- compact ---------------------------------------------------------- */

/*
 * Copy layer path (qcow2, read but not changed; no internal snapshots)
 * into out: a new qcow2 holding exactly the layer's allocated clusters,
 * packed, with its zeros and unallocated ranges, backing name and format,
 * cluster size and extended L2, so that it reads as the layer on the same
 * backing file and needs at most qc_measure(QC_MEASURE_LAYER) bytes. out is
 * a new file (appears atomically) or an existing block device (written in
 * place, never the layer's own). out NULL: in place, a file replaced in
 * one rename under its own name, so its children keep pointing at it.
 */
int qc_compact(qc_ctx *ctx, const char *path, const char *fmt, const char *out);

/* ---- commit and rebase ---------------------------------------------- */

enum { QC_COMMIT_KEEP = 1u }; /* -d: do not empty FILE afterwards */
/*
 * qemu-img commit [-d] [-b BASE] FILE: copies everything allocated in FILE
 * and the layers above BASE (default: FILE's backing file) into BASE,
 * zeros as zeros; grows BASE if FILE is larger; then empties FILE unless
 * QC_COMMIT_KEEP or a BASE was named. Progress and rate limit from ctx.
 */
int qc_commit(qc_ctx *ctx, const char *path, const char *fmt, const char *base, unsigned flags);

enum { QC_REBASE_UNSAFE = 1u }; /* -u: only rewrite the header */
/*
 * qemu-img rebase -b NEW -F NEW_FMT FILE ("" = no backing): FILE keeps its
 * guest view; where the old chain and NEW can differ, FILE receives the old
 * data first; then one header write records NEW. new_fmt is required unless
 * new_backing is "".
 */
int qc_rebase(qc_ctx *ctx, const char *path, const char *fmt, const char *new_backing,
              const char *new_fmt, unsigned flags);

/* ---- external snapshots of a volume ----------------------------------- */

/*
 * Volume FILE is the live disk; snapshot S is the file snap-S-FILE in the
 * same directory; images refer to their backing files by these relative
 * names. Every operation takes the volume's lock (waiting up to
 * lock_timeout_ms, then QC_ERR_BUSY), first completes or undoes an
 * interrupted operation recorded in the volume's journal, and records its
 * own intent before changing anything. Files an operation changes or
 * replaces are write-locked (QEMU's lock bytes) until it is durable, and
 * refused (QC_ERR_LOCKED, naming the process) while another process has
 * them open, unless running says a QEMU does its part. A failure after the
 * journal was written says so: the next operation on the volume completes
 * it. A listing completes nothing while a file it would change is in use:
 * it reports the operation under "pending" instead.
 */
enum { QC_DELETE_AUTO = 0, QC_DELETE_COMMIT, QC_DELETE_STREAM };
typedef struct qc_volume_opts {
    uint32_t cluster_size;    /* new overlays: default 128k */
    bool extended_l2;         /* default on */
    int preallocation;        /* default 1 (metadata); only with extended L2 */
    bool running;             /* a QEMU holds the volume and does its part: create, it
                                 switches to the new overlay itself; delete, it merged the
                                 data already; rename, it renames the backing names it uses;
                                 rename S to current, it committed the live disk into S */
    int delete_method;        /* QC_DELETE_*: auto copies fewer bytes */
    unsigned lock_timeout_ms; /* default 10000 */
    const char *images_dir;   /* delete, rename: images in this directory tree
                                 may be built on a snapshot too (default: only
                                 those in the volume's directory are looked at) */
} qc_volume_opts;

void qc_volume_opts_init(qc_volume_opts *o);
/* Path of snapshot NAME's file of volume FILE (malloc'd, NULL when out of memory). */
char *qc_volume_snapshot_path(const char *volume, const char *name);
/* 1 if NAME is a valid snapshot name ([a-z][a-z0-9_-]*, <= 40, not "current"). */
int qc_volume_name_valid(const char *name);
/* The live data becomes snapshot NAME; FILE becomes a new overlay on it. */
int qc_volume_snapshot(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o);
/* FILE becomes a fresh overlay on snapshot NAME (any snapshot). */
int qc_volume_rollback(qc_ctx *ctx, const char *volume, const char *name, const qc_volume_opts *o);
/*
 * Remove snapshot NAME; its children keep their exact guest view. With one
 * child, the way that copies fewer data bytes (counted from the tables):
 * commit the child into NAME, or stream NAME into the child. *out (if out
 * is not NULL): {"snapshot", "method": "commit" | "stream" | "unlink" |
 * "recovered" (an interrupted delete of it was just completed), "bytes":
 * data bytes copied, and with one child "commit-bytes", "stream-bytes":
 * what each way copies}.
 */
int qc_volume_delete_snapshot(qc_ctx *ctx, json_object **out, const char *volume, const char *name,
                              const qc_volume_opts *o);
/*
 * Rename snapshot FROM to TO, rewriting its children's backing names.
 * "current" is the live disk: current -> TO takes snapshot TO; FROM ->
 * current makes snapshot FROM the live disk in one rename (the live disk
 * must be FROM's only child, and its own data be in FROM: o->running).
 */
int qc_volume_rename_snapshot(qc_ctx *ctx, const char *volume, const char *from, const char *to,
                              const qc_volume_opts *o);
/* The tree: {"volume", "nodes": [{name, kind, file, parent, children, ...}], "pending"?} */
int qc_volume_list(qc_ctx *ctx, json_object **out, const char *volume, const qc_volume_opts *o);
/*
 * Before removing a whole volume: *image = an image outside the volume's
 * tree built on one of its files (*file), NULL if none (o->images_dir as
 * for delete). The caller frees both.
 */
int qc_volume_find_dependent(qc_ctx *ctx, char **image, char **file, const char *volume, const qc_volume_opts *o);
/* Complete or undo an interrupted operation (every operation does this first). */
int qc_volume_recover(qc_ctx *ctx, const char *volume, const qc_volume_opts *o);
/*
 * After the volume file was removed or renamed away: remove its lock,
 * journal and temporary files. QC_ERR_EXISTS while the volume still exists.
 */
int qc_volume_forget(qc_ctx *ctx, const char *volume, const qc_volume_opts *o);

/* ---- internal snapshots (the image's snapshot table) ------------------ */

/*
 * qemu-img snapshot -c/-a/-d/-l on one qcow2 file (opened read-write, so
 * refused while another process holds it). Each operation becomes visible
 * in one header write: a crash leaves the image as before or as after.
 * apply and delete take an ID or a name (the ID wins, as in qemu-img).
 */
int qc_snapshot_create(qc_ctx *ctx, const char *path, const char *name);
int qc_snapshot_apply(qc_ctx *ctx, const char *path, const char *id_or_name);
int qc_snapshot_delete(qc_ctx *ctx, const char *path, const char *id_or_name);
/* The "snapshots" array of qemu-img info (empty for none); shared lock only. */
int qc_snapshot_list(qc_ctx *ctx, json_object **out, const char *path);

/*
 * The guest view of snapshot snap of path as a new qcow2 file out (created
 * atomically, never replacing a file). Without a base, out has path's own
 * backing file (if any) and holds every cluster the snapshot has; with a
 * base (another snapshot of path, "" for its live disk), out is backed by
 * the file backing/backing_fmt, which the caller says shows the base's
 * view, and holds only clusters whose L2 entries differ from the base's.
 * Takes only the shared lock: works while QEMU runs the image, and fails
 * if the snapshot is deleted meanwhile (see split.c). *stats (if given):
 * clusters compared, copied and bytes read.
 */
typedef struct qc_split_opts {
    const char *base;
    const char *backing;
    const char *backing_fmt;
} qc_split_opts;
int qc_snapshot_split(qc_ctx *ctx, json_object **stats, const char *path, const char *snap, const char *out,
                      const qc_split_opts *o);

/*
 * A volume's snapshots between the two kinds, offline (every file is
 * opened for writing, so a running VM makes it fail), journaled like the
 * volume operations: an interrupted conversion is undone before its new
 * files are in place and completed after.
 * To external: every internal snapshot of volume becomes snap-NAME-FILE,
 * in the order they were taken, each on the one before and holding only
 * what differs from it; FILE becomes the live disk on the newest, without
 * internal snapshots. Names that are not valid volume snapshot names are
 * refused (all listed) unless names maps them ("OLD=NEW"); snapshots with
 * VM state are refused unless drop_vm_state.
 * To internal: every external snapshot of the volume becomes an internal
 * snapshot of FILE (same name and date) and its file is removed; FILE
 * keeps its view. Snapshots must share one base.
 */
typedef struct qc_convert_opts {
    const char *const *names; /* "OLD=NEW" */
    size_t nnames;
    bool drop_vm_state;
    unsigned lock_timeout_ms; /* 0: the volume default */
} qc_convert_opts;
int qc_volume_to_external(qc_ctx *ctx, const char *volume, const qc_convert_opts *o);
int qc_volume_to_internal(qc_ctx *ctx, const char *volume, const qc_convert_opts *o);

/* ---- check ----------------------------------------------------------- */

enum { QC_REPAIR_NONE = 0, QC_REPAIR_LEAKS = 1, QC_REPAIR_ALL = 2 };
/*
 * qemu-img check: fills *out with qemu-img check --output=json's keys plus
 * "messages" (the findings, one line each). Returns 0 when the check ran
 * (whatever it found); the caller derives qemu-img's exit code: corruptions
 * 2, leaks 3, else 0.
 */
int qc_check(qc_ctx *ctx, json_object **out, const char *path, const char *fmt, int repair);

/*
 * Import check (Proxmox's "untrusted" images): reads the file alone, never
 * a backing or data file, never through a symlink. *out = {"filename",
 * "format", "virtual-size", "safe": bool, "problems": [one line each]}.
 * Returns 0 with a verdict, negative if the file could not be read at all.
 */
int qc_import_check(qc_ctx *ctx, json_object **out, const char *path, const char *fmt);

/* ---- inspection ----------------------------------------------------- */

/* qemu-img info --output=json [--backing-chain]: object, or array top-first. */
int qc_info(qc_ctx *ctx, json_object **out, const char *path, const char *fmt,
            bool backing_chain);
/* qemu-img map --output=json: array of extents. */
int qc_map(qc_ctx *ctx, json_object **out, const char *path, const char *fmt);
/* Export the guest view of the chain as a sparse raw file (created anew). */
int qc_convert_raw(qc_ctx *ctx, const char *path, const char *fmt,
                   const char *out_path);

#endif
