/*
 * probe: one static binary that tries to escape a `repro` sandbox.
 *
 * Each subcommand makes one attempt, prints what happened, and exits 0 if
 * the attempt SUCCEEDED (an escape) or 1 if it was refused, so a test
 * asserts `exit=1`. Exceptions: `euid` only prints ids; `forkbomb` exits 0
 * when fork was refused before the safety cap (contained) and 1 otherwise;
 * `memhog` and `spin` are meant to be killed by the sandbox (`spin` takes
 * an optional TOKEN that only marks its command line).
 *
 * Built by tests/build.rs with `cc -static -O2`; it must run in an image
 * without a libc.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Never fork more than this, even when nothing stops the fork bomb: the
 * probe must not take a host down when a sandbox has no process limit. */
#define FORK_CAP 4096

static int refused(const char *what) {
    printf("refused: %s: %s (errno %d)\n", what, strerror(errno), errno);
    return 1;
}

static int succeeded(const char *what) {
    printf("SUCCEEDED: %s\n", what);
    return 0;
}

static int parse_ipv4(const char *ip, struct sockaddr_in *sa, int port) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1) {
        fprintf(stderr, "probe: bad IPv4 address `%s`\n", ip);
        exit(2);
    }
    return 0;
}

/* TCP connect with a 3 second timeout. */
static int cmd_connect(const char *ip, const char *port) {
    struct sockaddr_in sa;
    parse_ipv4(ip, &sa, atoi(port));
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return refused("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return succeeded("connect");
    if (errno != EINPROGRESS)
        return refused("connect");
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = poll(&p, 1, 3000);
    if (n == 0) {
        errno = ETIMEDOUT;
        return refused("connect (no answer in 3s)");
    }
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        return refused("getsockopt");
    if (err != 0) {
        errno = err;
        return refused("connect");
    }
    return succeeded("connect");
}

/* Whether the kernel has a route to IP: a UDP connect sends no packet. */
static int cmd_route(const char *ip) {
    struct sockaddr_in sa;
    parse_ipv4(ip, &sa, 9);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        return refused("socket");
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return refused("route (udp connect)");
    return succeeded("route exists (udp connect; no packet was sent)");
}

/* FNV-1a, to say what was read without printing it. */
static unsigned long long fnv1a(const unsigned char *b, size_t n,
                                unsigned long long h) {
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int cmd_read(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return refused("stat");
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d)
            return refused("opendir");
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                printf("entry: %s\n", e->d_name);
                n++;
            }
        }
        printf("listed %d entries\n", n);
        return succeeded("read directory");
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return refused("open");
    unsigned char buf[4096];
    unsigned long long h = 14695981039346656037ULL;
    size_t total = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) {
        h = fnv1a(buf, (size_t)r, h);
        total += (size_t)r;
    }
    if (r < 0)
        return refused("read");
    printf("read %zu bytes, fnv1a %016llx\n", total, h);
    return succeeded("read file");
}

static int cmd_write(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return refused("open for writing");
    if (write(fd, "x\n", 2) != 2)
        return refused("write");
    if (close(fd) != 0)
        return refused("close");
    return succeeded("write");
}

static int cmd_remount_root(void) {
    int mounted = mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND, NULL) == 0;
    if (mounted)
        printf("SUCCEEDED: remount / read-write\n");
    else
        refused("remount / read-write");
    int wrote = cmd_write("/x") == 0;
    return (mounted || wrote) ? 0 : 1;
}

static int cmd_mount_tmpfs(const char *dir) {
    if (mount("tmpfs", dir, "tmpfs", 0, "size=1m") != 0)
        return refused("mount tmpfs");
    return succeeded("mount tmpfs");
}

static int cmd_ptrace_pid(const char *pid) {
    pid_t p = (pid_t)atoi(pid);
    if (ptrace(PTRACE_ATTACH, p, NULL, NULL) != 0)
        return refused("ptrace attach");
    waitpid(p, NULL, __WALL);
    ptrace(PTRACE_DETACH, p, NULL, NULL);
    return succeeded("ptrace attach");
}

static int cmd_ptrace_child(void) {
    pid_t child = fork();
    if (child < 0)
        return refused("fork");
    if (child == 0) {
        for (;;)
            pause();
    }
    int rc;
    if (ptrace(PTRACE_ATTACH, child, NULL, NULL) != 0) {
        rc = refused("ptrace attach to a child");
    } else {
        waitpid(child, NULL, __WALL);
        ptrace(PTRACE_DETACH, child, NULL, NULL);
        rc = succeeded("ptrace attach to a child");
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return rc;
}

static int cmd_mknod(const char *path) {
    if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) != 0)
        return refused("mknod char 1:3");
    return succeeded("mknod char 1:3");
}

static int cmd_setuid(void) {
    if (setuid(0) != 0)
        return refused("setuid(0)");
    printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid());
    return succeeded("setuid(0)");
}

static int cmd_euid(void) {
    printf("uid=%d euid=%d gid=%d egid=%d\n", (int)getuid(), (int)geteuid(),
           (int)getgid(), (int)getegid());
    return 0;
}

/* Fork children that sleep (with stdio closed, so they hold no log pipe)
 * until fork fails, then exit and leave them running: the sandbox must kill
 * them when the step ends. TOKEN marks the children's command line, so a
 * test can look for survivors on the host. */
static int cmd_forkbomb(const char *token) {
    (void)token; /* only there to be found in the children's cmdline */
    int n = 0;
    while (n < FORK_CAP) {
        pid_t p = fork();
        if (p < 0) {
            printf("forks=%d\n", n);
            printf("contained: fork refused: %s (errno %d)\n", strerror(errno),
                   errno);
            return 0;
        }
        if (p == 0) {
            close(0);
            close(1);
            close(2);
            sleep(60);
            _exit(0);
        }
        n++;
    }
    printf("forks=%d\n", n);
    printf("NOT contained: reached the probe's own cap\n");
    return 1;
}

static int cmd_memhog(const char *mib) {
    long want = atol(mib);
    long got = 0;
    for (; got < want; got++) {
        char *p = malloc(1 << 20);
        if (!p) {
            printf("allocated %ld MiB, then malloc failed\n", got);
            return 1;
        }
        for (int i = 0; i < (1 << 20); i += 4096)
            p[i] = (char)i | 1;
    }
    printf("allocated and touched %ld MiB\n", got);
    return 0;
}

static int cmd_spin(void) {
    volatile unsigned long x = 0;
    for (;;)
        x++;
    return 0;
}

static int usage(void) {
    fprintf(stderr,
            "usage: probe connect IP PORT | route IP | read PATH | write PATH "
            "| remount-root | mount-tmpfs DIR | ptrace-pid PID | ptrace-child "
            "| mknod PATH | setuid | euid | forkbomb TOKEN | memhog MIB | spin [TOKEN]\n");
    return 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2)
        return usage();
    const char *c = argv[1];
#define IS(name, nargs) (strcmp(c, name) == 0 && argc == 2 + (nargs))
    if (IS("connect", 2))
        return cmd_connect(argv[2], argv[3]);
    if (IS("route", 1))
        return cmd_route(argv[2]);
    if (IS("read", 1))
        return cmd_read(argv[2]);
    if (IS("write", 1))
        return cmd_write(argv[2]);
    if (IS("remount-root", 0))
        return cmd_remount_root();
    if (IS("mount-tmpfs", 1))
        return cmd_mount_tmpfs(argv[2]);
    if (IS("ptrace-pid", 1))
        return cmd_ptrace_pid(argv[2]);
    if (IS("ptrace-child", 0))
        return cmd_ptrace_child();
    if (IS("mknod", 1))
        return cmd_mknod(argv[2]);
    if (IS("setuid", 0))
        return cmd_setuid();
    if (IS("euid", 0))
        return cmd_euid();
    if (IS("forkbomb", 1))
        return cmd_forkbomb(argv[2]);
    if (IS("memhog", 1))
        return cmd_memhog(argv[2]);
    if (IS("spin", 0) || IS("spin", 1))
        return cmd_spin();
    return usage();
}
