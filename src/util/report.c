/* Output without stdio or malloc: a small printf subset formatted into a
 * stack buffer and written with write(2). Used by assertions, misuse
 * reports and statistics so they work inside malloc itself. */
#include "internal.h"
#include <stdarg.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

static size_t fmt_uint(char *out, uint64_t v, unsigned base, int min_digits)
{
    char tmp[24];
    size_t n = 0;
    do {
        unsigned d = (unsigned)(v % base);
        tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
        v /= base;
    } while (v);
    while ((int)n < min_digits) tmp[n++] = '0';
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static size_t vformat(char *buf, size_t cap, const char *fmt, va_list ap)
{
    size_t o = 0;
    char num[32];
#define PUT(c) do { if (o + 1 < cap) buf[o] = (c); o++; } while (0)
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') { PUT(*f); continue; }
        f++;
        int zflag = 0, lflag = 0;
        if (*f == 'z') { zflag = 1; f++; }
        else if (*f == 'l') { lflag = 1; f++; if (*f == 'l') f++; }
        size_t n = 0;
        const char *s = num;
        switch (*f) {
        case 's': s = va_arg(ap, const char *); if (!s) s = "(null)"; n = strlen(s); break;
        case 'd': {
            int64_t v = zflag ? (int64_t)va_arg(ap, ptrdiff_t) : lflag ? (int64_t)va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) { num[0] = '-'; n = 1 + fmt_uint(num + 1, (uint64_t)(-(v + 1)) + 1, 10, 1); }
            else n = fmt_uint(num, (uint64_t)v, 10, 1);
            break;
        }
        case 'u': {
            uint64_t v = zflag ? (uint64_t)va_arg(ap, size_t) : lflag ? (uint64_t)va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            n = fmt_uint(num, v, 10, 1);
            break;
        }
        case 'x': {
            uint64_t v = zflag ? (uint64_t)va_arg(ap, size_t) : lflag ? (uint64_t)va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            n = fmt_uint(num, v, 16, 1);
            break;
        }
        case 'p': {
            num[0] = '0'; num[1] = 'x';
            n = 2 + fmt_uint(num + 2, (uint64_t)(uintptr_t)va_arg(ap, void *), 16, 1);
            break;
        }
        case '%': num[0] = '%'; n = 1; break;
        case '\0': f--; n = 0; break;
        default: num[0] = '%'; num[1] = *f; n = 2; break;
        }
        for (size_t i = 0; i < n; i++) PUT(s[i]);
    }
    if (cap) buf[o < cap ? o : cap - 1] = '\0';
#undef PUT
    return o;
}

size_t hk__snprintf(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

static void write_all(const char *s, size_t n)
{
    int saved = errno;
    while (n) {
        ssize_t w = write(2, s, n);
        if (w < 0) { if (errno == EINTR) continue; break; }
        s += w; n -= (size_t)w;
    }
    errno = saved;
}

void hk__write_str(const char *s) { write_all(s, strlen(s)); }

void hk__report(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    write_all(buf, n < sizeof buf ? n : sizeof buf - 1);
}

void hk__fatal(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = vformat(buf, sizeof buf, fmt, ap);
    va_end(ap);
    write_all(buf, n < sizeof buf ? n : sizeof buf - 1);
    abort();
}

void hk__assert_fail(const char *expr, const char *file, int line)
{
    hk__fatal("heapkit: assertion failed: %s (%s:%d)\n", expr, file, line);
}
