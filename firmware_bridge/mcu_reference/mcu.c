/*
 * Reference MCU side of the FarmIQ serial protocol v1 (docs/mcu-protocol.md), for any board:
 * framing and CRC (proto.c), ACK/NACK with retransmit, duplicate suppression, HELLO /
 * HELLO_REQ, READINGS and HEARTBEAT, idempotent ACTUATOR_CMD with a ring of executed command
 * ids, MODEL_LOAD into A/B slots with a SHA-256 check and an atomic switch, and INFER with
 * the int8 TFLite interpreter in tfl.c. One reliable frame in flight (window 1), no heap.
 */
#include "mcu.h"

#include <string.h>

#include "proto.h"
#include "sha256.h"
#include "tfl.h"

enum { ACK_TIMEOUT_MS = 150, MAX_RETRIES = 8, OUTBOX = 4, RX_SEEN = 16, RING = 32, QLEN = 8,
       PER_BATCH = 2 };

#if defined(__arm__)
#define FLASH_SECTION __attribute__((section(".model_flash")))
#define NOINIT __attribute__((section(".noinit")))
#else
#define FLASH_SECTION
#define NOINIT
#endif

static const char *g_device_id = "c-ref-0001";
static uint32_t g_boot_id, g_session, g_reading_seq, g_interval;
static uint16_t g_tx_seq;
static int g_hello_acked, g_want_hello;
static uint32_t g_next_sample, g_next_hb;

/* ---- persistent state ("flash"): command ring, model slots and their table ----------- */
typedef struct { uint64_t id; uint8_t used, actuator, status; float applied; } ring_entry_t;
typedef struct { uint32_t magic, size; uint8_t sha256[32]; char model_id[33]; } slot_meta_t;
enum { SLOT_MAGIC = 0x4C444F4D };
static ring_entry_t g_ring[RING] NOINIT;
static uint32_t g_ring_pos NOINIT, g_ring_magic NOINIT;
static uint8_t g_slot[MODEL_SLOTS][MODEL_SLOT_BYTES] FLASH_SECTION;
static slot_meta_t g_meta[MODEL_SLOTS] FLASH_SECTION;
static volatile uint32_t g_active FLASH_SECTION; /* the newest committed slot: the switch */

/* ---- RAM ------------------------------------------------------------------------------ */
static float g_actuators[6];
static tfl_plan_t g_plan[MODEL_SLOTS];
static uint8_t g_plan_ok[MODEL_SLOTS];
static uint8_t g_arena[ARENA_BYTES] __attribute__((aligned(16)));
static struct {
    int active, committed;
    uint16_t transfer;
    uint32_t size, received;
    uint8_t sha256[32], slot;
    char model_id[33];
    uint8_t have[MODEL_SLOT_BYTES / 8]; /* one bit per byte received */
} g_xfer;

/* ---- reliable send: one frame in flight, a small outbox of answers -------------------- */
static struct {
    int active, tries;
    uint16_t seq;
    uint8_t type;
    uint8_t bytes[MAX_ENCODED];
    size_t len;
    uint32_t deadline;
} g_pending;
static struct { uint8_t type; uint16_t len; uint8_t payload[MAX_FRAME - 6]; } g_outbox[OUTBOX];
static int g_out_head, g_out_count;

static void send_reliable(uint8_t type, const uint8_t *payload, size_t n) {
    g_pending.seq = g_tx_seq++;
    g_pending.type = type;
    g_pending.len = frame_encode(type, g_pending.seq, payload, n, g_pending.bytes);
    plat_write(g_pending.bytes, g_pending.len);
    g_pending.tries = 0;
    g_pending.deadline = plat_ms() + ACK_TIMEOUT_MS;
    g_pending.active = 1;
}

static void send_plain(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n) {
    uint8_t enc[MAX_ENCODED];
    size_t m = frame_encode(type, seq, payload, n, enc);
    plat_write(enc, m);
}

static int outbox_free(void) { return OUTBOX - g_out_count; }

static void post(uint8_t type, const uint8_t *payload, size_t n) {
    if (g_out_count == OUTBOX || n > sizeof g_outbox[0].payload) return; /* checked before */
    int slot = (g_out_head + g_out_count) % OUTBOX;
    g_outbox[slot].type = type;
    g_outbox[slot].len = (uint16_t)n;
    memcpy(g_outbox[slot].payload, payload, n);
    g_out_count++;
}

static void check_retransmit(void) {
    if (!g_pending.active || (int32_t)(plat_ms() - g_pending.deadline) < 0) return;
    if (g_pending.tries >= MAX_RETRIES) {
        g_pending.active = 0; /* give up; readings stay queued, HELLO is sent again */
        return;
    }
    g_pending.tries++;
    plat_write(g_pending.bytes, g_pending.len);
    g_pending.deadline = plat_ms() + (ACK_TIMEOUT_MS << (g_pending.tries < 3 ? g_pending.tries : 3));
}

/* ---- messages ------------------------------------------------------------------------- */
static void send_hello(void) {
    uint8_t p[96];
    hello_t h = {g_boot_id, plat_ms(), CAP_READINGS | CAP_ACTUATORS | CAP_MODEL_LOAD | CAP_INFER,
                 MODEL_SLOT_BYTES, ARENA_BYTES, MAX_FRAME, MODEL_SLOTS, g_device_id, FW_VERSION};
    send_reliable(T_HELLO, p, pack_hello(p, &h));
}

/* readings queue: a ring of batches; a full queue drops the oldest (RAM is small) */
static struct { uint32_t first_seq, base_ms; float v[PER_BATCH]; } g_q[QLEN];
static int g_qhead, g_qcount;
static uint32_t g_inflight_first_seq;

static void sample(void) {
    uint32_t ms = plat_ms();
    if (g_qcount == QLEN) {
        g_qhead = (g_qhead + 1) % QLEN;
        g_qcount--;
    }
    int slot = (g_qhead + g_qcount) % QLEN;
    uint32_t t = ms / 1000;
    g_q[slot].first_seq = g_reading_seq;
    g_q[slot].base_ms = ms;
    /* a barn that warms with the heater and cools with the fan */
    g_q[slot].v[0] = 21.0f + 0.5f * (float)(t % 7) / 7.0f + 3.0f * g_actuators[2] - 2.5f * g_actuators[1];
    g_q[slot].v[1] = 60.0f + (float)(t % 5);
    g_reading_seq += PER_BATCH;
    g_qcount++;
}

static void send_readings(void) {
    reading_t r[PER_BATCH];
    uint8_t p[16 + 7 * PER_BATCH];
    for (int i = 0; i < PER_BATCH; i++) {
        r[i].sensor = (uint8_t)(1 + i); /* temperature_c, humidity_pct */
        r[i].dt_ms = 0;
        r[i].value = g_q[g_qhead].v[i];
    }
    g_inflight_first_seq = g_q[g_qhead].first_seq;
    send_reliable(T_READINGS, p,
                  pack_readings(p, g_q[g_qhead].first_seq, g_q[g_qhead].base_ms, r, PER_BATCH));
}

/* ---- actuators: at most once per command id, result stored before the actuator moves --- */
static void on_actuator(const actuator_cmd_t *c) {
    uint8_t p[32];
    if (g_ring_magic != 0xAC7) { /* first boot: format the ring */
        memset(g_ring, 0, sizeof g_ring);
        g_ring_pos = 0;
        g_ring_magic = 0xAC7;
    }
    for (int i = 0; i < RING; i++) {
        const ring_entry_t *e = &g_ring[i];
        if (e->used && e->id == c->command_id) {
            post(T_ACTUATOR_RESULT, p, pack_actuator_result(p, e->id, e->actuator, e->status, 1,
                                                            e->applied, plat_ms()));
            return;
        }
    }
    uint8_t status = ACT_OK;
    float applied = c->value;
    if (c->actuator < 1 || c->actuator > 5) {
        status = ACT_UNKNOWN;
        applied = 0.0f;
    } else if (!(c->value >= 0.0f && c->value <= 1.0f)) {
        status = ACT_OUT_OF_RANGE;
        applied = 0.0f;
    }
    ring_entry_t *e = &g_ring[g_ring_pos];
    e->id = c->command_id;
    e->actuator = c->actuator;
    e->status = status;
    e->applied = applied;
    e->used = 1; /* persisted first ... */
    g_ring_pos = (g_ring_pos + 1) % RING;
    if (status == ACT_OK) g_actuators[c->actuator] = applied; /* ... then the actuator moves */
    post(T_ACTUATOR_RESULT, p, pack_actuator_result(p, c->command_id, c->actuator, status, 0,
                                                    applied, plat_ms()));
}

/* ---- model load: stage into the inactive slot, check, then switch -------------------- */
static void load_status(uint16_t transfer, uint8_t status, const char *model_id) {
    uint8_t p[48];
    post(T_LOAD_STATUS, p, pack_load_status(p, transfer, status, g_xfer.active ? g_xfer.received : 0,
                                            model_id));
}

static void on_begin(const load_begin_t *b) {
    if (g_xfer.active && g_xfer.transfer == b->transfer) { /* retransmitted BEGIN */
        load_status(b->transfer, LOAD_READY, g_xfer.model_id);
        return;
    }
    g_xfer.active = 0;
    if (b->size > MODEL_SLOT_BYTES || b->size == 0) {
        load_status(b->transfer, LOAD_TOO_LARGE, "");
        return;
    }
    uint8_t slot = (uint8_t)(1u - (g_active & 1u));
    g_meta[slot].magic = 0; /* the slot being overwritten no longer holds a model */
    g_plan_ok[slot] = 0;
    g_xfer.slot = slot;
    g_xfer.transfer = b->transfer;
    g_xfer.size = b->size;
    g_xfer.received = 0;
    g_xfer.committed = 0;
    memcpy(g_xfer.sha256, b->sha256, 32);
    memcpy(g_xfer.model_id, b->model_id, sizeof g_xfer.model_id);
    memset(g_xfer.have, 0, sizeof g_xfer.have);
    g_xfer.active = 1;
    load_status(b->transfer, LOAD_READY, g_xfer.model_id);
}

static void on_chunk(uint16_t seq, const load_chunk_t *c) {
    uint8_t p[48];
    if (!g_xfer.active || g_xfer.transfer != c->transfer || g_xfer.committed) {
        post(T_ERROR, p, pack_error(p, ERR_NO_TRANSFER, T_LOAD_CHUNK, seq, "no transfer"));
        return;
    }
    if (c->offset > g_xfer.size || c->len > g_xfer.size - c->offset) {
        post(T_ERROR, p, pack_error(p, ERR_MALFORMED, T_LOAD_CHUNK, seq, "past end"));
        return;
    }
    memcpy(g_slot[g_xfer.slot] + c->offset, c->data, c->len); /* flash program */
    for (uint32_t i = c->offset; i < c->offset + c->len; i++) {
        uint8_t bit = (uint8_t)(1u << (i & 7));
        if (!(g_xfer.have[i >> 3] & bit)) {
            g_xfer.have[i >> 3] |= bit;
            g_xfer.received++;
        }
    }
}

static void on_commit(uint16_t transfer) {
    if (!g_xfer.active || g_xfer.transfer != transfer) {
        load_status(transfer, LOAD_NO_TRANSFER, "");
        return;
    }
    if (g_xfer.committed) { /* retransmitted COMMIT */
        load_status(transfer, LOAD_COMMITTED, g_xfer.model_id);
        return;
    }
    if (g_xfer.received != g_xfer.size) {
        load_status(transfer, LOAD_INCOMPLETE, g_xfer.model_id);
        return;
    }
    uint8_t digest[32];
    sha256_t s;
    sha256_init(&s);
    sha256_update(&s, g_slot[g_xfer.slot], g_xfer.size);
    sha256_final(&s, digest);
    if (memcmp(digest, g_xfer.sha256, 32) != 0) {
        g_xfer.active = 0;
        load_status(transfer, LOAD_HASH_MISMATCH, g_xfer.model_id);
        return;
    }
    uint8_t slot = g_xfer.slot;
    if (tfl_prepare(&g_plan[slot], g_slot[slot], g_xfer.size, ARENA_BYTES) != 0) {
        g_xfer.active = 0;
        load_status(transfer, LOAD_INVALID_MODEL, g_xfer.model_id);
        return;
    }
    slot_meta_t *m = &g_meta[slot];
    m->size = g_xfer.size;
    memcpy(m->sha256, g_xfer.sha256, 32);
    memcpy(m->model_id, g_xfer.model_id, sizeof m->model_id);
    m->magic = SLOT_MAGIC;
    g_plan_ok[slot] = 1;
    g_active = slot; /* the switch: one word, after every check passed */
    g_xfer.committed = 1;
    load_status(transfer, LOAD_COMMITTED, g_xfer.model_id);
}

/* ---- inference ------------------------------------------------------------------------ */
static int find_model(const char *model_id) {
    uint32_t order[2] = {g_active & 1u, 1u - (g_active & 1u)}; /* newest first */
    for (int k = 0; k < 2; k++) {
        uint32_t s = order[k];
        if (g_meta[s].magic != SLOT_MAGIC || strcmp(g_meta[s].model_id, model_id) != 0) continue;
        if (!g_plan_ok[s]) { /* after a reboot: prepare the committed model again */
            if (tfl_prepare(&g_plan[s], g_slot[s], g_meta[s].size, ARENA_BYTES) != 0) continue;
            g_plan_ok[s] = 1;
        }
        return (int)s;
    }
    return -1;
}

static void on_infer(const infer_req_t *r) {
    static uint8_t p[MAX_FRAME];
    int s = find_model(r->model_id);
    if (s < 0) {
        post(T_INFER_RESP, p, pack_infer_resp_head(p, r->request, INFER_NO_MODEL, 0, 0));
        return;
    }
    const tfl_plan_t *plan = &g_plan[s];
    size_t out_bytes = 9 + 4u * r->rows * plan->n_outputs;
    if (r->rows == 0 || r->n_values != (size_t)r->rows * plan->n_inputs || out_bytes > MAX_FRAME - 6) {
        post(T_INFER_RESP, p, pack_infer_resp_head(p, r->request, INFER_BAD_SHAPE, 0, 0));
        return;
    }
    float in[TFL_MAX_IO], out[TFL_MAX_IO];
    size_t n = 9;
    uint32_t t0 = plat_us();
    for (uint16_t row = 0; row < r->rows; row++) {
        for (uint32_t i = 0; i < plan->n_inputs; i++)
            in[i] = getf32(r->values + 4u * (row * plan->n_inputs + i));
        tfl_invoke(plan, g_arena, in, out);
        for (uint32_t i = 0; i < plan->n_outputs; i++) {
            putf32(p + n, out[i]);
            n += 4;
        }
    }
    uint32_t us = plat_us() - t0;
    pack_infer_resp_head(p, r->request, INFER_OK, r->rows, us);
    post(T_INFER_RESP, p, n);
}

/* ---- receive -------------------------------------------------------------------------- */
static uint16_t g_seen[RX_SEEN];
static int g_seen_n, g_seen_pos;

static int seen_add(uint16_t seq) {
    for (int i = 0; i < g_seen_n; i++)
        if (g_seen[i] == seq) return 0;
    g_seen[g_seen_pos] = seq;
    g_seen_pos = (g_seen_pos + 1) % RX_SEEN;
    if (g_seen_n < RX_SEEN) g_seen_n++;
    return 1;
}

static int answers(uint8_t type) {
    return type == T_ACTUATOR_CMD || type == T_LOAD_BEGIN || type == T_LOAD_COMMIT ||
           type == T_INFER_REQ;
}

static void on_ack(uint16_t seq) {
    if (!g_pending.active || g_pending.seq != seq) return;
    g_pending.active = 0;
    if (g_pending.type == T_HELLO) g_hello_acked = 1;
    if (g_pending.type == T_READINGS && g_qcount > 0 &&
        g_q[g_qhead].first_seq == g_inflight_first_seq) { /* delivered: pop it */
        g_qhead = (g_qhead + 1) % QLEN;
        g_qcount--;
    }
    if (g_pending.type != T_HELLO && g_pending.type != T_READINGS &&
        g_pending.type != T_HEARTBEAT && g_out_count > 0) { /* an answer: done with it */
        g_out_head = (g_out_head + 1) % OUTBOX;
        g_out_count--;
    }
}

static void on_frame(const uint8_t *f, size_t n) {
    if (!frame_check(f, n)) return; /* bad CRC: no answer, its seq cannot be trusted */
    uint8_t type = f[1];
    uint16_t seq = get16(f + 2);
    const uint8_t *p = f + 4;
    size_t plen = n - 6;
    if (type == T_ACK) {
        on_ack(seq);
        return;
    }
    if (f[0] != PROTO_VERSION) {
        if (type != T_NACK) {
            uint8_t code = NACK_VERSION;
            send_plain(T_NACK, seq, &code, 1);
        }
        return;
    }
    if (type == T_NACK) {
        /* BUSY: the retransmit timer tries again; anything else: drop the frame */
        if (plen == 1 && p[0] != NACK_BUSY && g_pending.active && g_pending.seq == seq)
            on_ack(seq);
        return;
    }
    union {
        uint32_t session;
        actuator_cmd_t act;
        load_begin_t begin;
        load_chunk_t chunk;
        uint16_t transfer;
        infer_req_t infer;
    } m;
    int ok;
    switch (type) {
    case T_HELLO_REQ: ok = unpack_hello_req(p, plen, &m.session); break;
    case T_HEARTBEAT: ok = plen == 5; break;
    case T_ACTUATOR_CMD: ok = unpack_actuator_cmd(p, plen, &m.act); break;
    case T_LOAD_BEGIN: ok = unpack_load_begin(p, plen, &m.begin); break;
    case T_LOAD_CHUNK: ok = unpack_load_chunk(p, plen, &m.chunk); break;
    case T_LOAD_COMMIT: ok = unpack_load_commit(p, plen, &m.transfer); break;
    case T_INFER_REQ: ok = unpack_infer_req(p, plen, &m.infer); break;
    case T_ERROR: ok = 1; break;
    default: {
        uint8_t code = NACK_UNKNOWN_TYPE;
        send_plain(T_NACK, seq, &code, 1);
        return;
    }
    }
    uint8_t refuse = 0;
    if (!ok) refuse = NACK_MALFORMED;
    /* Until the gateway ACKed this boot's HELLO it may take us for the MCU that was on this
       port before: run nothing it sends. Nor take a request whose answer has no room. */
    else if (!g_hello_acked && type != T_HELLO_REQ && type != T_HEARTBEAT) refuse = NACK_BUSY;
    else if ((answers(type) || type == T_LOAD_CHUNK) && outbox_free() == 0) refuse = NACK_BUSY;
    if (refuse) {
        send_plain(T_NACK, seq, &refuse, 1);
        return;
    }
    send_plain(T_ACK, seq, NULL, 0);
    if (type == T_HELLO_REQ) { /* always processed, even when its seq looks like a repeat */
        if (m.session != g_session) {
            g_session = m.session;
            g_seen_n = 0;
        }
        seen_add(seq);
        if (g_hello_acked) g_want_hello = 1;
        return;
    }
    if (!seen_add(seq)) return; /* a retransmit of something already done */
    switch (type) {
    case T_ACTUATOR_CMD: on_actuator(&m.act); break;
    case T_LOAD_BEGIN: on_begin(&m.begin); break;
    case T_LOAD_CHUNK: on_chunk(seq, &m.chunk); break;
    case T_LOAD_COMMIT: on_commit(m.transfer); break;
    case T_INFER_REQ: on_infer(&m.infer); break;
    default: break; /* HEARTBEAT, ERROR from the gateway: nothing to do */
    }
}

static uint8_t g_enc[MAX_ENCODED], g_dec[MAX_FRAME];
static size_t g_enc_len;
static int g_discarding;

void mcu_rx(const uint8_t *buf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == 0) {
            if (!g_discarding && g_enc_len > 0) {
                int m = cobs_decode(g_enc, g_enc_len, g_dec, sizeof g_dec);
                if (m > 0) on_frame(g_dec, (size_t)m);
            }
            g_enc_len = 0;
            g_discarding = 0;
        } else if (!g_discarding) {
            if (g_enc_len < sizeof g_enc) g_enc[g_enc_len++] = buf[i];
            else { g_enc_len = 0; g_discarding = 1; } /* runaway frame: resync at 0x00 */
        }
    }
}

void mcu_init(const char *device_id, uint32_t reading_interval_ms) {
    if (device_id) g_device_id = device_id;
    g_interval = reading_interval_ms ? reading_interval_ms : 200;
    g_boot_id = plat_random();
    g_tx_seq = (uint16_t)plat_random();
    g_next_sample = plat_ms() + g_interval;
    g_next_hb = plat_ms() + 1000;
    uint8_t flush = 0;
    plat_write(&flush, 1);
    send_hello();
}

void mcu_poll(void) {
    check_retransmit();
    uint32_t now = plat_ms();
    if ((int32_t)(now - g_next_sample) >= 0) {
        sample();
        g_next_sample += g_interval;
    }
    if (g_pending.active) return;
    if (!g_hello_acked || g_want_hello) {
        g_want_hello = 0;
        send_hello();
    } else if (g_out_count > 0) {
        send_reliable(g_outbox[g_out_head].type, g_outbox[g_out_head].payload,
                      g_outbox[g_out_head].len);
    } else if (g_qcount > 0) {
        send_readings();
    } else if ((int32_t)(now - g_next_hb) >= 0) {
        uint8_t hb[5];
        g_next_hb = now + 1000;
        send_reliable(T_HEARTBEAT, hb, pack_heartbeat(hb, now, 0));
    }
}

uint32_t mcu_wake_in_ms(void) {
    uint32_t now = plat_ms(), wake = g_next_sample;
    if (g_pending.active && (int32_t)(g_pending.deadline - wake) < 0) wake = g_pending.deadline;
    if ((int32_t)(g_next_hb - wake) < 0) wake = g_next_hb;
    if (!g_pending.active && (g_out_count > 0 || g_qcount > 0 || !g_hello_acked)) return 0;
    return (int32_t)(wake - now) > 0 ? wake - now : 0;
}
