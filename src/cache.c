/* cache.c - a bounded LRU cache of cluster-sized metadata tables. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* (Re)allocate the slots; what the cache is and depends on stays. */
int qc_cache_init(qc_ctx *ctx, qc_cache *c, size_t table_size, size_t bytes)
{
    c->budget = bytes;
    size_t cap = bytes / table_size;
    if (cap < 4)
        cap = 4;
    if (cap > 4096)
        cap = 4096;
    c->table_size = table_size;
    c->cap = (unsigned)cap;
    c->last = 0;
    c->tick = 0;
    c->slots = qc_calloc(ctx, cap, sizeof(*c->slots));
    return c->slots ? 0 : QC_ERR_NOMEM;
}

void qc_cache_free(qc_cache *c)
{
    if (!c->slots)
        return;
    for (unsigned i = 0; i < c->cap; i++)
        free(c->slots[i].data);
    free(c->slots);
    c->slots = NULL;
}

void qc_cache_forget(qc_cache *c, uint64_t off)
{
    for (unsigned i = 0; c->slots && i < c->cap; i++)
        if (c->slots[i].off == off) {
            c->slots[i].off = 0;
            c->slots[i].dirty = false;
        }
}

uint8_t *qc_cache_peek(qc_cache *c, uint64_t off)
{
    for (unsigned i = 0; off && c->slots && i < c->cap; i++)
        if (c->slots[i].off == off)
            return c->slots[i].data;
    return NULL;
}

int qc_cache_move(qc_image *img, qc_cache *c, uint64_t from, uint64_t to, const char *what)
{
    uint8_t *data;
    int r = qc_cache_get(img, c, from, &data, what);
    if (r < 0)
        return r;
    qc_cache_forget(c, to);
    c->slots[c->last].off = to; /* the slot qc_cache_get just used */
    c->slots[c->last].dirty = true;
    return 0;
}

/* Find the slot for off, or the least recently used one to load into. */
static qc_cached *lookup(qc_cache *c, uint64_t off, bool *hit)
{
    /* walks of a table tree hit the same table many times in a row */
    if (c->last < c->cap && c->slots[c->last].off == off && off) {
        *hit = true;
        return &c->slots[c->last];
    }
    qc_cached *victim = &c->slots[0];
    for (unsigned i = 0; i < c->cap; i++) {
        qc_cached *s = &c->slots[i];
        if (s->off == off) {
            *hit = true;
            return s;
        }
        if (!s->off) {
            if (victim->off)
                victim = s;
        } else if (victim->off && s->used < victim->used) {
            victim = s;
        }
    }
    *hit = false;
    return victim;
}

/* Slots are allocated on first use. */
static int ready(qc_image *img, qc_cache *c)
{
    return c->slots ? 0 : qc_cache_init(img->ctx, c, c->table_size, c->budget);
}

/* The slot for off: its own (hit), or a victim written back and given a buffer. */
static int take(qc_image *img, qc_cache *c, uint64_t off, qc_cached **slot, bool *hit)
{
    int r = ready(img, c);
    if (r < 0)
        return r;
    qc_cached *s = lookup(c, off, hit);
    s->used = ++c->tick;
    c->last = (unsigned)(s - c->slots); /* the next lookup is likely for the same table */
    *slot = s;
    if (*hit)
        return 0;
    if (s->off && s->dirty && (r = qc_cache_writeback(img, c, s)) < 0)
        return r;
    if (!s->data && !(s->data = qc_malloc(img->ctx, c->table_size)))
        return QC_ERR_NOMEM;
    return 0;
}

int qc_cache_get(qc_image *img, qc_cache *c, uint64_t off, uint8_t **data, const char *what)
{
    bool hit;
    qc_cached *s;
    int rr = take(img, c, off, &s, &hit);
    if (rr < 0)
        return rr;
    if (hit) {
        *data = s->data;
        return 0;
    }
    s->off = 0;
    int r = qc_pread_exact(img->ctx, img->fd, img->filename, s->data, c->table_size, off, what);
    if (r < 0)
        return r;
    s->off = off;
    s->dirty = false;
    *data = s->data;
    return 0;
}

int qc_cache_new(qc_image *img, qc_cache *c, uint64_t off, uint8_t **data)
{
    bool hit;
    qc_cached *s;
    int r = take(img, c, off, &s, &hit);
    if (r < 0)
        return r;
    memset(s->data, 0, c->table_size);
    s->off = off;
    s->dirty = true;
    *data = s->data;
    return 0;
}

/* Write a slot's table to its place, unless a corrupt image put metadata there. */
static int write_slot(qc_image *img, qc_cache *c, qc_cached *s)
{
    int r = qc_overlap_check(img, s->off, c->table_size, c->kind);
    if (r == 0)
        r = qc_pwrite_full(img->ctx, img->fd, img->filename, s->data, c->table_size, s->off);
    if (r < 0)
        return r;
    img->unsynced = true;
    s->dirty = false;
    return 0;
}

int qc_write_entries(qc_image *img, const uint64_t *t, uint64_t lo, uint64_t hi, uint64_t off)
{
    int r = qc_overlap_check(img, off + lo * 8, (hi - lo) * 8, QC_META_TABLE);
    return r < 0 ? r : qc_write_u64s(img, t + lo, hi - lo, off + lo * 8);
}

/*
 * What the tables of c may point at goes first. An L2 table may point at
 * clusters whose refcounts and data are not yet on disk: the refcount
 * blocks (its dependency) are written and linked, then one fsync, so a
 * crash can only leak, never corrupt.
 */
static int flush_depends(qc_image *img, qc_cache *c)
{
    /* Not in a shadow update: everything it writes is new, unknown to the
     * committed image until its commit makes all of it durable at once. */
    return c->depends && !img->shadow ? qc_cache_durable(img, c->depends) : 0;
}

int qc_cache_writeback(qc_image *img, qc_cache *c, qc_cached *s)
{
    int r = flush_depends(img, c);
    return r < 0 ? r : write_slot(img, c, s);
}

int qc_cache_flush(qc_image *img, qc_cache *c)
{
    bool any = false;
    for (unsigned i = 0; c->slots && i < c->cap; i++) /* no slots: their allocation failed */
        any |= c->slots[i].off && c->slots[i].dirty;
    /* Dependencies once for all tables, not once per table. */
    int r = any ? flush_depends(img, c) : 0;
    for (unsigned i = 0; any && r == 0 && i < c->cap; i++) {
        qc_cached *s = &c->slots[i];
        if (s->off && s->dirty)
            r = write_slot(img, c, s);
    }
    /* the blocks must be durable before the table points at them */
    if (r == 0 && c->parent && c->parent_hi > c->parent_lo) {
        if ((r = qc_img_sync(img)) == 0)
            r = qc_write_entries(img, *c->parent, c->parent_lo, c->parent_hi, *c->parent_off);
        if (r == 0) {
            c->parent_lo = UINT64_MAX;
            c->parent_hi = 0;
        }
    }
    return r;
}

int qc_cache_durable(qc_image *img, qc_cache *c)
{
    int r = qc_cache_flush(img, c);
    return r < 0 ? r : qc_img_sync(img);
}

void qc_cache_mark_dirty(qc_cache *c, const uint8_t *data)
{
    if (c->last < c->cap && c->slots[c->last].data == data) {
        c->slots[c->last].dirty = true;
        return;
    }
    for (unsigned i = 0; i < c->cap; i++)
        if (c->slots[i].data == data)
            c->slots[i].dirty = true;
}
