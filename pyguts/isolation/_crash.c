/* The native half of an isolated child's crash report (pyguts/isolation/native.py).

   pg_crash_install(fd) puts a handler in front of faulthandler's for the fatal signals. On a
   crash it writes, as text lines starting with "pyguts-native:", the signal, its code and fault
   address, the crashing thread's native return addresses (backtrace()), and the lines of
   /proc/self/maps that hold those addresses; then it hands the signal to the handler that was
   there before (faulthandler, which writes the Python frames and lets the signal kill the child).
   The parent symbolizes the addresses: nothing here looks up a symbol.

   Only async-signal-safe calls run in the handler: write, open, read, close, sigaction, raise,
   and backtrace(), whose one unsafe step (loading libgcc_s) the constructor below does ahead. */
#define _GNU_SOURCE
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#define PG_MAX_FRAMES 128
#define PG_NFATAL 5

static const int pg_fatal[PG_NFATAL] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
static struct sigaction pg_previous[PG_NFATAL];
static int pg_fd = -1;
static int pg_entered;   /* set once, atomically, by the first crash */
static void *pg_frames[PG_MAX_FRAMES];
static char pg_maps[1 << 20];   /* untouched (so never paged in) until a crash */

static void pg_put(const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(pg_fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void pg_puts(const char *s) { pg_put(s, strlen(s)); }

static void pg_put_hex(uintptr_t v)
{
    char buf[2 + 2 * sizeof v];
    int i = sizeof buf;
    do {
        buf[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    buf[--i] = 'x';
    buf[--i] = '0';
    pg_put(buf + i, sizeof buf - i);
}

static void pg_put_dec(long v)
{
    char buf[24];
    int i = sizeof buf;
    unsigned long u = v < 0 ? 0UL - (unsigned long)v : (unsigned long)v;
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        buf[--i] = '-';
    pg_put(buf + i, sizeof buf - i);
}

static uintptr_t pg_pc(void *context)
{
    const ucontext_t *uc = context;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;
#endif
}

static uintptr_t pg_parse_hex(const char **p, const char *end)
{
    uintptr_t v = 0;
    for (; *p < end; (*p)++) {
        char c = **p;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            break;
        v = v << 4 | (uintptr_t)d;
    }
    return v;
}

/* The maps lines holding any of the n addresses in want[]. */
static void pg_write_maps(const uintptr_t *want, int n)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    size_t len = 0;
    if (fd < 0)
        return;
    while (len < sizeof pg_maps) {
        ssize_t r = read(fd, pg_maps + len, sizeof pg_maps - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    const char *line = pg_maps, *end = pg_maps + len;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        const char *p = line;
        uintptr_t lo = pg_parse_hex(&p, eol);
        p += p < eol;   /* the '-' */
        uintptr_t hi = pg_parse_hex(&p, eol);
        for (int i = 0; i < n; i++) {
            if (lo <= want[i] && want[i] < hi) {
                pg_puts("pyguts-native: map ");
                pg_put(line, (size_t)(eol - line));
                pg_puts("\n");
                break;
            }
        }
        line = eol + 1;
    }
}

static void pg_record(int sig, const siginfo_t *info, void *context)
{
    static uintptr_t want[PG_MAX_FRAMES + 1];
    int n = backtrace(pg_frames, PG_MAX_FRAMES);
    uintptr_t pc = pg_pc(context);
    int first = -1;
    /* Drop this handler and the kernel's signal trampoline: start at the interrupted
       instruction when it is on the list, else past those two frames. */
    for (int i = 0; i < n && first < 0; i++)
        if ((uintptr_t)pg_frames[i] == pc)
            first = i;
    if (first < 0)
        first = n > 2 ? 2 : 0;
    pg_puts("pyguts-native: signal ");
    pg_put_dec(sig);
    pg_puts(" code ");
    pg_put_dec(info->si_code);
    pg_puts(" address ");
    pg_put_hex((uintptr_t)info->si_addr);
    pg_puts(" pc ");
    pg_put_hex(pc);
    pg_puts(" thread ");
    pg_put_dec((long)gettid());
    pg_puts("\n");
    int m = 0;
    want[m++] = (uintptr_t)info->si_addr;
    for (int i = first; i < n; i++) {
        pg_puts("pyguts-native: frame ");
        pg_put_hex((uintptr_t)pg_frames[i]);
        pg_puts("\n");
        want[m++] = (uintptr_t)pg_frames[i];
    }
    pg_write_maps(want, m);
    pg_puts("pyguts-native: end\n");
}

static void pg_handler(int sig, siginfo_t *info, void *context)
{
    int saved_errno = errno;
    int k = 0;
    while (k < PG_NFATAL - 1 && pg_fatal[k] != sig)
        k++;
    /* Only the first crash is recorded; a second one (another thread, or inside this) only chains. */
    if (__atomic_exchange_n(&pg_entered, 1, __ATOMIC_SEQ_CST) == 0)
        pg_record(sig, info, context);
    /* Back to the handler that was there before, and hand it this signal. sig stays blocked
       until this returns, so a raise() there or here stays pending until then, and then the
       signal's action is the default one (faulthandler restores its own predecessor). */
    const struct sigaction *before = &pg_previous[k];
    sigaction(sig, before, NULL);
    if (before->sa_flags & SA_SIGINFO)
        before->sa_sigaction(sig, info, context);
    else if (before->sa_handler == SIG_DFL)
        raise(sig);
    else if (before->sa_handler != SIG_IGN)
        before->sa_handler(sig);
    errno = saved_errno;
}

__attribute__((constructor)) static void pg_load_unwinder(void)
{
    void *frame[1];
    backtrace(frame, 1);   /* loads libgcc_s now, in the parent: never in a signal handler */
}

/* In the forked child, after faulthandler.enable: 0, or -1 when a sigaction failed. A child
   of a child (a nested isolate) finds this handler installed: it keeps the one before it. */
int pg_crash_install(int fd)
{
    struct sigaction action, current;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = pg_handler;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;   /* faulthandler's alternate stack */
    sigemptyset(&action.sa_mask);
    pg_fd = fd;
    pg_entered = 0;
    for (int k = 0; k < PG_NFATAL; k++) {
        if (sigaction(pg_fatal[k], NULL, &current) != 0)
            return -1;
        if (!((current.sa_flags & SA_SIGINFO) && current.sa_sigaction == pg_handler))
            pg_previous[k] = current;
        if (sigaction(pg_fatal[k], &action, NULL) != 0)
            return -1;
    }
    return 0;
}
