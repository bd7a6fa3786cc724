/* C++ operators new and delete, written in C under their Itanium-ABI
 * mangled names so that libheapkit.so does not pull libstdc++ into every
 * program (1.4 MB of resident memory for a C program). The new_handler
 * loop and std::bad_alloc are reached through weak references: they exist
 * exactly when a C++ runtime is loaded, which is when these run. */
#include "../core/core.h"

#define HK_EXPORT __attribute__((visibility("default")))

typedef void (*hk_new_handler_t)(void);
extern hk_new_handler_t _ZSt15get_new_handlerv(void) __attribute__((weak));   /* std::get_new_handler() */
extern void *__cxa_allocate_exception(size_t) __attribute__((weak));
extern void __cxa_throw(void *, void *, void (*)(void *)) __attribute__((weak, noreturn));
extern char _ZTISt9bad_alloc[] __attribute__((weak));                        /* typeid(std::bad_alloc) */
extern void *_ZTVSt9bad_alloc[] __attribute__((weak));                       /* its vtable */
extern void _ZNSt9bad_allocD1Ev(void *) __attribute__((weak));               /* its destructor */

HK_COLD HK_NORETURN static void throw_bad_alloc(void)
{
    if (__cxa_allocate_exception && __cxa_throw && _ZTVSt9bad_alloc && _ZTISt9bad_alloc) {
        void **e = __cxa_allocate_exception(sizeof(void *));
        e[0] = &_ZTVSt9bad_alloc[2];      /* past offset-to-top and the typeinfo pointer */
        __cxa_throw(e, _ZTISt9bad_alloc, _ZNSt9bad_allocD1Ev);
    }
    hk__fatal("heapkit: operator new: out of memory and no C++ runtime to throw std::bad_alloc\n");
}

/* The standard's loop: call the new_handler while there is one. */
HK_COLD static void *new_retry(size_t n, size_t align, bool nothrow)
{
    for (;;) {
        hk_new_handler_t h = _ZSt15get_new_handlerv ? _ZSt15get_new_handlerv() : NULL;
        if (!h) {
            if (nothrow) return NULL;
            throw_bad_alloc();
        }
        h();
        void *p = align > 16 ? hk_aligned_alloc(align, n) : hk__malloc(n);
        if (p) return p;
    }
}

static inline void *new_plain(size_t n)
{
    void *p = hk__malloc(n);
    return hk_likely(p != NULL) ? p : new_retry(n, 0, false);
}

static inline void *new_aligned(size_t n, size_t align, bool nothrow)
{
    void *p = hk_aligned_alloc(align, n);
    return p ? p : new_retry(n, align, nothrow);
}

static inline void *new_nothrow(size_t n)
{
    void *p = hk__malloc(n);
    return p ? p : new_retry(n, 0, true);
}

#define HK_NEW(name, sym, params, body) \
    HK_EXPORT void *name params __asm__(sym); \
    void *name params { body }
#define HK_NEW_ARRAY(name, sym, params, target) \
    HK_EXPORT void *name params __asm__(sym) __attribute__((alias(target), weak));

/* operator new / new[]: (size_t), (size_t, nothrow_t const &), (size_t, align_val_t),
 * (size_t, align_val_t, nothrow_t const &); new[] is an alias of new. */
HK_NEW(hk_cxx_new,          "_Znwm",                            (size_t n), return new_plain(n);)
HK_NEW(hk_cxx_new_nt,       "_ZnwmRKSt9nothrow_t",              (size_t n, const void *t), (void)t; return new_nothrow(n);)
HK_NEW(hk_cxx_new_al,       "_ZnwmSt11align_val_t",             (size_t n, size_t al), return new_aligned(n, al, false);)
HK_NEW(hk_cxx_new_al_nt,    "_ZnwmSt11align_val_tRKSt9nothrow_t", (size_t n, size_t al, const void *t), (void)t; return new_aligned(n, al, true);)
HK_NEW_ARRAY(hk_cxx_new_a,       "_Znam",                             (size_t n), "_Znwm")
HK_NEW_ARRAY(hk_cxx_new_a_nt,    "_ZnamRKSt9nothrow_t",               (size_t n, const void *t), "_ZnwmRKSt9nothrow_t")
HK_NEW_ARRAY(hk_cxx_new_a_al,    "_ZnamSt11align_val_t",              (size_t n, size_t al), "_ZnwmSt11align_val_t")
HK_NEW_ARRAY(hk_cxx_new_a_al_nt, "_ZnamSt11align_val_tRKSt9nothrow_t", (size_t n, size_t al, const void *t), "_ZnwmSt11align_val_tRKSt9nothrow_t")

/* operator delete / delete[] in all their forms: one body, the others
 * aliases of it. The sized, aligned and nothrow forms pass arguments that
 * free does not read, which the C calling conventions allow (the callee
 * ignores the registers or stack slots it does not use). Twelve inlined
 * copies of the free fast path were 4 KiB of the library's resident text. */
HK_EXPORT void hk_cxx_del(void *p) __asm__("_ZdlPv");
void hk_cxx_del(void *p) { hk__free(p); }
#define HK_DEL(name, sym) HK_EXPORT void name(void *p) __asm__(sym) __attribute__((alias("_ZdlPv"), weak));
HK_DEL(hk_cxx_del_a,        "_ZdaPv")
HK_DEL(hk_cxx_del_s,        "_ZdlPvm")
HK_DEL(hk_cxx_del_a_s,      "_ZdaPvm")
HK_DEL(hk_cxx_del_nt,       "_ZdlPvRKSt9nothrow_t")
HK_DEL(hk_cxx_del_a_nt,     "_ZdaPvRKSt9nothrow_t")
HK_DEL(hk_cxx_del_al,       "_ZdlPvSt11align_val_t")
HK_DEL(hk_cxx_del_a_al,     "_ZdaPvSt11align_val_t")
HK_DEL(hk_cxx_del_s_al,     "_ZdlPvmSt11align_val_t")
HK_DEL(hk_cxx_del_a_s_al,   "_ZdaPvmSt11align_val_t")
HK_DEL(hk_cxx_del_al_nt,    "_ZdlPvSt11align_val_tRKSt9nothrow_t")
HK_DEL(hk_cxx_del_a_al_nt,  "_ZdaPvSt11align_val_tRKSt9nothrow_t")
