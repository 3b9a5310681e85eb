/* reduce.cu: *out += sum(x[0:n]), a block-wise tree reduction in shared memory.
 *
 * Each thread sums a grid-stride slice, the block combines its threads' sums in __shared__
 * memory (halving, with __syncthreads() between steps), and thread 0 adds the block's total to
 * *out with atomicAdd. blockDim.x must be a power of two no larger than REDUCE_MAX_BLOCK; other
 * launches leave *out unchanged. The caller zeroes *out first. Float sums depend on the order:
 * compare with a tolerance.
 */
// pyguts: lengths x=n out=1
#if !defined(__CUDACC__) && !defined(PYGUTS_CPU_SHIM_H)
#include "cpu_shim.h"
#endif

#define REDUCE_MAX_BLOCK 256

#define REDUCE_SUM_BODY(T)                                                                  \
    __shared__ T partial[REDUCE_MAX_BLOCK];                                                 \
    unsigned block = blockDim.x, t = threadIdx.x;                                           \
    if (block > REDUCE_MAX_BLOCK || (block & (block - 1)) != 0)                             \
        return; /* uniform over the block: nobody reaches a barrier */                      \
    T sum = 0;                                                                              \
    unsigned long long stride = (unsigned long long)gridDim.x * block;                      \
    for (unsigned long long i = (unsigned long long)blockIdx.x * block + t; i < n; i += stride)\
        sum += x[i];                                                                        \
    partial[t] = sum;                                                                       \
    __syncthreads();                                                                        \
    for (unsigned half = block / 2; half > 0; half /= 2) {                                  \
        if (t < half)                                                                       \
            partial[t] += partial[t + half];                                                \
        __syncthreads();                                                                    \
    }                                                                                       \
    if (t == 0)                                                                             \
        atomicAdd(out, partial[0]);

extern "C" __global__ void sum_f32(const float *x, float *out, unsigned long long n) {
    REDUCE_SUM_BODY(float)
}

extern "C" __global__ void sum_f64(const double *x, double *out, unsigned long long n) {
    REDUCE_SUM_BODY(double)
}
