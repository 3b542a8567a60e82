// The loops of CBF16.h that Swift calls over whole buffers.
#include "include/CBF16.h"

void bf16_round_floats(uint16_t *out, const float *in, long count) {
    for (long i = 0; i < count; i++) out[i] = bf16_round(in[i]);
}

void bf16_widen_floats(float *out, const uint16_t *in, long count) {
    for (long i = 0; i < count; i++) out[i] = bf16_widen(in[i]);
}
