/*
 * memfs.h - an in-memory filesystem behind the core's I/O seam, for the
 * fuzz targets: images never touch the disk, so each run is fast and
 * hostile names cannot reach host files.
 */
#ifndef QC_MEMFS_H
#define QC_MEMFS_H

#include "qcow2chain.h"

/* Forget every file. */
void memfs_reset(void);
/* Add (or replace) a file with a copy of data. */
int memfs_add(const char *name, const void *data, size_t len);
/* Add a directory (and its parents); files added get theirs implicitly. */
int memfs_mkdir(const char *path);
/* The bytes of a file (NULL if none), valid until the next change. */
const void *memfs_data(const char *path, size_t *len);
/* The I/O table serving those files. */
const qc_io *memfs_io(void);

#endif
