/* Checks the C protocol code (proto.c, sha256.c) against firmware_bridge/protocol_vectors.json
 * (compiled in as protocol_vectors.h). Built for the host (make) and for the Cortex-M3
 * (make qemu; run in QEMU with semihosting, output on the UART). Prints one line per failure
 * and a summary; exit status 0 when every vector passes. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"
#include "sha256.h"

#ifdef SEMIHOSTED
void board_init(void);
void board_puts(const char *s);
void board_exit(int status);
#else
static void board_init(void) {}
static void board_puts(const char *s) { fputs(s, stdout); }
static void board_exit(int status) { fflush(stdout); (void)status; }
#endif

static int g_pass, g_fail;
static uint8_t buf[1024], buf2[1024];

/* no printf: newlib-nano's would pull in malloc on the MCU build */
static void put_int(int v) {
    char d[12];
    int n = 0;
    if (v == 0) d[n++] = '0';
    while (v > 0) {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    }
    char out[12];
    for (int i = 0; i < n; i++) out[i] = d[n - 1 - i];
    out[n] = 0;
    board_puts(out);
}

static void check(int ok, const char *what, int where) {
    if (ok) {
        g_pass++;
        return;
    }
    g_fail++;
    board_puts("FAIL ");
    board_puts(what);
    board_puts(" (protocol_vectors.h line ");
    put_int(where);
    board_puts(")\n");
}
static int same(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}
static int feq(float a, float b) { return memcmp(&a, &b, 4) == 0; }

#define CHECK_CRC(d, n, crc) check(crc16(d, n) == (crc), "crc16", __LINE__)
#define CHECK_COBS(d, n, e, ne)                                                         \
    do {                                                                                \
        size_t m_ = cobs_encode(d, n, buf);                                             \
        check(same(buf, m_, e, ne), "cobs encode", __LINE__);                           \
        int k_ = cobs_decode(e, ne, buf2, sizeof buf2);                                 \
        check(k_ >= 0 && same(buf2, (size_t)k_, d, n), "cobs decode", __LINE__);        \
    } while (0)
#define CHECK_SHA256(d, n, h, nh)                                                       \
    do {                                                                                \
        sha256_t s_;                                                                    \
        sha256_init(&s_);                                                               \
        sha256_update(&s_, d, n);                                                       \
        sha256_final(&s_, buf);                                                         \
        check(same(buf, 32, h, nh), "sha256", __LINE__);                                \
    } while (0)
#define CHECK_FRAME(type, seq, p, np, w, nw)                                            \
    do {                                                                                \
        if ((np) + 6 <= MAX_FRAME) {                                                    \
            size_t m_ = frame_encode(type, seq, p, np, buf);                            \
            check(same(buf, m_, w, nw), "frame encode", __LINE__);                      \
        }                                                                               \
        int k_ = cobs_decode(w, (nw) - 1, buf2, sizeof buf2);                           \
        check(k_ >= 6 && frame_check(buf2, (size_t)k_) && buf2[0] == PROTO_VERSION &&   \
                  buf2[1] == (type) && get16(buf2 + 2) == (seq) &&                      \
                  same(buf2 + 4, (size_t)k_ - 6, p, np),                                \
              "frame decode", __LINE__);                                                \
    } while (0)
#define CHECK_PACK(call, p, np)                                                         \
    do {                                                                                \
        size_t m_ = (call);                                                             \
        check(same(buf, m_, p, np), #call, __LINE__);                                   \
    } while (0)
#define CHECK_INFER_RESP(rq_, st, rw_, lat, vals, nv, p, np)                           \
    do {                                                                                \
        size_t m_ = pack_infer_resp_head(buf, rq_, st, rw_, lat);                      \
        for (int i_ = 0; i_ < (nv); i_++, m_ += 4) putf32(buf + m_, (vals)[i_]);        \
        check(same(buf, m_, p, np), "infer resp", __LINE__);                            \
    } while (0)
#define CHECK_HELLO_REQ(p, np, session)                                                 \
    do {                                                                                \
        uint32_t s_ = 0;                                                                \
        check(unpack_hello_req(p, np, &s_) && s_ == (session), "hello req", __LINE__);  \
    } while (0)
#define CHECK_ACTUATOR_CMD(p, np, id, act, val)                                         \
    do {                                                                                \
        actuator_cmd_t c_;                                                              \
        check(unpack_actuator_cmd(p, np, &c_) && c_.command_id == (id) &&               \
                  c_.actuator == (act) && feq(c_.value, val),                           \
              "actuator cmd", __LINE__);                                                \
    } while (0)
#define CHECK_LOAD_BEGIN(p, np, tr, sz_, sha, nsha, id)                                \
    do {                                                                                \
        load_begin_t b_;                                                                \
        check(unpack_load_begin(p, np, &b_) && b_.transfer == (tr) && b_.size == (sz_) && \
                  same(b_.sha256, 32, sha, nsha) && strcmp(b_.model_id, id) == 0,       \
              "load begin", __LINE__);                                                  \
    } while (0)
#define CHECK_LOAD_CHUNK(p, np, tr, off, d, nd)                                         \
    do {                                                                                \
        load_chunk_t c_;                                                                \
        check(unpack_load_chunk(p, np, &c_) && c_.transfer == (tr) && c_.offset == (off) && \
                  same(c_.data, c_.len, d, nd),                                         \
              "load chunk", __LINE__);                                                  \
    } while (0)
#define CHECK_LOAD_COMMIT(p, np, tr)                                                    \
    do {                                                                                \
        uint16_t t_ = 0;                                                                \
        check(unpack_load_commit(p, np, &t_) && t_ == (tr), "load commit", __LINE__);   \
    } while (0)
#define CHECK_INFER_REQ(p, np, rq_, rw_, id, vals, nv)                                 \
    do {                                                                                \
        infer_req_t r_;                                                                 \
        int ok_ = unpack_infer_req(p, np, &r_) && r_.request == (rq_) &&                \
                  r_.rows == (rw_) && strcmp(r_.model_id, id) == 0 && r_.n_values == (nv); \
        for (int i_ = 0; ok_ && i_ < (nv); i_++) ok_ = feq(getf32(r_.values + 4 * i_), (vals)[i_]); \
        check(ok_, "infer req", __LINE__);                                              \
    } while (0)

#include "protocol_vectors.h"

int main(void) {
    board_init();
    run_vectors();
    board_puts("protocol vectors: ");
    put_int(g_pass);
    board_puts(" passed, ");
    put_int(g_fail);
    board_puts(" failed\n");
    board_exit(g_fail ? 1 : 0);
    return g_fail ? 1 : 0;
}
