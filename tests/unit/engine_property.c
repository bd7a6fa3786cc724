/* Property tests over every engine: seeded random sequences of malloc,
 * calloc, memalign, realloc and free against a model that knows each live
 * block's size and payload pattern; check() after every step, patterns
 * verified on every free and realloc, stats and walk compared with the
 * model at intervals. argv[1] names one engine (fails when not linked). */
#include "test.h"
#include "heapkit/engine.h"
#include <errno.h>

enum { SLOTS = 300, STEPS = 2500 };

typedef struct slot { unsigned char *p; size_t size; uint32_t seed; } slot_t;

static const char *g_name;
static uint64_t g_rng;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return g_rng;
}

static size_t rnd_size(void)
{
    unsigned k = (unsigned)(rnd() % 100);
    if (k < 70) return 1 + rnd() % 256;
    if (k < 95) return 257 + rnd() % 3840;
    return 4097 + rnd() % 61440;
}

static void pat(slot_t *s, size_t from)
{
    for (size_t i = from; i < s->size; i++) s->p[i] = (unsigned char)(s->seed + i * 131 + (i >> 9));
}
static bool pat_ok(const slot_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) if (s->p[i] != (unsigned char)(s->seed + i * 131 + (i >> 9))) return false;
    return true;
}

typedef struct acc { size_t used, bad; uintptr_t last_end; } acc_t;
static void walk_cb(void *arg, void *block, size_t size, bool in_use)
{
    acc_t *a = arg;
    if ((uintptr_t)block < a->last_end) a->bad++;   /* overlap or out of order */
    a->last_end = (uintptr_t)block + size;
    a->used += in_use;
}

static void run_seed(uint64_t seed)
{
    hk_engine_t *e = hk_engine_create(g_name, NULL);
    REQUIRE(e);
    slot_t s[SLOTS];
    memset(s, 0, sizeof s);
    g_rng = seed;
    size_t n_live = 0;
    uint32_t gen = 1;
    for (int step = 0; step < STEPS; step++) {
        slot_t *x = &s[rnd() % SLOTS];
        unsigned op = (unsigned)(rnd() % 10);
        if (!x->p) {
            size_t sz = rnd_size();
            if (op == 0) {                       /* calloc */
                x->p = hk_engine_calloc(e, 1, sz);
                REQUIRE(x->p);
                size_t nz = 0;
                for (size_t i = 0; i < sz; i++) nz += x->p[i] != 0;
                CHECK_EQ(nz, 0);
            } else if (op == 1) {                /* memalign */
                size_t al = (size_t)32 << (rnd() % 7);
                x->p = hk_engine_memalign(e, al, sz);
                REQUIRE(x->p);
                CHECK(((uintptr_t)x->p & (al - 1)) == 0);
            } else {
                x->p = hk_engine_malloc(e, sz);
                REQUIRE(x->p);
            }
            CHECK(((uintptr_t)x->p & 15) == 0);
            CHECK(hk_engine_usable_size(e, x->p) >= sz);
            x->size = sz;
            x->seed = gen++;
            pat(x, 0);
            n_live++;
        } else if (op < 4) {                     /* realloc */
            size_t sz = op == 3 ? 1 + x->size / 2 : rnd_size();
            unsigned char *q = hk_engine_realloc(e, x->p, sz);
            REQUIRE(q);
            x->p = q;
            CHECK(pat_ok(x, (x->size < sz ? x->size : sz)));
            size_t old = x->size;
            x->size = sz;
            if (sz > old) pat(x, old);
            CHECK(hk_engine_usable_size(e, x->p) >= sz);
        } else {
            CHECK(pat_ok(x, x->size));
            CHECK_EQ(hk_engine_free(e, x->p), HK_OK);
            x->p = NULL;
            n_live--;
        }
        size_t bad = hk_engine_check(e);
        if (bad) { fprintf(stderr, "  %s seed %llu step %d: check() = %zu\n", g_name, (unsigned long long)seed, step, bad); CHECK_EQ(bad, 0); break; }
        if (step % 250 == 0) {
            hk_engine_stats_t st;
            hk_engine_stats(e, &st);
            CHECK_EQ(st.live_blocks, n_live);
            acc_t a = { 0 };
            hk_engine_walk(e, walk_cb, &a);
            CHECK_EQ(a.bad, 0);
            CHECK_EQ(a.used, n_live);
            for (size_t i = 0; i < SLOTS; i++) if (s[i].p) CHECK(pat_ok(&s[i], s[i].size));
        }
        if (t_case_failures > 10) break;     /* one bug, not a thousand lines */
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (s[i].p) { CHECK(pat_ok(&s[i], s[i].size)); CHECK_EQ(hk_engine_free(e, s[i].p), HK_OK); }
    CHECK_EQ(hk_engine_check(e), 0);
    hk_engine_stats_t st;
    hk_engine_stats(e, &st);
    CHECK_EQ(st.live_blocks, 0);
    hk_engine_destroy(e);
}

static void test_seed_1(void) { run_seed(0x9E3779B97F4A7C15ull); }
static void test_seed_2(void) { run_seed(12345); }
static void test_seed_3(void) { run_seed(0xDEADBEEFCAFEull); }

static void suite(const char *name)
{
    g_name = name;
    char label[128];
    snprintf(label, sizeof label, "%s: seed 1", name); RUN_NAMED(label, test_seed_1);
    snprintf(label, sizeof label, "%s: seed 2", name); RUN_NAMED(label, test_seed_2);
    snprintf(label, sizeof label, "%s: seed 3", name); RUN_NAMED(label, test_seed_3);
}

int main(int argc, char **argv)
{
    const char *const *names = hk_engine_names();
    if (argc > 1) {
        bool found = false;
        for (const char *const *n = names; *n; n++) found |= !strcmp(*n, argv[1]);
        if (!found) { fprintf(stderr, "engine '%s' is not linked into this build\n", argv[1]); return 1; }
        suite(argv[1]);
    } else {
        if (!names[0]) printf("no engines linked in\n");
        for (const char *const *n = names; *n; n++) suite(*n);
    }
    return t_finish();
}
