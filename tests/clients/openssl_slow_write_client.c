/*
 * An OpenSSL client whose SSL_write returns only after another thread has read the whole
 * response: what a preempted writer thread, or a slow write BIO, does to llmtap's ordering
 * (issue 19, item 5). Compiled by the end-to-end test with `cc ... -lssl -lcrypto -lpthread`.
 *
 * Usage: openssl-slow-write-client HOST PORT REQUEST_FILE
 * Connects over TLS 1.2 (no post-handshake messages, so the reading thread only ever reads
 * application data) trusting the CA in SSL_CERT_FILE, starts a reader thread that reads the
 * response to its end, then writes REQUEST_FILE's bytes with one SSL_write through a write
 * BIO that sends them and then waits (at most 10 s) for the reader to finish before it
 * returns. Prints "status CODE body N bytes" and "write returned after the response".
 */
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t read_done = PTHREAD_COND_INITIALIZER;
static int response_read = 0;
static int hold_writes = 0;

static char response[1 << 20];
static size_t response_len = 0;

static int slow_write(BIO *bio, const char *data, int len) {
    int fd = *(int *)BIO_get_data(bio);
    int sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, data + sent, (size_t)(len - sent), MSG_NOSIGNAL);
        if (n <= 0) return -1;
        sent += (int)n;
    }
    pthread_mutex_lock(&lock);
    if (hold_writes) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        while (!response_read) {
            if (pthread_cond_timedwait(&read_done, &lock, &until) != 0) break;
        }
    }
    pthread_mutex_unlock(&lock);
    return sent;
}

static long slow_ctrl(BIO *bio, int cmd, long num, void *ptr) {
    (void)bio;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int slow_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static void *reader(void *arg) {
    SSL *ssl = arg;
    for (;;) {
        if (response_len == sizeof response) break;
        int n = SSL_read(ssl, response + response_len, (int)(sizeof response - response_len));
        if (n <= 0) break; /* the server closes after its response (connection: close) */
        response_len += (size_t)n;
    }
    pthread_mutex_lock(&lock);
    response_read = 1;
    pthread_cond_signal(&read_done);
    pthread_mutex_unlock(&lock);
    return NULL;
}

static int fail(const char *what) {
    fprintf(stderr, "openssl-slow-write-client: %s\n", what);
    ERR_print_errors_fp(stderr);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) return fail("usage: openssl-slow-write-client HOST PORT REQUEST_FILE");
    const char *host = argv[1];
    FILE *file = fopen(argv[3], "rb");
    if (!file) return fail("cannot open the request file");
    static char request[1 << 16];
    size_t request_len = fread(request, 1, sizeof request, file);
    fclose(file);

    struct addrinfo hints = {0}, *addr;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, argv[2], &hints, &addr) != 0) return fail("cannot resolve the host");
    int fd = socket(addr->ai_family, addr->ai_socktype, addr->ai_protocol);
    if (fd < 0 || connect(fd, addr->ai_addr, addr->ai_addrlen) != 0) return fail("cannot connect");
    freeaddrinfo(addr);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    const char *ca = getenv("SSL_CERT_FILE");
    if (!ctx || !ca || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        return fail("cannot load SSL_CERT_FILE");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, host);
    SSL_set1_host(ssl, host);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) return fail("handshake failed");

    /* From now on records go out through the slow BIO; reads keep the socket BIO. */
    BIO_METHOD *method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "slow write");
    BIO_meth_set_write(method, slow_write);
    BIO_meth_set_ctrl(method, slow_ctrl);
    BIO_meth_set_create(method, slow_create);
    BIO *wbio = BIO_new(method);
    BIO_set_data(wbio, &fd);
    SSL_set0_wbio(ssl, wbio);

    pthread_t thread;
    if (pthread_create(&thread, NULL, reader, ssl) != 0) return fail("no reader thread");
    pthread_mutex_lock(&lock);
    hold_writes = 1;
    pthread_mutex_unlock(&lock);
    int written = SSL_write(ssl, request, (int)request_len);
    pthread_mutex_lock(&lock);
    int after = response_read;
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    if (written != (int)request_len) return fail("SSL_write failed");

    int status = 0;
    sscanf(response, "HTTP/1.1 %d", &status);
    const char *body = strstr(response, "\r\n\r\n");
    size_t body_len = body ? response_len - (size_t)(body + 4 - response) : 0;
    printf("status %d body %zu bytes\n", status, body_len);
    if (after) printf("write returned after the response\n");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    return 0;
}
