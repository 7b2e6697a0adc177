/* See tfl.h. The FlatBuffer is read with explicit bounds checks: a model from the wire is
 * untrusted until tfl_prepare() accepted it. */
#include "tfl.h"

#include <math.h>
#include <string.h>

enum { OP_ADD = 0, OP_DEQUANTIZE = 6, OP_FC = 9, OP_LOGISTIC = 14, OP_MUL = 18, OP_RELU = 19,
       OP_RELU6 = 21, OP_RESHAPE = 22, OP_SOFTMAX = 25, OP_TANH = 28, OP_SUB = 41,
       OP_QUANTIZE = 114 };
enum { TT_FLOAT32 = 0, TT_INT32 = 2, TT_INT8 = 9 };
enum { ACT_NONE = 0, ACT_RELU = 1, ACT_RELU6 = 3 };
enum { E_FORMAT = -1, E_SUBGRAPHS = -2, E_TOO_MANY = -3, E_TYPE = -4, E_OP = -5, E_SHAPE = -6,
       E_ARENA = -7, E_IO = -8 };

const char *tfl_error(int code) {
    switch (code) {
    case E_FORMAT: return "not a readable .tflite";
    case E_SUBGRAPHS: return "needs exactly one subgraph";
    case E_TOO_MANY: return "too many tensors, ops or channels";
    case E_TYPE: return "unsupported tensor type";
    case E_OP: return "unsupported operator";
    case E_SHAPE: return "bad tensor shapes";
    case E_ARENA: return "does not fit the tensor arena";
    case E_IO: return "needs one input and one output";
    default: return "ok";
    }
}

/* ---- FlatBuffer access ------------------------------------------------------------- */
typedef struct { const uint8_t *d; uint32_t n; int bad; } fb_t;

static uint32_t fb_u32(fb_t *b, uint32_t pos) {
    if (pos > b->n || b->n - pos < 4) { b->bad = 1; return 0; }
    const uint8_t *p = b->d + pos;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t fb_u16(fb_t *b, uint32_t pos) {
    if (pos > b->n || b->n - pos < 2) { b->bad = 1; return 0; }
    return (uint16_t)(b->d[pos] | (b->d[pos + 1] << 8));
}
static uint8_t fb_u8(fb_t *b, uint32_t pos) {
    if (pos >= b->n) { b->bad = 1; return 0; }
    return b->d[pos];
}
static float fb_f32(fb_t *b, uint32_t pos) {
    uint32_t u = fb_u32(b, pos);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t fb_deref(fb_t *b, uint32_t pos) {
    uint32_t off = fb_u32(b, pos);
    if (b->bad || off > b->n - pos) { b->bad = 1; return 0; }
    return pos + off;
}
/* absolute position of field `idx` of the table at `t`, 0 when absent */
static uint32_t fb_field(fb_t *b, uint32_t t, int idx) {
    int32_t soff = (int32_t)fb_u32(b, t);
    int64_t vt = (int64_t)t - soff;
    if (b->bad || vt < 0 || vt >= (int64_t)b->n) { b->bad = 1; return 0; }
    uint16_t vsize = fb_u16(b, (uint32_t)vt);
    uint32_t slot = 4u + 2u * (uint32_t)idx;
    if (slot + 2 > vsize) return 0;
    uint16_t off = fb_u16(b, (uint32_t)vt + slot);
    return off ? t + off : 0;
}
/* vector field: position of the first element, *len its length; 0 when absent */
static uint32_t fb_vec(fb_t *b, uint32_t t, int idx, uint32_t *len, uint32_t elem) {
    *len = 0;
    uint32_t f = fb_field(b, t, idx);
    if (!f) return 0;
    uint32_t v = fb_deref(b, f);
    uint32_t n = fb_u32(b, v);
    if (b->bad || (uint64_t)n * elem > b->n - v - 4) { b->bad = 1; return 0; }
    *len = n;
    return v + 4;
}
static uint32_t fb_scalar_u32(fb_t *b, uint32_t t, int idx, uint32_t dflt) {
    uint32_t f = fb_field(b, t, idx);
    return f ? fb_u32(b, f) : dflt;
}
static uint8_t fb_scalar_u8(fb_t *b, uint32_t t, int idx, uint8_t dflt) {
    uint32_t f = fb_field(b, t, idx);
    return f ? fb_u8(b, f) : dflt;
}

/* ---- TFLite fixed-point arithmetic (tensorflow/lite/kernels/internal/common.h) ------- */
static void quantize_multiplier(double m, int32_t *qm, int8_t *shift) {
    if (!(m > 0.0) || m > 1e9) { *qm = 0; *shift = 0; return; } /* 0, NaN, absurd: no output */
    int sh;
    double q = frexp(m, &sh);
    int64_t q_fixed = (int64_t)round(q * (double)(1LL << 31));
    if (q_fixed == (1LL << 31)) { q_fixed /= 2; ++sh; }
    if (sh < -31) { sh = 0; q_fixed = 0; }
    if (sh > 30) sh = 30; /* keeps 1 << shift defined; only absurd scales get here */
    *qm = (int32_t)q_fixed;
    *shift = (int8_t)sh;
}
static int32_t srdhm(int32_t a, int32_t b) { /* SaturatingRoundingDoublingHighMul */
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int32_t nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}
static int32_t rdbp(int32_t x, int exponent) { /* RoundingDivideByPOT */
    int32_t mask = (int32_t)((1LL << exponent) - 1);
    int32_t remainder = x & mask;
    int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}
static int32_t mbqm(int32_t x, int32_t qm, int shift) { /* MultiplyByQuantizedMultiplier */
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t shifted = (int64_t)x * ((int64_t)1 << left);
    if (shifted > INT32_MAX) shifted = INT32_MAX; /* saturate, as the NEON path does */
    if (shifted < INT32_MIN) shifted = INT32_MIN;
    return rdbp(srdhm((int32_t)shifted, qm), right);
}

/* ---- model reading ------------------------------------------------------------------ */
static int type_size(uint8_t t) { return t == TT_INT8 ? 1 : (t == TT_FLOAT32 || t == TT_INT32) ? 4 : 0; }

static void act_range(const tfl_tensor_t *o, uint8_t act, int32_t *lo, int32_t *hi) {
    *lo = -128; *hi = 127;
    if (act == ACT_RELU || act == ACT_RELU6) {
        if (o->zp > *lo) *lo = o->zp;
    }
    if (act == ACT_RELU6) {
        int32_t six = o->zp + (int32_t)roundf(6.0f / o->scale);
        if (six < *hi) *hi = six;
    }
}

static float scale_at(const tfl_plan_t *p, const tfl_tensor_t *t, uint32_t i) {
    fb_t b = {p->model, p->size, 0};
    if (t->n_scales > 1 && i < t->n_scales) return fb_f32(&b, t->scales_pos + 4 * i);
    return t->scale;
}

int tfl_prepare(tfl_plan_t *p, const uint8_t *model, uint32_t size, uint32_t arena_size) {
    fb_t b = {model, size, 0};
    uint32_t n;
    memset(p, 0, sizeof *p);
    p->model = model;
    p->size = size;
    if (size < 8 || memcmp(model + 4, "TFL3", 4) != 0) return E_FORMAT;
    uint32_t root = fb_deref(&b, 0);
    int32_t codes[32];
    uint32_t oc = fb_vec(&b, root, 1, &n, 4);
    if (n > 32) return E_TOO_MANY;
    uint32_t n_codes = n;
    for (uint32_t i = 0; i < n_codes; i++) {
        uint32_t t = fb_deref(&b, oc + 4 * i);
        uint32_t f = fb_field(&b, t, 3);
        int32_t code = f ? (int32_t)fb_u32(&b, f) : 0;
        int32_t dep = (int8_t)fb_scalar_u8(&b, t, 0, 0);
        codes[i] = code > dep ? code : dep;
    }
    uint32_t nbuf, bufs = fb_vec(&b, root, 4, &nbuf, 4);
    uint32_t nsg, sgs = fb_vec(&b, root, 2, &nsg, 4);
    if (b.bad) return E_FORMAT;
    if (nsg != 1) return E_SUBGRAPHS;
    uint32_t sg = fb_deref(&b, sgs);
    uint32_t tv = fb_vec(&b, sg, 0, &n, 4);
    if (n > TFL_MAX_TENSORS) return E_TOO_MANY;
    p->n_tensors = (uint8_t)n;
    uint32_t arena = 0;
    for (uint32_t i = 0; i < p->n_tensors && !b.bad; i++) {
        tfl_tensor_t *t = &p->t[i];
        uint32_t tt = fb_deref(&b, tv + 4 * i), nd;
        uint32_t shape = fb_vec(&b, tt, 0, &nd, 4);
        if (nd > 4) return E_SHAPE;
        t->ndims = (uint8_t)nd;
        t->nelem = 1;
        for (uint32_t d = 0; d < nd; d++) {
            t->dims[d] = (int32_t)fb_u32(&b, shape + 4 * d);
            if (t->dims[d] < 1 || t->dims[d] > 65536) return E_SHAPE;
            t->nelem *= (uint32_t)t->dims[d];
            if (t->nelem > 65536) return E_SHAPE;
        }
        t->type = fb_scalar_u8(&b, tt, 1, 0);
        if (!type_size(t->type)) return E_TYPE;
        uint32_t bi = fb_scalar_u32(&b, tt, 2, 0), blen = 0, bdata = 0;
        if (bi >= nbuf && nbuf) return E_FORMAT;
        if (bi > 0) bdata = fb_vec(&b, fb_deref(&b, bufs + 4 * bi), 0, &blen, 1);
        uint32_t bytes = t->nelem * (uint32_t)type_size(t->type);
        if (blen) {
            if (blen < bytes) return E_SHAPE;
            t->is_const = 1;
            t->data_pos = bdata;
        } else {
            if (t->type == TT_INT32) return E_TYPE; /* int32 only as constant biases */
            arena = (arena + 15u) & ~15u;
            t->data_pos = arena;
            arena += bytes;
        }
        t->scale = 0.0f;
        uint32_t qf = fb_field(&b, tt, 4);
        if (qf) {
            uint32_t q = fb_deref(&b, qf), ns, nz;
            uint32_t sp = fb_vec(&b, q, 2, &ns, 4);
            uint32_t zpp = fb_vec(&b, q, 3, &nz, 8);
            if (ns) { t->scale = fb_f32(&b, sp); t->scales_pos = sp; t->n_scales = ns; }
            if (nz) {
                t->zp = (int32_t)fb_u32(&b, zpp); /* int64 in the file */
                if (fb_u32(&b, zpp + 4) != (t->zp < 0 ? 0xFFFFFFFFu : 0u)) return E_TYPE;
            }
        }
        if (t->type == TT_INT8 &&
            (!(t->scale > 0.0f && t->scale < 1e30f) || t->zp < -128 || t->zp > 127))
            return E_TYPE; /* int8 needs a finite scale and an int8 zero point */
    }
    if (b.bad) return E_FORMAT;
    if (arena > arena_size) return E_ARENA;
    p->arena_used = arena;
    uint32_t ni, no;
    uint32_t ins = fb_vec(&b, sg, 1, &ni, 4), outs = fb_vec(&b, sg, 2, &no, 4);
    if (ni != 1 || no != 1) return E_IO;
    uint32_t in = fb_u32(&b, ins), out = fb_u32(&b, outs);
    if (in >= p->n_tensors || out >= p->n_tensors) return E_IO;
    p->input = (uint8_t)in;
    p->output = (uint8_t)out;
    p->n_inputs = p->t[in].nelem;
    p->n_outputs = p->t[out].nelem;
    if (p->n_inputs > TFL_MAX_IO || p->n_outputs > TFL_MAX_IO || p->t[in].is_const) return E_IO;
    uint32_t ov = fb_vec(&b, sg, 3, &n, 4);
    if (n > TFL_MAX_OPS) return E_TOO_MANY;
    p->n_ops = (uint8_t)n;
    for (uint32_t i = 0; i < p->n_ops && !b.bad; i++) {
        tfl_op_t *op = &p->ops[i];
        uint32_t o = fb_deref(&b, ov + 4 * i), nin, nout;
        uint32_t idx = fb_scalar_u32(&b, o, 0, 0);
        if (idx >= n_codes) return E_FORMAT;
        int32_t code = codes[idx];
        uint32_t iv = fb_vec(&b, o, 1, &nin, 4), outv = fb_vec(&b, o, 2, &nout, 4);
        if (nin < 1 || nin > 3 || nout != 1) return E_OP;
        for (int k = 0; k < 3; k++) {
            int32_t v = k < (int)nin ? (int32_t)fb_u32(&b, iv + 4 * (uint32_t)k) : -1;
            if (v < -1 || v >= (int32_t)p->n_tensors) return E_FORMAT;
            op->in[k] = (int8_t)v;
        }
        int32_t ot = (int32_t)fb_u32(&b, outv);
        if (ot < 0 || ot >= (int32_t)p->n_tensors || p->t[ot].is_const || op->in[0] < 0)
            return E_FORMAT;
        op->out = (int8_t)ot;
        uint32_t opts_f = fb_field(&b, o, 4), opts = opts_f ? fb_deref(&b, opts_f) : 0;
        op->act = opts ? fb_scalar_u8(&b, opts, 0, 0) : 0;
        if (op->act != ACT_NONE && op->act != ACT_RELU && op->act != ACT_RELU6) return E_OP;
        const tfl_tensor_t *a = &p->t[op->in[0]], *y = &p->t[ot];
        switch (code) {
        case OP_FC: {
            if (op->in[1] < 0) return E_OP;
            const tfl_tensor_t *w = &p->t[op->in[1]];
            if (!w->is_const || w->ndims != 2) return E_SHAPE;
            uint32_t units = (uint32_t)w->dims[0], depth = (uint32_t)w->dims[1];
            if (depth > 8192 || a->nelem % depth || y->nelem != a->nelem / depth * units)
                return E_SHAPE; /* depth bound: the int32 accumulator cannot overflow */
            if (op->in[2] >= 0 && p->t[op->in[2]].nelem != units) return E_SHAPE;
            if (a->type == TT_INT8) {
                if (w->type != TT_INT8 || y->type != TT_INT8) return E_TYPE;
                if (op->in[2] >= 0 && p->t[op->in[2]].type != TT_INT32) return E_TYPE;
                if (p->n_q + units > TFL_MAX_CHANNELS) return E_TOO_MANY;
                op->q_base = p->n_q;
                for (uint32_t u = 0; u < units; u++) {
                    double m = w->n_scales > 1
                        ? (double)a->scale * (double)scale_at(p, w, u) / (double)y->scale
                        : (double)(a->scale * w->scale) / (double)y->scale;
                    quantize_multiplier(m, &p->qm[p->n_q], &p->qs[p->n_q]);
                    p->n_q++;
                }
            } else if (a->type != TT_FLOAT32 || w->type != TT_FLOAT32 || y->type != TT_FLOAT32) {
                return E_TYPE;
            }
            break;
        }
        case OP_ADD: case OP_SUB: case OP_MUL: {
            if (op->in[1] < 0) return E_OP;
            const tfl_tensor_t *c = &p->t[op->in[1]];
            uint32_t big = a->nelem > c->nelem ? a->nelem : c->nelem;
            uint32_t small = a->nelem > c->nelem ? c->nelem : a->nelem;
            if (y->nelem != big || big % small) return E_SHAPE;
            if (a->type != c->type || a->type != y->type) return E_TYPE;
            if (a->type == TT_INT8) {
                if (p->n_q + 3 > TFL_MAX_CHANNELS) return E_TOO_MANY;
                op->q_base = p->n_q;
                if (code == OP_MUL) {
                    quantize_multiplier((double)a->scale * (double)c->scale / (double)y->scale,
                                        &p->qm[p->n_q], &p->qs[p->n_q]);
                    p->n_q++;
                } else {
                    double twice = 2.0 * (double)(a->scale > c->scale ? a->scale : c->scale);
                    quantize_multiplier((double)a->scale / twice, &p->qm[p->n_q], &p->qs[p->n_q]);
                    quantize_multiplier((double)c->scale / twice, &p->qm[p->n_q + 1],
                                        &p->qs[p->n_q + 1]);
                    quantize_multiplier(twice / ((double)(1 << 20) * (double)y->scale),
                                        &p->qm[p->n_q + 2], &p->qs[p->n_q + 2]);
                    p->n_q += 3;
                }
            }
            break;
        }
        case OP_SOFTMAX:
            op->beta = opts && fb_field(&b, opts, 0) ? fb_f32(&b, fb_field(&b, opts, 0)) : 0.0f;
            op->act = 0;
            /* fall through */
        case OP_LOGISTIC: case OP_TANH: case OP_RELU: case OP_RELU6: case OP_RESHAPE:
        case OP_QUANTIZE: case OP_DEQUANTIZE:
            if (code != OP_SOFTMAX) op->act = 0;
            if (a->nelem != y->nelem) return E_SHAPE;
            if (a->type == TT_INT32 || y->type == TT_INT32) return E_TYPE;
            break;
        default:
            return E_OP;
        }
        op->code = (uint8_t)code;
    }
    if (b.bad) return E_FORMAT;
    return 0;
}

/* ---- kernels ------------------------------------------------------------------------ */
typedef struct { const tfl_plan_t *p; uint8_t *arena; } ctx_t;

static const uint8_t *cdata(const ctx_t *c, const tfl_tensor_t *t) {
    return t->is_const ? c->p->model + t->data_pos : c->arena + t->data_pos;
}
static uint8_t *mdata(const ctx_t *c, const tfl_tensor_t *t) { return c->arena + t->data_pos; }

static float get_f(const ctx_t *c, const tfl_tensor_t *t, uint32_t i) {
    const uint8_t *d = cdata(c, t);
    if (t->type == TT_INT8) return ((float)(int8_t)d[i] - (float)t->zp) * t->scale;
    float v;
    memcpy(&v, d + 4 * i, 4);
    return v;
}
static void set_f(const ctx_t *c, const tfl_tensor_t *t, uint32_t i, float v) {
    uint8_t *d = mdata(c, t);
    if (t->type == TT_INT8) {
        float q = rintf(v / t->scale) + (float)t->zp;
        if (q < -128.0f) q = -128.0f;
        if (q > 127.0f) q = 127.0f;
        d[i] = (uint8_t)(int8_t)q;
    } else {
        memcpy(d + 4 * i, &v, 4);
    }
}
static int32_t get_i32(const uint8_t *d, uint32_t i) {
    int32_t v;
    memcpy(&v, d + 4 * i, 4);
    return v;
}
static float act_f(uint8_t act, float v) {
    if (act == ACT_RELU || act == ACT_RELU6) v = v < 0.0f ? 0.0f : v;
    if (act == ACT_RELU6) v = v > 6.0f ? 6.0f : v;
    return v;
}

static void fully_connected(const ctx_t *c, const tfl_op_t *op) {
    const tfl_plan_t *p = c->p;
    const tfl_tensor_t *x = &p->t[op->in[0]], *w = &p->t[op->in[1]], *y = &p->t[op->out];
    const tfl_tensor_t *bias = op->in[2] >= 0 ? &p->t[op->in[2]] : NULL;
    uint32_t units = (uint32_t)w->dims[0], depth = (uint32_t)w->dims[1];
    uint32_t batches = x->nelem / depth;
    const uint8_t *wd = cdata(c, w), *xd = cdata(c, x);
    if (x->type == TT_INT8) {
        int32_t lo, hi;
        act_range(y, op->act, &lo, &hi);
        int8_t *yd = (int8_t *)mdata(c, y);
        const uint8_t *bd = bias ? cdata(c, bias) : NULL;
        for (uint32_t bt = 0; bt < batches; bt++) {
            const int8_t *xr = (const int8_t *)xd + bt * depth;
            for (uint32_t u = 0; u < units; u++) {
                const int8_t *wr = (const int8_t *)wd + u * depth;
                int64_t acc = 0;
                for (uint32_t k = 0; k < depth; k++)
                    acc += ((int32_t)xr[k] - x->zp) * ((int32_t)wr[k] - w->zp);
                if (bd) acc += get_i32(bd, u);
                if (acc > INT32_MAX) acc = INT32_MAX; /* only a corrupt bias gets here */
                if (acc < INT32_MIN) acc = INT32_MIN;
                int32_t v = mbqm((int32_t)acc, p->qm[op->q_base + u], p->qs[op->q_base + u]) + y->zp;
                yd[bt * units + u] = (int8_t)(v < lo ? lo : v > hi ? hi : v);
            }
        }
        return;
    }
    for (uint32_t bt = 0; bt < batches; bt++)
        for (uint32_t u = 0; u < units; u++) {
            float acc = bias ? get_f(c, bias, u) : 0.0f;
            for (uint32_t k = 0; k < depth; k++)
                acc += get_f(c, x, bt * depth + k) * get_f(c, w, u * depth + k);
            set_f(c, y, bt * units + u, act_f(op->act, acc));
        }
}

static void elementwise(const ctx_t *c, const tfl_op_t *op) {
    const tfl_plan_t *p = c->p;
    const tfl_tensor_t *a = &p->t[op->in[0]], *b = &p->t[op->in[1]], *y = &p->t[op->out];
    for (uint32_t i = 0; i < y->nelem; i++) {
        uint32_t ia = i % a->nelem, ib = i % b->nelem;
        if (a->type == TT_INT8) {
            int32_t lo, hi, v;
            act_range(y, op->act, &lo, &hi);
            int32_t xa = (int8_t)cdata(c, a)[ia] - a->zp, xb = (int8_t)cdata(c, b)[ib] - b->zp;
            const int32_t *qm = p->qm + op->q_base;
            const int8_t *qs = p->qs + op->q_base;
            if (op->code == OP_MUL) {
                v = mbqm(xa * xb, qm[0], qs[0]) + y->zp;
            } else {
                int32_t sa = mbqm(xa * (1 << 20), qm[0], qs[0]);
                int32_t sb = mbqm(xb * (1 << 20), qm[1], qs[1]);
                v = mbqm(op->code == OP_ADD ? sa + sb : sa - sb, qm[2], qs[2]) + y->zp;
            }
            mdata(c, y)[i] = (uint8_t)(int8_t)(v < lo ? lo : v > hi ? hi : v);
        } else {
            float fa = get_f(c, a, ia), fb = get_f(c, b, ib);
            float v = op->code == OP_ADD ? fa + fb : op->code == OP_SUB ? fa - fb : fa * fb;
            set_f(c, y, i, act_f(op->act, v));
        }
    }
}

static void unary(const ctx_t *c, const tfl_op_t *op) {
    const tfl_tensor_t *x = &c->p->t[op->in[0]], *y = &c->p->t[op->out];
    if (op->code == OP_SOFTMAX) {
        float mx = -INFINITY, sum = 0.0f;
        for (uint32_t i = 0; i < x->nelem; i++) {
            float v = get_f(c, x, i);
            if (v > mx) mx = v;
        }
        for (uint32_t i = 0; i < x->nelem; i++) sum += expf(op->beta * (get_f(c, x, i) - mx));
        for (uint32_t i = 0; i < x->nelem; i++)
            set_f(c, y, i, expf(op->beta * (get_f(c, x, i) - mx)) / sum);
        return;
    }
    for (uint32_t i = 0; i < x->nelem; i++) {
        float v = get_f(c, x, i);
        switch (op->code) {
        case OP_LOGISTIC: v = 1.0f / (1.0f + expf(-v)); break;
        case OP_TANH: v = tanhf(v); break;
        case OP_RELU: v = act_f(ACT_RELU, v); break;
        case OP_RELU6: v = act_f(ACT_RELU6, v); break;
        default: break; /* RESHAPE, QUANTIZE, DEQUANTIZE: the value, re-typed */
        }
        set_f(c, y, i, v);
    }
}

int tfl_invoke(const tfl_plan_t *p, uint8_t *arena, const float *in, float *out) {
    ctx_t c = {p, arena};
    const tfl_tensor_t *ti = &p->t[p->input], *to = &p->t[p->output];
    for (uint32_t i = 0; i < ti->nelem; i++) set_f(&c, ti, i, in[i]);
    for (uint8_t k = 0; k < p->n_ops; k++) {
        const tfl_op_t *op = &p->ops[k];
        switch (op->code) {
        case OP_FC: fully_connected(&c, op); break;
        case OP_ADD: case OP_SUB: case OP_MUL: elementwise(&c, op); break;
        default: unary(&c, op); break;
        }
    }
    for (uint32_t i = 0; i < to->nelem; i++) out[i] = get_f(&c, to, i);
    return 0;
}
