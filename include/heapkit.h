/* heapkit: dynamic memory management in C.
 *
 *   heapkit/vm.h      reserve / commit / decommit / release, growable regions
 *   heapkit/engine.h  the classic engines behind one interface
 *   heapkit/alloc.h   the general-purpose thread-caching allocator (hk_malloc ...)
 *   heapkit/heap.h    private heaps, created and destroyed as a unit
 *   heapkit/pool.h    fixed-size pools, arenas, per-thread pools, slab caches
 *
 * All public names begin with hk_ / HK_. */
#ifndef HEAPKIT_H
#define HEAPKIT_H

#define HK_VERSION_MAJOR 0
#define HK_VERSION_MINOR 1
#define HK_VERSION_STRING "0.1.0"

#include "heapkit/vm.h"
#include "heapkit/engine.h"
#if __has_include("heapkit/alloc.h")
#include "heapkit/alloc.h"
#endif
#include "heapkit/heap.h"
#if __has_include("heapkit/pool.h")
#include "heapkit/pool.h"
#endif

#endif
