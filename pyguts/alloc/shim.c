/* The C shim behind pyguts.alloc: NEP 49 handler functions and owned allocations, no Python inside.
 * Built on first use by pyguts.alloc.shim through pyguts.native.build (cffi API mode); its C interface
 * is pyguts.alloc.shim.CDEF. Shipped as package data. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* mremap; Python.h defines it already when cffi includes it first */
#endif
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG_ABI_VERSION 8   /* pyguts.alloc.shim.ABI_VERSION reads it from here */
enum { PG_PLAIN = 0, PG_JEMALLOC = 1, PG_MIMALLOC = 2, PG_MMAP = 3 };
/* PG_AINC for counters also touched by pg_owned_* and the mmap helpers, which cffi calls with
   the GIL released; PG_INC for handler-only counters (numpy holds the GIL around them). */
#define PG_AINC(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#ifdef Py_GIL_DISABLED   /* free-threaded CPython: handlers run concurrently */
#define PG_INC(x, n) PG_AINC(x, n)
#else
#define PG_INC(x, n) ((x) += (n))
#endif

#define PG_HUGE_PAGE ((size_t)2 << 20)   /* x86-64 / aarch64 (4 KiB base pages) PMD size */
#define PG_CACHE_MAX 1024      /* bytes: numpy's default handler caches below 1024 too */
#define PG_CACHE_STEP 16       /* bucket width; malloc's alignment */
#define PG_NCACHE 4            /* blocks per bucket: at most ~130 KiB cached per allocator */
typedef struct { unsigned count; void *blocks[PG_NCACHE]; } pg_bucket;

typedef struct {
    void *(*malloc_fn)(size_t);
    void *(*calloc_fn)(size_t, size_t);
    void *(*realloc_fn)(void *, size_t);
    void (*free_fn)(void *);
    void *(*memalign_fn)(size_t, size_t);   /* (alignment, size), C11 order */
    void *zalign_fn;                        /* mallocx or mi_zalloc_aligned, else NULL */
    int family;
    int flags;                              /* jemalloc: mallocx/rallocx flags (pyguts' own arena) */
    int huge;                               /* mmap: madvise(MADV_HUGEPAGE) */
    int lazy_zero;                          /* clear huge blocks with pg_lazy_zero, not the library */
    uint64_t counts[8];                     /* see COUNTER_NAMES */
    pg_bucket cache[PG_CACHE_MAX / PG_CACHE_STEP + 1];
} pg_ctx;

/* numpy/ndarraytypes.h: PyDataMemAllocator and PyDataMem_Handler (NEP 49, version 1). */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} pg_allocator;

typedef struct {
    char name[127];
    uint8_t version;
    pg_allocator allocator;
} pg_handler;

/* numpy requires this exact capsule name; static so that it outlives every capsule. */
const char pg_capsule_name[] = "mem_handler";

int pg_abi_version(void) { return PG_ABI_VERSION; }

static size_t pg_page(void) {
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

static size_t pg_round(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* mmap with the start aligned to `align` (a power of two, >= page); the slack is unmapped. */
static void *pg_map(pg_ctx *c, size_t nbytes, size_t align) {
    size_t page = pg_page(), len = pg_round(nbytes ? nbytes : 1, page);
    if (align < page) align = page;
    if (c->huge && len >= PG_HUGE_PAGE && align < PG_HUGE_PAGE) align = PG_HUGE_PAGE;
    size_t span = len + (align - page);
    char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *start = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    if (start > raw) munmap(raw, (size_t)(start - raw));
    if (raw + span > start + len) munmap(start + len, (size_t)(raw + span - (start + len)));
#ifdef MADV_HUGEPAGE
    if (c->huge) madvise(start, len, MADV_HUGEPAGE);
#endif
    PG_AINC(c->counts[6], len);
    return start;
}

static void pg_unmap(pg_ctx *c, void *p, size_t nbytes) {
    size_t len = pg_round(nbytes ? nbytes : 1, pg_page());
    munmap(p, len);
    PG_AINC(c->counts[6], -(uint64_t)len);
}

/* The mmap handler keeps the mapping length in a header page in front of the data, because
   NEP 49's realloc does not pass the old size. */
static void *mm_alloc(pg_ctx *c, size_t n) {
    size_t page = pg_page();
    char *base = pg_map(c, n + page, page);
    if (!base) return NULL;
    *(size_t *)base = pg_round(n + page, page);
    return base + page;
}

static void mm_free(pg_ctx *c, void *p) {
    char *base = (char *)p - pg_page();
    pg_unmap(c, base, *(size_t *)base);
}

static void *mm_realloc(pg_ctx *c, void *p, size_t n) {
    if (!p) return mm_alloc(c, n);
    size_t page = pg_page();
    char *base = (char *)p - page;
    size_t old = *(size_t *)base, len = pg_round(n + page, page);
    char *moved = mremap(base, old, len, MREMAP_MAYMOVE);
    if (moved == MAP_FAILED) return NULL;
    *(size_t *)moved = len;
    PG_AINC(c->counts[6], len - old);
    return moved + page;
}

/* ---- NEP 49 handler functions: numpy calls them with the GIL held (numpy's own default
   handler relies on that for its cache, numpy/_core/src/multiarray/alloc.c).
   Like numpy's default handler, small blocks (<= PG_CACHE_MAX bytes) freed through the handler
   are kept in a small per-allocator cache and handed out again; every small block is allocated
   with its size rounded up to PG_CACHE_STEP so any block of a bucket fits any request of it.
   The cache is off for mmap (one mapping per array is the point) and on free-threaded builds. */
#if defined(Py_GIL_DISABLED)
#define PG_USE_CACHE(c) 0
#else
#define PG_USE_CACHE(c) ((c)->family != PG_MMAP)
#endif

static void *cache_take(pg_ctx *c, size_t n) {
    pg_bucket *b = &c->cache[(n + PG_CACHE_STEP - 1) / PG_CACHE_STEP];
    if (!b->count) return NULL;
    PG_INC(c->counts[7], -(uint64_t)pg_round(n ? n : 1, PG_CACHE_STEP));
    return b->blocks[--b->count];
}

static int cache_put(pg_ctx *c, void *p, size_t n) {
    pg_bucket *b = &c->cache[(n + PG_CACHE_STEP - 1) / PG_CACHE_STEP];
    if (b->count == PG_NCACHE) return 0;
    b->blocks[b->count++] = p;
    PG_INC(c->counts[7], pg_round(n ? n : 1, PG_CACHE_STEP));
    return 1;
}

/* numpy's own handler advises huge pages for every block of 4 MiB or more (default_malloc and
   friends, numpy/_core/src/multiarray/alloc.c), unless switched off with
   numpy._core.multiarray._set_madvise_hugepage(False): so do these, with the switch as pyguts.alloc.use
   last read it (pg_set_numpy_hugepage). */
#define PG_NUMPY_HUGE_MIN ((size_t)1 << 22)
static int pg_numpy_hugepage = 1;

void pg_set_numpy_hugepage(int on) { __atomic_store_n(&pg_numpy_hugepage, on, __ATOMIC_RELAXED); }

static void *pg_advise(void *p, size_t n) {
#ifdef MADV_HUGEPAGE
    if (p && n >= PG_NUMPY_HUGE_MIN && __atomic_load_n(&pg_numpy_hugepage, __ATOMIC_RELAXED)) {
        size_t page = pg_page(), offset = page - (uintptr_t)p % page;   /* from the next page on, as numpy */
        madvise((char *)p + offset, n - offset, MADV_HUGEPAGE);
    }
#endif
    return p;
}

/* The library's malloc, calloc and realloc. jemalloc goes through mallocx/rallocx (realloc_fn holds
   rallocx) with the context's flags, which name the arena pyguts made for itself (registry.py). */
#define PG_MALLOCX_ZERO 0x40
typedef void *(*pg_mallocx_fn)(size_t, int);
#define PG_JEMALLOC_SMALL_MAX 14336   /* jemalloc 5's largest small size class with 4 KiB pages */
typedef void *(*pg_rallocx_fn)(void *, size_t, int);

static void *lib_malloc(pg_ctx *c, size_t n, int zero) {
    if (c->family == PG_JEMALLOC)   /* mallocx(0) is undefined */
        return ((pg_mallocx_fn)c->zalign_fn)(n ? n : 1, c->flags | (zero ? PG_MALLOCX_ZERO : 0));
    return zero ? c->calloc_fn(1, n) : c->malloc_fn(n);
}

static void *lib_realloc(pg_ctx *c, void *p, size_t n) {
    if (c->family != PG_JEMALLOC) return c->realloc_fn(p, n);
    return p ? ((pg_rallocx_fn)(void *)c->realloc_fn)(p, n ? n : 1, c->flags) : lib_malloc(c, n, 0);
}

static void *h_malloc(void *ctx, size_t n) {
    pg_ctx *c = ctx;
    void *p;
    if (c->family == PG_MMAP) p = mm_alloc(c, n);
    else if (n <= PG_CACHE_MAX && PG_USE_CACHE(c)) {
        p = cache_take(c, n);
        if (!p) p = lib_malloc(c, pg_round(n ? n : 1, PG_CACHE_STEP), 0);
    } else p = pg_advise(lib_malloc(c, n, 0), n);
    if (p) PG_INC(c->counts[0], 1);
    return p;
}

/* Zeroing a huge block without touching it: numpy's default calloc gets fresh pages from the kernel
   there (glibc maps every block above its largest mmap threshold, 32 MiB), zero-filled on first touch;
   mimalloc and tcmalloc hand back freed memory and clear it with memset, which faulted all 256 MiB in
   for every np.zeros (13,000x numpy's time). So for them (ctx->lazy_zero), from that size on, the
   block is taken uncleared and its whole pages are given back (MADV_DONTNEED on private anonymous
   memory: they read as zero and are faulted in on first touch, as numpy's are); the partial pages at
   either end are cleared. glibc maps such blocks fresh and jemalloc knows when its pages are fresh:
   their own calloc is left to it. */
#define PG_LAZY_ZERO_MIN ((size_t)32 << 20)

static void *pg_lazy_zero(void *p, size_t n) {
    if (!p) return p;
    size_t page = pg_page();
    char *start = p, *end = start + n;
    char *first = (char *)pg_round((uintptr_t)start, page), *last = (char *)((uintptr_t)end / page * page);
    if (last <= first || madvise(first, (size_t)(last - first), MADV_DONTNEED)) {
        memset(p, 0, n);   /* no whole page, or refused: clear it all */
        return p;
    }
    memset(start, 0, (size_t)(first - start));
    memset(last, 0, (size_t)(end - last));
    return p;
}

static void *h_calloc(void *ctx, size_t nelem, size_t elsize) {
    pg_ctx *c = ctx;
    void *p;
    size_t n;
    if (__builtin_mul_overflow(nelem, elsize, &n)) return NULL;   /* no 64-bit division */
    if (c->family == PG_MMAP) p = mm_alloc(c, n);     /* fresh anonymous pages are zero */
    else if (n <= PG_CACHE_MAX && PG_USE_CACHE(c)) {
        p = cache_take(c, n);
        if (p) memset(p, 0, n);
        else p = lib_malloc(c, pg_round(n ? n : 1, PG_CACHE_STEP), 1);
    } else if (n >= PG_LAZY_ZERO_MIN && c->lazy_zero) p = pg_advise(pg_lazy_zero(lib_malloc(c, n, 0), n), n);
    else p = pg_advise(lib_malloc(c, n, 1), n);
    if (p) PG_INC(c->counts[0], 1);
    return p;
}

static void *h_realloc(void *ctx, void *ptr, size_t n) {
    pg_ctx *c = ctx;
    void *p;
    if (c->family == PG_MMAP) p = mm_realloc(c, ptr, n);
    else p = pg_advise(lib_realloc(c, ptr, n <= PG_CACHE_MAX ? pg_round(n ? n : 1, PG_CACHE_STEP) : n), n);
    if (p) PG_INC(c->counts[ptr ? 2 : 0], 1);
    return p;
}

static void h_free(void *ctx, void *ptr, size_t n) {
    pg_ctx *c = ctx;
    if (!ptr) return;      /* numpy may free NULL (argsort, empty resizes) */
    PG_INC(c->counts[1], 1);
    if (c->family == PG_MMAP) mm_free(c, ptr);
    /* n is numpy's size for the block, which numpy's own cache trusts the same way */
    else if (!(n <= PG_CACHE_MAX && PG_USE_CACHE(c) && cache_put(c, ptr, n))) c->free_fn(ptr);
}

/* ---- set-up: one ctx and one handler per allocator, never freed. Addresses are uintptr_t. */
uintptr_t pg_capsule_name_addr(void) { return (uintptr_t)pg_capsule_name; }

uintptr_t pg_ctx_new(uintptr_t m, uintptr_t ca, uintptr_t re, uintptr_t fr, uintptr_t al,
                     uintptr_t za, int family, int huge, int flags, int lazy_zero) {
    pg_ctx *c = calloc(1, sizeof *c);
    if (!c) return 0;
    c->malloc_fn = (void *(*)(size_t))m;
    c->calloc_fn = (void *(*)(size_t, size_t))ca;
    c->realloc_fn = (void *(*)(void *, size_t))re;
    c->free_fn = (void (*)(void *))fr;
    c->memalign_fn = (void *(*)(size_t, size_t))al;
    c->zalign_fn = (void *)za;
    c->family = family;
    c->huge = huge;
    c->flags = flags;
    c->lazy_zero = lazy_zero;
    return (uintptr_t)c;
}

uintptr_t pg_handler_new(const char *name, uintptr_t c) {
    pg_handler *h = calloc(1, sizeof *h);
    if (!h) return 0;
    strncpy(h->name, name, sizeof h->name - 1);
    h->version = 1;
    h->allocator.ctx = (void *)c;
    h->allocator.malloc = h_malloc;
    h->allocator.calloc = h_calloc;
    h->allocator.realloc = h_realloc;
    h->allocator.free = h_free;
    return (uintptr_t)h;
}

void pg_ctx_counts(uintptr_t ctx, uint64_t *out) {
    pg_ctx *c = (pg_ctx *)ctx;
    for (int i = 0; i < 8; i++) out[i] = __atomic_load_n(&c->counts[i], __ATOMIC_RELAXED);
}

/* ---- owned allocations (pyguts.alloc.empty/zeros): alignment is a power of two >= 16. */
#define PG_OVER_MAX 256   /* plain libraries: alignments up to this are taken by over-allocating */
#define PG_OVER(c, align) ((c)->family != PG_JEMALLOC && (c)->family != PG_MIMALLOC && \
                           (c)->family != PG_MMAP && (align) > 16 && (align) <= PG_OVER_MAX)
uintptr_t pg_owned_alloc(uintptr_t ctx, size_t nbytes, size_t align, int zero) {
    pg_ctx *c = (pg_ctx *)ctx;
    size_t n = nbytes ? nbytes : 1;
    void *p;
    int lazy = zero && n >= PG_LAZY_ZERO_MIN && c->lazy_zero;
    if (lazy) zero = 0;   /* cleared below without touching the pages (pg_lazy_zero) */
    switch (c->family) {
    case PG_MMAP:
        p = pg_map(c, n, align);
        break;
    case PG_JEMALLOC:     /* mallocx(size, MALLOCX_LG_ALIGN(lg) | MALLOCX_ZERO | arena) */
        p = NULL;
        /* Asked to align, jemalloc takes a large block (over 14 KiB) from the arena, never from its
         * thread cache (arena_palloc): 3x slower. Unasked, large blocks come cacheline-aligned
         * (cache-oblivious offsets are whole cachelines), so try that first and check the address. */
        if (n > PG_JEMALLOC_SMALL_MAX && align <= 64) {
            p = ((pg_mallocx_fn)c->zalign_fn)(n, (zero ? PG_MALLOCX_ZERO : 0) | c->flags);
            if (p && ((uintptr_t)p & (align - 1))) {
                c->free_fn(p);
                p = NULL;
            }
        }
        if (!p)
            p = ((pg_mallocx_fn)c->zalign_fn)(n, __builtin_ctzll(align) | (zero ? PG_MALLOCX_ZERO : 0) | c->flags);
        break;
    case PG_MIMALLOC:     /* mi_zalloc_aligned(size, alignment) */
        p = zero ? ((void *(*)(size_t, size_t))c->zalign_fn)(n, align) : c->memalign_fn(align, n);
        break;
    default:
        if (align <= 16) {   /* calloc: fresh pages stay untouched. Rounded to 16 B: tcmalloc's 8-byte class is 8-aligned. */
            p = zero ? c->calloc_fn(1, pg_round(n, 16)) : c->malloc_fn(pg_round(n, 16));
        } else if (PG_OVER(c, align)) {
            /* glibc's memalign splits and frees chunks (memalign(64, 64 KiB): 71 ns, malloc: 10 ns), so
             * take align bytes more and keep the library's pointer in the word before the aligned one
             * (malloc's pointers are 16-aligned: there are at least 16 bytes in front). */
            char *raw = zero ? c->calloc_fn(1, n + align) : c->malloc_fn(n + align);
            p = raw ? (void *)(((uintptr_t)raw + align) & ~(uintptr_t)(align - 1)) : NULL;
            if (p) ((void **)p)[-1] = raw;
        } else {
            p = c->memalign_fn(align, pg_round(n, align));
            if (p && zero) memset(p, 0, n);
        }
    }
    if (lazy) pg_lazy_zero(p, n);
    if (p) {
        PG_AINC(c->counts[3], 1);
        PG_AINC(c->counts[5], n);
    }
    return (uintptr_t)p;
}

void pg_owned_free(uintptr_t ctx, uintptr_t addr, size_t nbytes, size_t align) {
    pg_ctx *c = (pg_ctx *)ctx;
    void *p = (void *)addr;
    size_t n = nbytes ? nbytes : 1;
    if (!p) return;
    PG_AINC(c->counts[4], 1);
    PG_AINC(c->counts[5], -(uint64_t)n);
    if (c->family == PG_MMAP) pg_unmap(c, p, n);
    else if (PG_OVER(c, align)) c->free_fn(((void **)p)[-1]);
    else c->free_fn(p);
}
