/* Wire format of the FarmIQ MCU protocol v1 (docs/mcu-protocol.md): CRC, COBS, frames and
 * the messages an MCU sends and receives. No I/O, no globals: shared by the firmware and
 * by vectors_check.c, which checks it against firmware_bridge/protocol_vectors.json. */
#ifndef FARMIQ_PROTO_H
#define FARMIQ_PROTO_H
#include <stddef.h>
#include <stdint.h>

enum { PROTO_VERSION = 1, MAX_FRAME = 256, MAX_ENCODED = MAX_FRAME + MAX_FRAME / 254 + 2 };
enum {
    T_ACK = 0x01, T_NACK = 0x02, T_HELLO_REQ = 0x03, T_HELLO = 0x04, T_HEARTBEAT = 0x05,
    T_READINGS = 0x10, T_ACTUATOR_CMD = 0x20, T_ACTUATOR_RESULT = 0x21,
    T_LOAD_BEGIN = 0x30, T_LOAD_CHUNK = 0x31, T_LOAD_COMMIT = 0x32, T_LOAD_STATUS = 0x33,
    T_INFER_REQ = 0x40, T_INFER_RESP = 0x41, T_ERROR = 0x7F
};
enum { NACK_VERSION = 1, NACK_UNKNOWN_TYPE = 2, NACK_MALFORMED = 3, NACK_TOO_LARGE = 4,
       NACK_BUSY = 5 };
enum { CAP_READINGS = 1, CAP_ACTUATORS = 2, CAP_MODEL_LOAD = 4, CAP_INFER = 8 };
enum { LOAD_READY = 0, LOAD_COMMITTED = 1, LOAD_TOO_LARGE = 2, LOAD_HASH_MISMATCH = 3,
       LOAD_INCOMPLETE = 4, LOAD_INVALID_MODEL = 5, LOAD_NO_TRANSFER = 6 };
enum { INFER_OK = 0, INFER_NO_MODEL = 1, INFER_BAD_SHAPE = 2, INFER_RUNTIME_ERROR = 3 };
enum { ACT_OK = 0, ACT_UNKNOWN = 1, ACT_OUT_OF_RANGE = 2, ACT_FAULT = 3 };
enum { ERR_MALFORMED = 0x0101, ERR_UNKNOWN_ACTUATOR = 0x0201, ERR_NO_TRANSFER = 0x0301,
       ERR_NO_MODEL = 0x0401, ERR_INTERNAL = 0x0501 };

uint16_t crc16(const uint8_t *p, size_t n);
size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out);
int cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
/* frame = COBS(version type seq payload crc) 0x00; returns wire length or 0 if too large */
size_t frame_encode(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *out);
/* checks length and CRC of a decoded frame; 0 when bad */
int frame_check(const uint8_t *f, size_t n);

void put16(uint8_t *p, uint16_t v);
void put32(uint8_t *p, uint32_t v);
void put64(uint8_t *p, uint64_t v);
void putf32(uint8_t *p, float v);
uint16_t get16(const uint8_t *p);
uint32_t get32(const uint8_t *p);
uint64_t get64(const uint8_t *p);
float getf32(const uint8_t *p);

typedef struct {
    uint32_t boot_id, mcu_ms, caps, model_capacity, arena_capacity;
    uint16_t max_frame;
    uint8_t model_slots;
    const char *device_id, *fw_version;
} hello_t;
size_t pack_hello(uint8_t *out, const hello_t *h);
size_t pack_heartbeat(uint8_t *out, uint32_t mcu_ms, uint8_t status);
typedef struct { uint8_t sensor; uint16_t dt_ms; float value; } reading_t;
size_t pack_readings(uint8_t *out, uint32_t first_seq, uint32_t base_ms, const reading_t *r,
                     uint8_t count);
typedef struct { uint64_t command_id; uint8_t actuator; float value; } actuator_cmd_t;
int unpack_actuator_cmd(const uint8_t *p, size_t n, actuator_cmd_t *out);
size_t pack_actuator_result(uint8_t *out, uint64_t command_id, uint8_t actuator, uint8_t status,
                            uint8_t duplicate, float applied, uint32_t mcu_ms);
typedef struct { uint16_t transfer; uint32_t size; uint8_t sha256[32]; char model_id[33]; } load_begin_t;
int unpack_load_begin(const uint8_t *p, size_t n, load_begin_t *out);
typedef struct { uint16_t transfer; uint32_t offset; const uint8_t *data; size_t len; } load_chunk_t;
int unpack_load_chunk(const uint8_t *p, size_t n, load_chunk_t *out);
int unpack_load_commit(const uint8_t *p, size_t n, uint16_t *transfer);
size_t pack_load_status(uint8_t *out, uint16_t transfer, uint8_t status, uint32_t received,
                        const char *model_id);
typedef struct { uint16_t request, rows; char model_id[33]; const uint8_t *values; size_t n_values; } infer_req_t;
int unpack_infer_req(const uint8_t *p, size_t n, infer_req_t *out);
size_t pack_infer_resp_head(uint8_t *out, uint16_t request, uint8_t status, uint16_t rows,
                            uint32_t latency_us);
size_t pack_error(uint8_t *out, uint16_t code, uint8_t ref_type, uint16_t ref_seq, const char *msg);
int unpack_hello_req(const uint8_t *p, size_t n, uint32_t *session);
#endif
