// C++ operators new and delete, forwarding to heapkit. Throwing forms run
// the new_handler loop and throw std::bad_alloc when memory stays short;
// nothrow forms return nullptr instead.
#include <new>
#include <cstddef>
#include <cstdlib>

extern "C" {
void *hk__api_malloc(std::size_t) __attribute__((visibility("hidden")));
void hk__api_free(void *) __attribute__((visibility("hidden")));
void *hk__api_aligned_alloc(std::size_t, std::size_t) __attribute__((visibility("hidden")));
}

namespace {

void *alloc_slow(std::size_t n, std::size_t align)
{
    for (;;) {
        std::new_handler h = std::get_new_handler();
        if (!h) throw std::bad_alloc();
        h();
        void *p = align ? hk__api_aligned_alloc(align, n) : hk__api_malloc(n);
        if (p) return p;
    }
}

inline void *alloc(std::size_t n)
{
    void *p = hk__api_malloc(n);
    return p ? p : alloc_slow(n, 0);
}

inline void *alloc_aligned(std::size_t n, std::align_val_t al)
{
    std::size_t a = static_cast<std::size_t>(al);
    void *p = hk__api_aligned_alloc(a, n);
    return p ? p : alloc_slow(n, a);
}

inline void *alloc_nothrow(std::size_t n) noexcept
{
    void *p = hk__api_malloc(n);
    if (p) return p;
    try { return alloc_slow(n, 0); } catch (...) { return nullptr; }
}

inline void *alloc_aligned_nothrow(std::size_t n, std::align_val_t al) noexcept
{
    std::size_t a = static_cast<std::size_t>(al);
    void *p = hk__api_aligned_alloc(a, n);
    if (p) return p;
    try { return alloc_slow(n, a); } catch (...) { return nullptr; }
}

}  // namespace

#pragma GCC visibility push(default)

void *operator new(std::size_t n) { return alloc(n); }
void *operator new[](std::size_t n) { return alloc(n); }
void *operator new(std::size_t n, const std::nothrow_t &) noexcept { return alloc_nothrow(n); }
void *operator new[](std::size_t n, const std::nothrow_t &) noexcept { return alloc_nothrow(n); }
void *operator new(std::size_t n, std::align_val_t a) { return alloc_aligned(n, a); }
void *operator new[](std::size_t n, std::align_val_t a) { return alloc_aligned(n, a); }
void *operator new(std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept { return alloc_aligned_nothrow(n, a); }
void *operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t &) noexcept { return alloc_aligned_nothrow(n, a); }

void operator delete(void *p) noexcept { hk__api_free(p); }
void operator delete[](void *p) noexcept { hk__api_free(p); }
void operator delete(void *p, std::size_t) noexcept { hk__api_free(p); }
void operator delete[](void *p, std::size_t) noexcept { hk__api_free(p); }
void operator delete(void *p, const std::nothrow_t &) noexcept { hk__api_free(p); }
void operator delete[](void *p, const std::nothrow_t &) noexcept { hk__api_free(p); }
void operator delete(void *p, std::align_val_t) noexcept { hk__api_free(p); }
void operator delete[](void *p, std::align_val_t) noexcept { hk__api_free(p); }
void operator delete(void *p, std::size_t, std::align_val_t) noexcept { hk__api_free(p); }
void operator delete[](void *p, std::size_t, std::align_val_t) noexcept { hk__api_free(p); }
void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept { hk__api_free(p); }
void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept { hk__api_free(p); }

#pragma GCC visibility pop
