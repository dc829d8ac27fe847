/* A host busy with non-LLM TCP traffic, for the plain-HTTP capture's cost: one process opens a
 * loopback TCP connection, sends an HTTP/1.1 GET of a non-LLM path on it (so llmtap classifies
 * it as plain HTTP to another path, and ignores it), then does N round trips of SIZE bytes
 * (write on the client socket, read on the accepted one). Prints nanoseconds per round trip
 * (one socket send and one receive).
 *
 * Usage: tcp_loop N SIZE
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void read_full(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) die("read");
        got += (size_t)r;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s N SIZE\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    size_t size = (size_t)atol(argv[2]);
    if (n <= 0 || size == 0 || size > 65536) return 2;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listener, 1) < 0 || getsockname(listener, (struct sockaddr *)&addr, &len) < 0)
        die("listen");
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int server = accept(listener, NULL, NULL);
    if (server < 0) die("accept");
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static const char head[] = "GET /static/app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    char *buf = malloc(size > sizeof head ? size : sizeof head);
    if (!buf) die("malloc");
    if (write(client, head, sizeof head - 1) != (ssize_t)(sizeof head - 1)) die("write");
    read_full(server, buf, sizeof head - 1);
    memset(buf, 'x', size);
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < n; i++) {
        if (write(client, buf, size) != (ssize_t)size) die("write");
        read_full(server, buf, size);
    }
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ns = (double)(end.tv_sec - start.tv_sec) * 1e9 + (double)(end.tv_nsec - start.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    return 0;
}
