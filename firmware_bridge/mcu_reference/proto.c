/* Wire format of the FarmIQ MCU protocol v1; see proto.h. */
#include "proto.h"

#include <string.h>

/* CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, bitwise (no table: no RAM, 20 lines) */
uint16_t crc16(const uint8_t *p, size_t n) {
    uint16_t crc = 0xFFFF;
    while (n--) {
        crc ^= (uint16_t)(*p++) << 8;
        for (int i = 0; i < 8; i++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out) {
    size_t code_pos = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_pos] = code;
            code_pos = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFF && i + 1 < n) { /* a full block; a new one only if more follows */
                out[code_pos] = code;
                code_pos = o++;
                code = 1;
            }
        }
    }
    out[code_pos] = code;
    return o;
}

/* returns the decoded length, or -1 when it is not valid COBS or does not fit */
int cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
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

void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void putf32(uint8_t *p, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put32(p, u);
}
uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }
float getf32(const uint8_t *p) {
    uint32_t u = get32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *out) {
    uint8_t raw[MAX_FRAME];
    if (n + 6 > MAX_FRAME) return 0;
    raw[0] = PROTO_VERSION;
    raw[1] = type;
    put16(raw + 2, seq);
    if (n) memcpy(raw + 4, payload, n);
    put16(raw + 4 + n, crc16(raw, 4 + n));
    size_t m = cobs_encode(raw, n + 6, out);
    out[m++] = 0;
    return m;
}

int frame_check(const uint8_t *f, size_t n) {
    return n >= 6 && crc16(f, n - 2) == get16(f + n - 2);
}

static size_t put_str8(uint8_t *p, const char *s) {
    size_t n = strlen(s);
    if (n > 32) n = 32;
    p[0] = (uint8_t)n;
    memcpy(p + 1, s, n);
    return n + 1;
}

/* str8 into a 33-byte buffer; returns bytes consumed or 0 when malformed / too long */
static size_t get_str8(const uint8_t *p, size_t avail, char out[33]) {
    if (avail < 1 || p[0] > 32 || (size_t)p[0] + 1 > avail) return 0;
    memcpy(out, p + 1, p[0]);
    out[p[0]] = 0;
    return (size_t)p[0] + 1;
}

size_t pack_hello(uint8_t *p, const hello_t *h) {
    size_t n = 0;
    p[n++] = PROTO_VERSION;
    put32(p + n, h->boot_id); n += 4;
    put32(p + n, h->mcu_ms); n += 4;
    put16(p + n, h->max_frame); n += 2;
    put32(p + n, h->caps); n += 4;
    put32(p + n, h->model_capacity); n += 4;
    n += put_str8(p + n, h->device_id);
    n += put_str8(p + n, h->fw_version);
    put32(p + n, h->arena_capacity); n += 4; /* optional tail of HELLO */
    p[n++] = h->model_slots;
    return n;
}

size_t pack_heartbeat(uint8_t *p, uint32_t mcu_ms, uint8_t status) {
    put32(p, mcu_ms);
    p[4] = status;
    return 5;
}

size_t pack_readings(uint8_t *p, uint32_t first_seq, uint32_t base_ms, const reading_t *r,
                     uint8_t count) {
    size_t n = 0;
    put32(p, first_seq); n += 4;
    put32(p + n, base_ms); n += 4;
    p[n++] = count;
    for (uint8_t i = 0; i < count; i++) {
        p[n++] = r[i].sensor;
        put16(p + n, r[i].dt_ms); n += 2;
        putf32(p + n, r[i].value); n += 4;
    }
    return n;
}

int unpack_actuator_cmd(const uint8_t *p, size_t n, actuator_cmd_t *out) {
    if (n != 13) return 0;
    out->command_id = get64(p);
    out->actuator = p[8];
    out->value = getf32(p + 9);
    return 1;
}

size_t pack_actuator_result(uint8_t *p, uint64_t command_id, uint8_t actuator, uint8_t status,
                            uint8_t duplicate, float applied, uint32_t mcu_ms) {
    put64(p, command_id);
    p[8] = actuator;
    p[9] = status;
    p[10] = duplicate;
    putf32(p + 11, applied);
    put32(p + 15, mcu_ms);
    return 19;
}

int unpack_load_begin(const uint8_t *p, size_t n, load_begin_t *out) {
    if (n < 38) return 0;
    out->transfer = get16(p);
    out->size = get32(p + 2);
    memcpy(out->sha256, p + 6, 32);
    size_t s = get_str8(p + 38, n - 38, out->model_id);
    return s != 0 && 38 + s == n;
}

int unpack_load_chunk(const uint8_t *p, size_t n, load_chunk_t *out) {
    if (n < 6) return 0;
    out->transfer = get16(p);
    out->offset = get32(p + 2);
    out->data = p + 6;
    out->len = n - 6;
    return 1;
}

int unpack_load_commit(const uint8_t *p, size_t n, uint16_t *transfer) {
    if (n != 2) return 0;
    *transfer = get16(p);
    return 1;
}

size_t pack_load_status(uint8_t *p, uint16_t transfer, uint8_t status, uint32_t received,
                        const char *model_id) {
    put16(p, transfer);
    p[2] = status;
    put32(p + 3, received);
    return 7 + put_str8(p + 7, model_id);
}

int unpack_infer_req(const uint8_t *p, size_t n, infer_req_t *out) {
    if (n < 4) return 0;
    out->request = get16(p);
    out->rows = get16(p + 2);
    size_t s = get_str8(p + 4, n - 4, out->model_id);
    if (s == 0 || (n - 4 - s) % 4 != 0) return 0;
    out->values = p + 4 + s;
    out->n_values = (n - 4 - s) / 4;
    return 1;
}

size_t pack_infer_resp_head(uint8_t *p, uint16_t request, uint8_t status, uint16_t rows,
                            uint32_t latency_us) {
    put16(p, request);
    p[2] = status;
    put16(p + 3, rows);
    put32(p + 5, latency_us);
    return 9;
}

size_t pack_error(uint8_t *p, uint16_t code, uint8_t ref_type, uint16_t ref_seq, const char *msg) {
    put16(p, code);
    p[2] = ref_type;
    put16(p + 3, ref_seq);
    return 5 + put_str8(p + 5, msg);
}

int unpack_hello_req(const uint8_t *p, size_t n, uint32_t *session) {
    if (n != 4) return 0;
    *session = get32(p);
    return 1;
}
