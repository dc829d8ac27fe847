/* A host busy with pipes and system calls that are not MCP, for the cost of `--mcp-stdio on`
 * (its hook runs after every system call). Two workloads, one per run:
 * - `pipe`: N rounds of one write of SIZE bytes into a pipe and one read of them back, in one
 *   process (two system calls, no context switch), as `dd`-style pipe traffic does;
 * - `getppid`: N calls of a system call that is neither a read nor a write.
 * Prints nanoseconds per round (pipe) or per call (getppid).
 *
 * Usage: pipe_loop pipe|getppid N SIZE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s pipe|getppid N SIZE\n", argv[0]);
        return 2;
    }
    int pipe_mode = strcmp(argv[1], "pipe") == 0;
    long n = atol(argv[2]);
    size_t size = (size_t)atol(argv[3]);
    if (n <= 0 || size == 0 || size > 65536) return 2;
    int fds[2];
    if (pipe(fds) < 0) die("pipe");
    char *buf = malloc(size);
    if (!buf) die("malloc");
    memset(buf, 'x', size);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < n; i++) {
        if (pipe_mode) {
            if (write(fds[1], buf, size) != (ssize_t)size) die("write");
            if (read(fds[0], buf, size) != (ssize_t)size) die("read");
        } else {
            syscall(SYS_getppid);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    return 0;
}
