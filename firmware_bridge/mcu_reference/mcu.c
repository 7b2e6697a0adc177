/*
 * Reference MCU side of the FarmIQ serial protocol v1 (docs/mcu-protocol.md).
 *
 * Implements framing (COBS + 0x00 delimiter, CRC-16/CCITT-FALSE), ACK/NACK with
 * retransmit, duplicate suppression, HELLO / HELLO_REQ, READINGS and HEARTBEAT. It is a
 * plain C99 program that talks on stdin/stdout, so it can be put on a pty, a socat pipe, or
 * ported to a UART driver by replacing uart_read/uart_write. One reliable frame in flight
 * at a time (window 1), no heap: what a small MCU would do.
 *
 * Build: cc -O2 -std=c99 -Wall -Wextra -o mcu mcu.c     (or: make)
 * Run:   ./mcu DEVICE_ID [reading_interval_ms]    with stdin/stdout on the serial line.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

enum { PROTO = 1, MAX_FRAME = 256, ACK_TIMEOUT_MS = 150, MAX_RETRIES = 8 };
enum { T_ACK = 0x01, T_NACK = 0x02, T_HELLO_REQ = 0x03, T_HELLO = 0x04, T_HEARTBEAT = 0x05,
       T_READINGS = 0x10 };
enum { NACK_VERSION = 1, NACK_UNKNOWN_TYPE = 2, NACK_MALFORMED = 3 };

static const char *g_device_id = "c-ref-0001";
static uint32_t g_boot_id, g_session, g_reading_seq;
static uint16_t g_tx_seq;
static int g_hello_acked, g_want_hello;
static uint64_t g_t0;

/* ---- platform: clock and UART ------------------------------------------------------ */
static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
static uint32_t mcu_ms(void) { return (uint32_t)(now_ms() - g_t0); }

static void uart_write(const uint8_t *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDOUT_FILENO, buf, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            exit(0); /* line gone */
        }
        buf += w;
        n -= (size_t)w;
    }
}

/* ---- CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, bitwise (no table: 0 bytes of RAM) */
static uint16_t crc16(const uint8_t *p, size_t n) {
    uint16_t crc = 0xFFFF;
    while (n--) {
        crc ^= (uint16_t)(*p++) << 8;
        for (int i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* ---- COBS ------------------------------------------------------------------------- */
static size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t code_pos = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_pos] = code;
            code_pos = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFF) {
                out[code_pos] = code;
                code_pos = o++;
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    return o;
}

/* returns decoded length, or -1 if not valid COBS */
static int cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t i = 0, o = 0;
    while (i < n) {
        uint8_t code = in[i++];
        if (code == 0 || i + code - 1 > n) return -1;
        for (uint8_t k = 1; k < code; k++) {
            if (o >= cap) return -1;
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < n) {
            if (o >= cap) return -1;
            out[o++] = 0;
        }
    }
    return (int)o;
}

/* ---- frames ----------------------------------------------------------------------- */
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Builds and writes one frame; the encoded bytes are also copied to `keep` if non-NULL. */
static size_t send_frame(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n,
                         uint8_t *keep) {
    uint8_t raw[MAX_FRAME], enc[MAX_FRAME + MAX_FRAME / 254 + 2];
    if (n + 6 > MAX_FRAME) return 0;
    raw[0] = PROTO;
    raw[1] = type;
    put16(raw + 2, seq);
    if (n) memcpy(raw + 4, payload, n);
    put16(raw + 4 + n, crc16(raw, 4 + n));
    size_t m = cobs_encode(raw, n + 6, enc);
    enc[m++] = 0;
    uart_write(enc, m);
    if (keep) memcpy(keep, enc, m);
    return m;
}

/* one reliable frame in flight */
static struct {
    int active;
    uint16_t seq;
    uint8_t type;
    uint8_t bytes[MAX_FRAME + MAX_FRAME / 254 + 2];
    size_t len;
    int tries;
    uint64_t deadline;
} g_pending;

static void send_reliable(uint8_t type, const uint8_t *payload, size_t n) {
    g_pending.seq = g_tx_seq++;
    g_pending.type = type;
    g_pending.len = send_frame(type, g_pending.seq, payload, n, g_pending.bytes);
    g_pending.tries = 0;
    g_pending.deadline = now_ms() + ACK_TIMEOUT_MS;
    g_pending.active = 1;
}

static void check_retransmit(void) {
    if (!g_pending.active || now_ms() < g_pending.deadline) return;
    if (g_pending.tries >= MAX_RETRIES) {
        g_pending.active = 0; /* give up; readings stay queued and go again in a new frame */
        return;
    }
    g_pending.tries++;
    uart_write(g_pending.bytes, g_pending.len);
    uint32_t backoff = ACK_TIMEOUT_MS << (g_pending.tries < 3 ? g_pending.tries : 3);
    g_pending.deadline = now_ms() + backoff;
}

/* ---- messages --------------------------------------------------------------------- */
static void send_hello(void) {
    uint8_t p[64];
    size_t id_len = strlen(g_device_id), n = 0;
    const char *fw = "c-ref-1.0";
    size_t fw_len = strlen(fw);
    if (id_len > 32) id_len = 32;
    p[n++] = PROTO;
    put32(p + n, g_boot_id); n += 4;
    put32(p + n, mcu_ms()); n += 4;
    put16(p + n, MAX_FRAME); n += 2;
    put32(p + n, 1u); n += 4; /* caps: readings only */
    put32(p + n, 0u); n += 4; /* no model storage */
    p[n++] = (uint8_t)id_len;
    memcpy(p + n, g_device_id, id_len); n += id_len;
    p[n++] = (uint8_t)fw_len;
    memcpy(p + n, fw, fw_len); n += fw_len;
    send_reliable(T_HELLO, p, n);
}

/* readings queue: a ring of batches (first_seq, base_ms, 2 readings) */
enum { QLEN = 8, PER_BATCH = 2 };
static struct { uint32_t first_seq, base_ms; float v[PER_BATCH]; } g_q[QLEN];
static int g_qhead, g_qcount;
static uint32_t g_inflight_first_seq;

static void sample(void) {
    double t = mcu_ms() / 1000.0;
    int slot = (g_qhead + g_qcount) % QLEN;
    if (g_qcount == QLEN) { /* full: drop the oldest */
        g_qhead = (g_qhead + 1) % QLEN;
        g_qcount--;
        slot = (g_qhead + g_qcount) % QLEN;
    }
    g_q[slot].first_seq = g_reading_seq;
    g_q[slot].base_ms = mcu_ms();
    g_q[slot].v[0] = (float)(21.0 + 0.5 * ((int)t % 7) / 7.0); /* temperature_c */
    g_q[slot].v[1] = (float)(60.0 + ((int)t % 5));              /* humidity_pct */
    g_reading_seq += PER_BATCH;
    g_qcount++;
}

static void send_readings(void) {
    uint8_t p[9 + 7 * PER_BATCH];
    size_t n = 0;
    put32(p, g_q[g_qhead].first_seq); n += 4;
    put32(p + n, g_q[g_qhead].base_ms); n += 4;
    p[n++] = PER_BATCH;
    for (int i = 0; i < PER_BATCH; i++) {
        p[n++] = (uint8_t)(1 + i);
        put16(p + n, 0); n += 2;
        memcpy(p + n, &g_q[g_qhead].v[i], 4); n += 4; /* little-endian hosts/MCUs */
    }
    g_inflight_first_seq = g_q[g_qhead].first_seq;
    send_reliable(T_READINGS, p, n);
}

/* ---- receive ---------------------------------------------------------------------- */
static uint16_t g_seen[16];
static int g_seen_n, g_seen_pos;

static int seen_add(uint16_t seq) {
    for (int i = 0; i < g_seen_n; i++)
        if (g_seen[i] == seq) return 0;
    g_seen[g_seen_pos] = seq;
    g_seen_pos = (g_seen_pos + 1) % 16;
    if (g_seen_n < 16) g_seen_n++;
    return 1;
}

static void on_frame(const uint8_t *f, size_t n) {
    if (n < 6 || crc16(f, n - 2) != get16(f + n - 2)) return; /* bad frame: drop silently */
    uint8_t type = f[1];
    uint16_t seq = get16(f + 2);
    const uint8_t *p = f + 4;
    size_t plen = n - 6;
    if (type == T_ACK) {
        if (g_pending.active && g_pending.seq == seq) {
            g_pending.active = 0;
            if (g_pending.type == T_HELLO) g_hello_acked = 1;
            if (g_pending.type == T_READINGS && g_qcount > 0 &&
                g_q[g_qhead].first_seq == g_inflight_first_seq) { /* delivered: pop it */
                g_qhead = (g_qhead + 1) % QLEN;
                g_qcount--;
            }
        }
        return;
    }
    if (type == T_NACK) return;
    uint8_t nack = 0;
    if (f[0] != PROTO) nack = NACK_VERSION;
    else if (type == T_HELLO_REQ && plen != 4) nack = NACK_MALFORMED;
    else if (type != T_HELLO_REQ && type != T_HEARTBEAT) nack = NACK_UNKNOWN_TYPE;
    if (nack) {
        send_frame(T_NACK, seq, &nack, 1, NULL);
        return;
    }
    send_frame(T_ACK, seq, NULL, 0, NULL);
    if (type == T_HELLO_REQ) {
        uint32_t session = get32(p);
        if (session != g_session) {
            g_session = session;
            g_seen_n = 0;
        }
        seen_add(seq);
        if (g_hello_acked) g_want_hello = 1;
        return;
    }
    seen_add(seq); /* HEARTBEAT from the gateway: nothing else to do */
}

int main(int argc, char **argv) {
    if (argc > 1) g_device_id = argv[1];
    uint32_t interval = argc > 2 ? (uint32_t)atoi(argv[2]) : 200;
    g_t0 = now_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srand((unsigned)(ts.tv_nsec ^ getpid()));
    g_boot_id = ((uint32_t)rand() << 16) ^ (uint32_t)rand();
    g_tx_seq = (uint16_t)rand();
    setvbuf(stdout, NULL, _IONBF, 0);

    uint8_t enc[MAX_FRAME + MAX_FRAME / 254 + 2], dec[MAX_FRAME];
    size_t enc_len = 0;
    int discarding = 0;
    uint64_t next_sample = now_ms() + interval, next_hb = now_ms() + 1000;
    send_hello();

    for (;;) {
        /* decide what to send next; one frame in flight at a time */
        if (!g_pending.active) {
            if (!g_hello_acked) send_hello();
            else if (g_want_hello) { g_want_hello = 0; send_hello(); }
            else if (g_qcount > 0) send_readings();
            else if (now_ms() >= next_hb) {
                uint8_t hb[5];
                put32(hb, mcu_ms());
                hb[4] = 0;
                next_hb = now_ms() + 1000;
                send_reliable(T_HEARTBEAT, hb, 5);
            }
        }
        uint64_t now = now_ms(), wake = next_sample;
        if (g_pending.active && g_pending.deadline < wake) wake = g_pending.deadline;
        if (next_hb < wake) wake = next_hb;
        uint64_t wait_ms = wake > now ? wake - now : 0;
        struct timeval tv = { (time_t)(wait_ms / 1000), (suseconds_t)((wait_ms % 1000) * 1000) };
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(STDIN_FILENO, &rd);
        int r = select(STDIN_FILENO + 1, &rd, NULL, NULL, &tv);
        if (r < 0 && errno != EINTR) return 1;
        if (r > 0) {
            uint8_t buf[256];
            ssize_t got = read(STDIN_FILENO, buf, sizeof buf);
            if (got <= 0) {
                if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                return 0; /* line closed */
            }
            for (ssize_t i = 0; i < got; i++) {
                if (buf[i] == 0) {
                    if (!discarding && enc_len > 0) {
                        int m = cobs_decode(enc, enc_len, dec, sizeof dec);
                        if (m > 0) on_frame(dec, (size_t)m);
                    }
                    enc_len = 0;
                    discarding = 0;
                } else if (!discarding) {
                    if (enc_len < sizeof enc) enc[enc_len++] = buf[i];
                    else { enc_len = 0; discarding = 1; } /* runaway frame: resync */
                }
            }
        }
        check_retransmit();
        if (now_ms() >= next_sample) {
            sample();
            next_sample += interval;
        }
    }
}
