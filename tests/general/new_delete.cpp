// The C++ operators new/delete as heapkit exports them (linked against
// libheapkit.a): plain, array, sized, aligned and nothrow forms, and the
// failure behaviour (std::bad_alloc / nullptr) on an impossible request.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <new>
#include <string>
#include <vector>
#include <map>
#include <heapkit/alloc.h>

static int failures;
#define EXPECT(c) do { if (!(c)) { std::fprintf(stderr, "  %s:%d: EXPECT failed: %s\n", __FILE__, __LINE__, #c); failures++; } } while (0)

struct alignas(256) Wide { unsigned char b[256]; };
struct Counted { static int live; int v; Counted() : v(7) { live++; } ~Counted() { live--; } };
int Counted::live = 0;

static volatile std::size_t huge_count = SIZE_MAX / 4;

// True when the block at p came from heapkit: heapkit's own usable-size
// query knows it and agrees with the standard one.
static bool from_heapkit(void *p, std::size_t n)
{
    return hk_malloc_usable_size(p) >= n && hk_malloc_usable_size(p) == malloc_usable_size(p);
}

int main()
{
    int *i = new int(42);
    EXPECT(*i == 42);
    EXPECT(from_heapkit(i, sizeof *i));
    delete i;

    Counted *arr = new Counted[100];
    EXPECT(Counted::live == 100 && arr[99].v == 7);
    delete[] arr;
    EXPECT(Counted::live == 0);

    for (int k = 0; k < 50; k++) {
        Wide *w = new Wide;
        EXPECT(reinterpret_cast<std::uintptr_t>(w) % 256 == 0);
        std::memset(w->b, k, sizeof w->b);
        delete w;
        Wide *wa = new Wide[3];
        EXPECT(reinterpret_cast<std::uintptr_t>(wa) % 256 == 0);
        delete[] wa;
    }
    void *big_al = ::operator new(1000, std::align_val_t(4096));
    EXPECT(reinterpret_cast<std::uintptr_t>(big_al) % 4096 == 0);
    ::operator delete(big_al, 1000, std::align_val_t(4096));

    void *s = ::operator new(77);
    EXPECT(from_heapkit(s, 77));
    ::operator delete(s, 77);             // sized delete

    // Called as functions, not new-expressions: the compiler may elide a
    // new-expression whose result is unused, and with it the failure.
    void *volatile nt = ::operator new[](static_cast<std::size_t>(huge_count), std::nothrow);
    EXPECT(nt == nullptr);
    void *nta = ::operator new(static_cast<std::size_t>(huge_count), std::align_val_t(64), std::nothrow);
    EXPECT(nta == nullptr);

    bool threw = false;
    try {
        void *volatile p = ::operator new[](static_cast<std::size_t>(huge_count));
        ::operator delete[](p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    EXPECT(threw);

    // the standard containers run on the same operators
    std::map<std::string, std::vector<int>> m;
    for (int k = 0; k < 2000; k++) m[std::to_string(k * 7919)].assign(static_cast<std::size_t>(k % 50), k);
    std::size_t total = 0;
    for (auto &kv : m) total += kv.second.size();
    EXPECT(total == 49000);

    std::printf("%s: %d failures\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}
