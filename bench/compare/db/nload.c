/*
 * nload: a closed-loop load generator for the data node's MessagePack protocol (--listen), the
 * counterpart of pgbench for PostgreSQL's wire protocol: C connections spread over T threads, one
 * request in flight per connection, each thread drives its connections with epoll.
 *
 *   nload HOST PORT read|write CONNECTIONS THREADS SECONDS [ROWS=100000] [WARMUP_SECONDS=0]
 *
 *   read   {"sql":"SELECT v FROM kv WHERE id = ?","params":[random 1..ROWS]}   (op "query")
 *   write  {"statements":[["INSERT INTO kv(v) VALUES(?)", 100 x "x"]]}           (op "execute")
 *
 * Frames: a 4-byte big-endian body length, then the body [id, op, {args}]; the answer is
 * [id, "ok", {…}] or [id, "<ErrorCode>", "message"]. Prints "rate=<answers/s> errors=<n>", counting
 * only the measured seconds. Exits non-zero when a connection fails or the answer is not a frame.
 * Build: gcc -O2 -pthread -o nload nload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME (1 << 20)

typedef struct {
    int fd;
    uint32_t next_id;
    uint32_t rng;
    size_t have;
    unsigned char in[MAX_FRAME + 4];
} conn_t;

static const char *g_host;
static int g_port, g_write, g_rows;
static atomic_int g_phase; /* 0 warm-up, 1 measuring, 2 stop */
static atomic_long g_answers, g_errors;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "nload: %s: %s\n", what, strerror(errno));
    exit(2);
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t n) {
    if (n < 32) {
        *p++ = 0xA0 | (unsigned char)n;
    } else {
        *p++ = 0xDA;
        *p++ = (unsigned char)(n >> 8);
        *p++ = (unsigned char)n;
    }
    memcpy(p, s, n);
    return p + n;
}

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
    *p++ = 0xCE;
    *p++ = (unsigned char)(v >> 24);
    *p++ = (unsigned char)(v >> 16);
    *p++ = (unsigned char)(v >> 8);
    *p++ = (unsigned char)v;
    return p;
}

static size_t build(conn_t *c, unsigned char *out) {
    unsigned char *p = out + 4;
    static const char sql_read[] = "SELECT v FROM kv WHERE id = ?";
    static const char sql_write[] = "INSERT INTO kv(v) VALUES(?)";
    char value[100];
    *p++ = 0x93;
    p = put_u32(p, ++c->next_id);
    if (g_write) {
        memset(value, 'x', sizeof value);
        p = put_str(p, "execute", 7);
        *p++ = 0x81;
        p = put_str(p, "statements", 10);
        *p++ = 0x91;
        *p++ = 0x92;
        p = put_str(p, sql_write, sizeof sql_write - 1);
        p = put_str(p, value, sizeof value);
    } else {
        c->rng = c->rng * 1103515245u + 12345u;
        p = put_str(p, "query", 5);
        *p++ = 0x82;
        p = put_str(p, "sql", 3);
        p = put_str(p, sql_read, sizeof sql_read - 1);
        p = put_str(p, "params", 6);
        *p++ = 0x91;
        p = put_u32(p, 1 + (c->rng >> 8) % (uint32_t)g_rows);
    }
    uint32_t len = (uint32_t)(p - out - 4);
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    return (size_t)(p - out);
}

static void send_all(int fd, const unsigned char *b, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) { usleep(50); continue; }
            die("send");
        }
        b += w;
        n -= (size_t)w;
    }
}

/* 1 when the answer's tag is "ok", 0 otherwise; -1 when the body is not [id, tag, …]. */
static int answer_ok(const unsigned char *b, size_t n) {
    size_t i = 0;
    if (n < 3 || b[i++] != 0x93) return -1;
    unsigned char t = b[i++];
    if (t <= 0x7F) {
    } else if (t == 0xCC) i += 1;
    else if (t == 0xCD) i += 2;
    else if (t == 0xCE) i += 4;
    else if (t == 0xCF) i += 8;
    else return -1;
    if (i >= n) return -1;
    t = b[i++];
    size_t len;
    if ((t & 0xE0) == 0xA0) len = t & 0x1F;
    else if (t == 0xD9 && i < n) len = b[i++];
    else return -1;
    if (i + len > n) return -1;
    return len == 2 && b[i] == 'o' && b[i + 1] == 'k';
}

static int connect_one(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    if (inet_pton(AF_INET, g_host, &a.sin_addr) != 1) { fprintf(stderr, "nload: bad host %s\n", g_host); exit(2); }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void *worker(void *arg) {
    int count = (int)(intptr_t)arg;
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    conn_t *conns = calloc((size_t)count, sizeof(conn_t));
    unsigned char out[512];
    for (int i = 0; i < count; i++) {
        conns[i].fd = connect_one();
        conns[i].rng = (uint32_t)(uintptr_t)&conns[i] ^ (uint32_t)time(NULL) ^ (uint32_t)i * 2654435761u;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) < 0) die("epoll_ctl");
        send_all(conns[i].fd, out, build(&conns[i], out));
    }
    struct epoll_event events[64];
    while (atomic_load_explicit(&g_phase, memory_order_relaxed) < 2) {
        int n = epoll_wait(ep, events, 64, 100);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t r = recv(c->fd, c->in + c->have, sizeof c->in - c->have, 0);
            if (r == 0) { fprintf(stderr, "nload: the server closed a connection\n"); exit(2); }
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN) continue;
                die("recv");
            }
            c->have += (size_t)r;
            while (c->have >= 4) {
                uint32_t len = (uint32_t)c->in[0] << 24 | (uint32_t)c->in[1] << 16 | (uint32_t)c->in[2] << 8 | c->in[3];
                if (len == 0 || len > MAX_FRAME) { fprintf(stderr, "nload: bad frame length %u\n", len); exit(2); }
                if (c->have < 4 + (size_t)len) break;
                int ok = answer_ok(c->in + 4, len);
                if (ok < 0) { fprintf(stderr, "nload: the answer is not [id, tag, ...]\n"); exit(2); }
                if (atomic_load_explicit(&g_phase, memory_order_relaxed) == 1) {
                    atomic_fetch_add_explicit(ok ? &g_answers : &g_errors, 1, memory_order_relaxed);
                }
                memmove(c->in, c->in + 4 + len, c->have - 4 - len);
                c->have -= 4 + (size_t)len;
                send_all(c->fd, out, build(c, out));
            }
        }
    }
    for (int i = 0; i < count; i++) close(conns[i].fd);
    free(conns);
    close(ep);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: nload HOST PORT read|write CONNECTIONS THREADS SECONDS [ROWS=100000] [WARMUP_SECONDS=0]\n");
        return 2;
    }
    g_host = argv[1];
    g_port = atoi(argv[2]);
    g_write = strcmp(argv[3], "write") == 0;
    if (!g_write && strcmp(argv[3], "read") != 0) { fprintf(stderr, "nload: the test is read or write\n"); return 2; }
    int conns = atoi(argv[4]), threads = atoi(argv[5]);
    double seconds = atof(argv[6]);
    g_rows = argc > 7 ? atoi(argv[7]) : 100000;
    double warmup = argc > 8 ? atof(argv[8]) : 0;
    if (conns < 1 || threads < 1 || threads > conns || seconds <= 0 || g_rows < 1 || g_port < 1) {
        fprintf(stderr, "nload: need CONNECTIONS >= THREADS >= 1, SECONDS > 0, ROWS >= 1, a port\n");
        return 2;
    }
    pthread_t *ids = calloc((size_t)threads, sizeof(pthread_t));
    for (int t = 0; t < threads; t++) {
        int share = conns / threads + (t < conns % threads);
        pthread_create(&ids[t], NULL, worker, (void *)(intptr_t)share);
    }
    if (warmup > 0) usleep((useconds_t)(warmup * 1e6));
    atomic_store(&g_phase, 1);
    double start = now_s();
    usleep((useconds_t)(seconds * 1e6));
    atomic_store(&g_phase, 2);
    double elapsed = now_s() - start;
    long answers = atomic_load(&g_answers), errors = atomic_load(&g_errors);
    for (int t = 0; t < threads; t++) pthread_join(ids[t], NULL);
    printf("rate=%.0f errors=%ld\n", (answers + errors) / elapsed, errors);
    return 0;
}
