/* Per-hook cost benchmark client: a tight loop of small SSL_write calls over loopback TLS.
 *
 * Usage: tls_write_loop CERT KEY CALLS SIZE [llm|raw]
 * Forks a TLS sink server (reads in 64 KiB chunks), connects to it, writes CALLS records of
 * SIZE bytes, and prints the mean nanoseconds per SSL_write. `llm` (the default) first sends
 * the head of an LLM API request (POST /v1/chat/completions) whose body is the records, so
 * that a tracer keeps copying every write; `raw` sends the records alone (bytes of no use to
 * llmtap, which stops copying them once it has classified the connection).
 * Used by `cargo xtask bench` with and without probes attached.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "tls_write_loop: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) die("usage: tls_write_loop CERT KEY CALLS SIZE [llm|raw]");
    long calls = atol(argv[3]);
    int size = atoi(argv[4]);
    if (calls <= 0 || size <= 0 || size > 16384) die("bad CALLS or SIZE");
    int llm = argc == 5 || strcmp(argv[5], "raw") != 0;
    char head[512];
    int head_len = 0;
    if (llm)
        head_len = snprintf(head, sizeof head,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\n"
                            "Content-Type: application/json\r\nContent-Length: %lld\r\n\r\n",
                            (long long)calls * size);

    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    socklen_t len = sizeof addr;
    getsockname(listener, (struct sockaddr *)&addr, &len);
    if (listen(listener, 1) != 0) die("listen");

    pid_t server = fork();
    if (server == 0) {
        SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
        if (SSL_CTX_use_certificate_file(sctx, argv[1], SSL_FILETYPE_PEM) != 1) die("cert");
        if (SSL_CTX_use_PrivateKey_file(sctx, argv[2], SSL_FILETYPE_PEM) != 1) die("key");
        int fd = accept(listener, NULL, NULL);
        SSL *s = SSL_new(sctx);
        SSL_set_fd(s, fd);
        if (SSL_accept(s) != 1) die("accept");
        char buf[65536];
        long long total = 0, want = (long long)calls * size + head_len;
        while (total < want) {
            int n = SSL_read(s, buf, sizeof buf);
            if (n <= 0) break;
            total += n;
        }
        SSL_write(s, "k", 1); /* tell the client everything arrived */
        SSL_shutdown(s);
        _exit(0);
    }
    close(listener);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) die("handshake");
    char *payload = malloc(size);
    memset(payload, 'x', size);
    if (head_len > 0 && SSL_write(ssl, head, head_len) != head_len) die("write head");
    /* warm up */
    for (int i = 0; i < 1000 && i < calls; i++) SSL_write(ssl, payload, size);
    double start = now_ns();
    for (long i = 1000; i < calls; i++) {
        if (SSL_write(ssl, payload, size) != size) die("write");
    }
    double elapsed = now_ns() - start;
    char ack;
    SSL_read(ssl, &ack, 1);
    long measured = calls > 1000 ? calls - 1000 : 1;
    printf("%.1f\n", elapsed / (double)measured);
    SSL_shutdown(ssl);
    waitpid(server, NULL, 0);
    return 0;
}
