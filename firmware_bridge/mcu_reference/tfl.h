/* A small TFLite-flatbuffer interpreter for MCU models: reads the .tflite the gateway sends
 * (the same file LiteRT and TFLite Micro run), checks it fits, and runs it batch 1 with the
 * integer kernels of TFLite's reference ops (int8 FULLY_CONNECTED, ADD, SUB, MUL with
 * per-channel weights and TFLite's fixed-point requantisation) and float kernels for the
 * rest (SOFTMAX, LOGISTIC, TANH, RELU/RELU6, RESHAPE, QUANTIZE, DEQUANTIZE). Weights stay
 * in the model slot (flash); only activations use the RAM arena. No heap. */
#ifndef FARMIQ_TFL_H
#define FARMIQ_TFL_H
#include <stddef.h>
#include <stdint.h>

enum { TFL_MAX_TENSORS = 32, TFL_MAX_OPS = 16, TFL_MAX_CHANNELS = 192, TFL_MAX_IO = 64 };

typedef struct {
    uint8_t type; /* 0 float32, 2 int32, 9 int8 */
    uint8_t is_const;
    uint32_t nelem;
    int32_t dims[4];
    uint8_t ndims;
    float scale;
    int32_t zp;
    uint32_t scales_pos, n_scales; /* per-channel scales in the model file */
    uint32_t data_pos;             /* const: offset in the model; else: offset in the arena */
} tfl_tensor_t;

typedef struct {
    uint8_t code, act;
    int8_t in[3], out;
    float beta;
    uint16_t q_base; /* first entry of this op's multipliers in the plan's pool */
} tfl_op_t;

typedef struct {
    const uint8_t *model;
    uint32_t size;
    tfl_tensor_t t[TFL_MAX_TENSORS];
    tfl_op_t ops[TFL_MAX_OPS];
    int32_t qm[TFL_MAX_CHANNELS];
    int8_t qs[TFL_MAX_CHANNELS];
    uint16_t n_q;
    uint8_t n_tensors, n_ops, input, output;
    uint32_t arena_used, n_inputs, n_outputs;
} tfl_plan_t;

/* 0 when the model is usable in `arena_size` bytes; else a negative reason (tfl_error). */
int tfl_prepare(tfl_plan_t *plan, const uint8_t *model, uint32_t size, uint32_t arena_size);
const char *tfl_error(int code);
/* one row: n_inputs floats in, n_outputs floats out; 0 on success */
int tfl_invoke(const tfl_plan_t *plan, uint8_t *arena, const float *in, float *out);
#endif
